//! Per-criticality shares of a limit: how much of a learned capacity each class may use.
//!
//! Both the BBR shedder and the learned concurrency limiter scale their limit per class so that
//! lower classes are shed first (SRE book, "Handling Overload"): with shares that never decrease
//! from `Sheddable` to `CriticalPlus`, at any moment a lower class meets a limit no larger than a
//! higher class does, so it is never admitted while a higher one is refused.

use crate::criticality::Criticality;

/// Per-mille shares of a base limit, one per [`Criticality`] class, lowest class first.
///
/// Invariant (checked by [`ClassShares::new`]): every share is at least 1 ‰ and the shares never
/// decrease from `Sheddable` to `CriticalPlus`. A share may exceed 1000 ‰ (the BBR default gives
/// `CriticalPlus` 125 % of the estimate, so it is dropped last).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ClassShares([u32; 4]);

impl ClassShares {
    /// Shares in per-mille, indexed by [`Criticality::index`] (lowest class first).
    pub fn new(permille: [u32; 4]) -> Result<ClassShares, ClassSharesError> {
        if permille.contains(&0) {
            return Err(ClassSharesError::Zero);
        }
        if permille.windows(2).any(|w| w[0] > w[1]) {
            return Err(ClassSharesError::NotMonotone);
        }
        Ok(ClassShares(permille))
    }

    /// Every class gets the whole limit: criticality plays no part.
    pub const fn uniform() -> ClassShares {
        ClassShares([1000; 4])
    }

    /// The BBR shedder's defaults: `Sheddable` 50 %, `SheddablePlus` 75 %, `Critical` 100 % (the
    /// kratos rule for the default class) and `CriticalPlus` 125 % of the estimated
    /// `maxInFlight`.
    pub const fn bbr_default() -> ClassShares {
        ClassShares([500, 750, 1000, 1250])
    }

    /// The learned concurrency limiter's defaults: `Sheddable` 50 %, `SheddablePlus` 75 %,
    /// `Critical` 90 % and `CriticalPlus` 100 % of the limit, which is a hard cap, so the top
    /// class keeps a reserve the default class cannot take.
    pub const fn concurrency_default() -> ClassShares {
        ClassShares([500, 750, 900, 1000])
    }

    /// One class's share in per-mille.
    #[inline]
    pub const fn permille(&self, class: Criticality) -> u32 {
        self.0[class.index()]
    }

    /// `class`'s limit out of `base`: `floor(base × share)`, and never below 1 so that one
    /// request of any class can always be in flight.
    #[inline]
    pub fn limit(&self, base: u64, class: Criticality) -> u64 {
        let scaled = u128::from(base) * u128::from(self.permille(class)) / 1000;
        u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
    }
}

impl Default for ClassShares {
    /// The BBR defaults ([`ClassShares::bbr_default`]).
    fn default() -> Self {
        ClassShares::bbr_default()
    }
}

/// Why a set of class shares was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassSharesError {
    /// A class had a zero share: it could never be admitted.
    #[error("a criticality class has a zero share")]
    Zero,
    /// A lower class had a larger share than a higher one: it would be shed last.
    #[error("criticality shares must not decrease from SHEDDABLE to CRITICAL_PLUS")]
    NotMonotone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_must_be_positive_and_never_decrease_with_class() {
        assert_eq!(ClassShares::new([0, 500, 900, 1000]), Err(ClassSharesError::Zero));
        assert_eq!(ClassShares::new([600, 500, 900, 1000]), Err(ClassSharesError::NotMonotone));
        assert!(ClassShares::new([100, 100, 100, 100]).is_ok());
    }

    #[test]
    fn class_limit_scales_the_base_and_never_falls_below_one() {
        let s = ClassShares::bbr_default();
        assert_eq!(s.limit(40, Criticality::Sheddable), 20);
        assert_eq!(s.limit(40, Criticality::SheddablePlus), 30);
        assert_eq!(s.limit(40, Criticality::Critical), 40);
        assert_eq!(s.limit(40, Criticality::CriticalPlus), 50);
        assert_eq!(s.limit(1, Criticality::Sheddable), 1);
        assert_eq!(s.limit(0, Criticality::Critical), 1);
    }
}
