//! Cost budgets (seed 003): a request enters with a quota of cost units granted by the role of
//! its caller, every hop spends some, and a hop whose remainder cannot pay for a call makes no
//! further call.
//!
//! Why: a deadline bounds how long a call tree may run; a cost budget bounds how much work it
//! may cause. A request that fans out, retries or recurses beyond what its caller's role
//! allows is stopped where the money runs out, not at whichever backend falls over first.
//!
//! The pieces, all pure (no I/O, no clock):
//! - the wire form: [`BUDGET_HEADER`] carries a non-negative integer of cost units;
//!   [`parse_budget`] reads it strictly (ASCII digits, optional surrounding white space, typed
//!   [`BudgetParseError`]), [`format_budget`] writes it without allocating;
//! - [`BudgetGrant`] — the entry's policy: a default and rules granting by a header's value
//!   (`x-role: admin` → 1000), validated when built; [`BudgetGrant::effective`] keeps a client
//!   from raising its own budget;
//! - [`Budget`] — what a request carries through one service: [`Budget::try_spend`] refuses
//!   with [`RejectReason::BudgetExhausted`] (429, no retry hint: waiting refills nothing).
//!
//! ```
//! use spillway_core::budget::{parse_budget, Budget, BudgetGrant, BUDGET_HEADER};
//! use spillway_core::RejectReason;
//!
//! // At the entry: members get 100 units, admins 1000, anyone else 10.
//! let grant = BudgetGrant::builder(10)
//!     .rule("X-Role", [("admin", 1000), ("member", 100)])
//!     .build()?;
//! let headers = [("x-role", &b"member"[..]), (BUDGET_HEADER, b"5000")];
//! let lookup = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
//! assert_eq!(grant.budget_for(lookup), 100); // asking for 5000 does not raise it
//!
//! // In a service: spend, and stop when too little is left.
//! let mut budget = Budget::new(parse_budget(b"100")?);
//! assert_eq!(budget.try_spend(60), Ok(40));
//! assert!(!budget.can_afford(50));
//! let refused = budget.try_spend(50).unwrap_err();
//! assert_eq!(refused.reason, RejectReason::BudgetExhausted);
//! assert_eq!(budget.remaining(), 40); // a refusal spends nothing
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::decision::{RejectReason, Rejection};
use std::fmt;

/// The header (and gRPC metadata key) carrying a request's remaining cost budget, in units.
pub const BUDGET_HEADER: &str = "x-spillway-budget";

/// Why a budget header value was refused by [`parse_budget`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetParseError {
    /// Nothing but white space.
    #[error("empty budget value")]
    Empty,
    /// A byte that is not an ASCII digit (signs, decimals, units and inner spaces included).
    #[error("byte {offset} of the budget value is not an ASCII digit")]
    NotADigit {
        /// Offset of the byte in the value as given (before trimming).
        offset: usize,
    },
    /// More than `u64::MAX` units.
    #[error("budget value above {}", u64::MAX)]
    Overflow,
}

/// Parses a budget header value: ASCII digits only, with optional surrounding white space.
///
/// Leading zeros are accepted; a sign, a fraction, a unit or a value above `u64::MAX` is an
/// error, so a malformed value is never read as some other number.
pub fn parse_budget(value: &[u8]) -> Result<u64, BudgetParseError> {
    let leading = value.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return Err(BudgetParseError::Empty);
    }
    let mut units: u64 = 0;
    for (i, &b) in digits.iter().enumerate() {
        if !b.is_ascii_digit() {
            return Err(BudgetParseError::NotADigit { offset: leading + i });
        }
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(u64::from(b - b'0')))
            .ok_or(BudgetParseError::Overflow)?;
    }
    Ok(units)
}

/// Formats a budget as its header value, in decimal, without allocating.
pub fn format_budget(units: u64) -> BudgetValue {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = units;
    loop {
        start -= 1;
        // `rest % 10` is below 10.
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut buf = [0u8; 20];
    let len = digits.len() - start;
    buf[..len].copy_from_slice(&digits[start..]);
    BudgetValue { buf, len: len as u8 }
}

/// A formatted budget header value held inline (`u64::MAX` has 20 digits).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct BudgetValue {
    buf: [u8; 20],
    len: u8,
}

impl BudgetValue {
    /// The value as ASCII bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The value as a string.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("0")
    }
}

impl AsRef<str> for BudgetValue {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for BudgetValue {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Display for BudgetValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for BudgetValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BudgetValue({:?})", self.as_str())
    }
}

/// The entry's grant policy: how many cost units a request starts with.
///
/// Rules are tried in order; a rule matches when the request carries its header with one of
/// its values (compared exactly, byte for byte; header names case-insensitively), and the first
/// match grants its amount. Without a match the default applies. Built and validated by
/// [`BudgetGrant::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetGrant {
    default: u64,
    rules: Box<[GrantRule]>,
}

/// One rule: a header name (lowercase) and the grant for each of its values.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GrantRule {
    header: Box<str>,
    values: Box<[(Box<[u8]>, u64)]>,
}

impl BudgetGrant {
    /// A policy granting `default` units to requests no rule matches; add rules with
    /// [`BudgetGrantBuilder::rule`]. The default is deliberate: `0` means "nothing without a
    /// recognised role" (every costed call is refused).
    pub fn builder(default: u64) -> BudgetGrantBuilder {
        BudgetGrantBuilder { default, rules: Vec::new() }
    }

    /// The units granted when no rule matches.
    pub fn default_grant(&self) -> u64 {
        self.default
    }

    /// The grant for a request: the first rule whose header `lookup` finds with one of the
    /// rule's values, else the default. `lookup` is called with each rule's header name in
    /// lowercase and returns the header's value, if present.
    pub fn grant<'h>(&self, lookup: impl Fn(&str) -> Option<&'h [u8]>) -> u64 {
        for rule in self.rules.iter() {
            if let Some(value) = lookup(&rule.header) {
                if let Some((_, units)) = rule.values.iter().find(|(v, _)| **v == *value) {
                    return *units;
                }
            }
        }
        self.default
    }

    /// The budget a request gets at the entry: [`BudgetGrant::effective`] of its incoming
    /// [`BUDGET_HEADER`] and its [`grant`](BudgetGrant::grant).
    pub fn budget_for<'h>(&self, lookup: impl Fn(&str) -> Option<&'h [u8]>) -> u64 {
        let incoming = lookup(BUDGET_HEADER);
        BudgetGrant::effective(incoming, self.grant(lookup))
    }

    /// The budget to carry on, given the incoming header value and the grant: a client cannot
    /// raise its budget. A valid incoming value below the grant is kept (an inner hop, or a
    /// caller that already spent some); a higher, absent or malformed one is replaced by the
    /// grant. Never above `granted`.
    pub fn effective(incoming: Option<&[u8]>, granted: u64) -> u64 {
        match incoming.map(parse_budget) {
            Some(Ok(units)) => units.min(granted),
            _ => granted,
        }
    }
}

/// Builds a [`BudgetGrant`]; see [`BudgetGrant::builder`].
#[derive(Clone, Debug)]
#[must_use = "call build() to get the BudgetGrant"]
pub struct BudgetGrantBuilder {
    default: u64,
    rules: Vec<(String, Vec<(String, u64)>)>,
}

impl BudgetGrantBuilder {
    /// Adds a rule after the ones already added: requests whose `header` has one of the
    /// `values` are granted the paired amount (e.g. `("x-role", [("admin", 1000)])`).
    pub fn rule<N, V, I>(mut self, header: N, values: I) -> Self
    where
        N: Into<String>,
        V: Into<String>,
        I: IntoIterator<Item = (V, u64)>,
    {
        let values = values.into_iter().map(|(v, units)| (v.into(), units)).collect();
        self.rules.push((header.into(), values));
        self
    }

    /// Validates the rules: header names are HTTP tokens, unique, and not [`BUDGET_HEADER`]
    /// (granting by the budget header would let a client choose its budget); every rule has
    /// values; values are non-empty, unique within their rule, free of control characters
    /// and of surrounding white space (HTTP strips it, so such a value could never match).
    pub fn build(self) -> Result<BudgetGrant, BudgetGrantError> {
        let mut rules: Vec<GrantRule> = Vec::with_capacity(self.rules.len());
        for (index, (name, values)) in self.rules.into_iter().enumerate() {
            let header = name.to_ascii_lowercase();
            if header.is_empty() || !header.bytes().all(is_tchar) {
                return Err(BudgetGrantError::InvalidHeaderName { rule: index, name });
            }
            if header == BUDGET_HEADER {
                return Err(BudgetGrantError::GrantByBudgetHeader { rule: index });
            }
            if rules.iter().any(|r| *r.header == header) {
                return Err(BudgetGrantError::DuplicateHeader { rule: index, name });
            }
            if values.is_empty() {
                return Err(BudgetGrantError::NoValues { rule: index, name });
            }
            let mut checked: Vec<(Box<[u8]>, u64)> = Vec::with_capacity(values.len());
            for (value, units) in values {
                if !is_matchable_value(value.as_bytes()) {
                    return Err(BudgetGrantError::InvalidValue { rule: index, value });
                }
                if checked.iter().any(|(v, _)| **v == *value.as_bytes()) {
                    return Err(BudgetGrantError::DuplicateValue { rule: index, value });
                }
                checked.push((value.into_bytes().into_boxed_slice(), units));
            }
            rules.push(GrantRule { header: header.into(), values: checked.into() });
        }
        Ok(BudgetGrant { default: self.default, rules: rules.into() })
    }
}

/// A [`BudgetGrant`] configuration mistake, naming the rule (counted from 0, in the order
/// added) and the offending key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetGrantError {
    /// The header name is empty or not an HTTP token.
    #[error("rule {rule}: {name:?} is not a valid header name")]
    InvalidHeaderName {
        /// The rule's index.
        rule: usize,
        /// The name as given.
        name: String,
    },
    /// The rule grants by the budget header itself.
    #[error("rule {rule}: cannot grant by {BUDGET_HEADER}, the client would choose its budget")]
    GrantByBudgetHeader {
        /// The rule's index.
        rule: usize,
    },
    /// An earlier rule already uses this header: merge the two.
    #[error("rule {rule}: header {name:?} already has a rule")]
    DuplicateHeader {
        /// The rule's index.
        rule: usize,
        /// The name as given.
        name: String,
    },
    /// The rule lists no values, so it can never match.
    #[error("rule {rule}: header {name:?} has no values")]
    NoValues {
        /// The rule's index.
        rule: usize,
        /// The name as given.
        name: String,
    },
    /// A value is empty, has surrounding white space or a control character.
    #[error("rule {rule}: value {value:?} can never match a header value")]
    InvalidValue {
        /// The rule's index.
        rule: usize,
        /// The value as given.
        value: String,
    },
    /// A value appears twice in one rule (the second grant could never apply).
    #[error("rule {rule}: value {value:?} is listed twice")]
    DuplicateValue {
        /// The rule's index.
        rule: usize,
        /// The value as given.
        value: String,
    },
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A value an HTTP header can carry exactly: non-empty, no surrounding white space, no
/// control characters (tab allowed inside).
fn is_matchable_value(v: &[u8]) -> bool {
    !v.is_empty()
        && v.trim_ascii().len() == v.len()
        && v.iter().all(|&b| b == b'\t' || !b.is_ascii_control())
}

/// The cost budget a request carries through one service: what is left, spent as work is done.
///
/// Spending never underflows and nothing makes it grow: a refused spend leaves it unchanged.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    remaining: u64,
}

impl Budget {
    /// A budget of `units`.
    pub const fn new(units: u64) -> Budget {
        Budget { remaining: units }
    }

    /// The units left.
    pub const fn remaining(&self) -> u64 {
        self.remaining
    }

    /// True when `cost` can be paid (a cost of 0 always can, even from an empty budget).
    pub const fn can_afford(&self, cost: u64) -> bool {
        cost <= self.remaining
    }

    /// Spends `cost` and returns what is left, or refuses with
    /// [`RejectReason::BudgetExhausted`] without spending anything when `cost` is more than
    /// what is left. The refusal carries no retry hint: retrying does not refill a budget.
    pub fn try_spend(&mut self, cost: u64) -> Result<u64, Rejection> {
        match self.remaining.checked_sub(cost) {
            Some(left) => {
                self.remaining = left;
                Ok(left)
            }
            None => Err(Rejection::new(RejectReason::BudgetExhausted)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a test failure
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn budget_values_are_ascii_digits_with_optional_surrounding_white_space() {
        assert_eq!(parse_budget(b"0"), Ok(0));
        assert_eq!(parse_budget(b" 42\t"), Ok(42));
        assert_eq!(parse_budget(b"007"), Ok(7));
        assert_eq!(parse_budget(b"18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn malformed_budget_values_are_typed_errors() {
        assert_eq!(parse_budget(b""), Err(BudgetParseError::Empty));
        assert_eq!(parse_budget(b"  "), Err(BudgetParseError::Empty));
        assert_eq!(parse_budget(b"18446744073709551616"), Err(BudgetParseError::Overflow));
        for (bad, offset) in
            [(&b"-1"[..], 0), (b"+3", 0), (b"1.5", 1), (b" 12a", 3), (b"1 2", 1), (b"\xff", 0)]
        {
            assert_eq!(parse_budget(bad), Err(BudgetParseError::NotADigit { offset }), "{bad:?}");
        }
    }

    #[test]
    fn budgets_are_formatted_in_decimal() {
        assert_eq!(format_budget(0).as_str(), "0");
        assert_eq!(format_budget(1234).as_bytes(), b"1234");
        assert_eq!(format_budget(u64::MAX).to_string(), "18446744073709551615");
        let value = format_budget(9);
        assert_eq!(AsRef::<str>::as_ref(&value), "9");
    }

    fn roles() -> BudgetGrant {
        BudgetGrant::builder(10)
            .rule("X-Role", [("admin", 1000), ("member", 100)])
            .rule("x-plan", [("gold", 500)])
            .build()
            .unwrap()
    }

    fn lookup<'h>(headers: &'h [(&str, &'h str)]) -> impl Fn(&str) -> Option<&'h [u8]> + 'h {
        move |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes())
    }

    #[test]
    fn first_matching_rule_grants_else_the_default() {
        let grant = roles();
        assert_eq!(grant.grant(lookup(&[("x-role", "admin"), ("x-plan", "gold")])), 1000);
        // x-role present but unknown: the next rule gets its chance.
        assert_eq!(grant.grant(lookup(&[("x-role", "guest"), ("x-plan", "gold")])), 500);
        assert_eq!(grant.grant(lookup(&[("x-role", "member")])), 100);
        assert_eq!(grant.grant(lookup(&[])), 10);
    }

    #[test]
    fn grant_values_are_compared_exactly() {
        let grant = roles();
        assert_eq!(grant.grant(lookup(&[("x-role", "Admin")])), 10);
        assert_eq!(grant.grant(lookup(&[("x-role", "admin ")])), 10);
    }

    #[test]
    fn client_cannot_raise_its_budget_but_an_inner_hop_keeps_a_lower_one() {
        assert_eq!(BudgetGrant::effective(Some(b"5000"), 100), 100);
        assert_eq!(BudgetGrant::effective(Some(b"37"), 100), 37);
        assert_eq!(BudgetGrant::effective(Some(b"lots"), 100), 100);
        assert_eq!(BudgetGrant::effective(None, 100), 100);
        let grant = roles();
        let headers = [("x-role", "member"), (BUDGET_HEADER, "99999")];
        assert_eq!(grant.budget_for(lookup(&headers)), 100);
        let headers = [("x-role", "member"), (BUDGET_HEADER, "3")];
        assert_eq!(grant.budget_for(lookup(&headers)), 3);
    }

    #[test]
    fn grant_config_mistakes_are_named() {
        let err = |b: BudgetGrantBuilder| b.build().unwrap_err();
        assert_eq!(
            err(BudgetGrant::builder(0).rule("x role", [("a", 1)])),
            BudgetGrantError::InvalidHeaderName { rule: 0, name: "x role".into() }
        );
        assert_eq!(
            err(BudgetGrant::builder(0).rule("X-Spillway-Budget", [("a", 1)])),
            BudgetGrantError::GrantByBudgetHeader { rule: 0 }
        );
        assert_eq!(
            err(BudgetGrant::builder(0).rule("x-role", [("a", 1)]).rule("X-ROLE", [("b", 2)])),
            BudgetGrantError::DuplicateHeader { rule: 1, name: "X-ROLE".into() }
        );
        let none: [(&str, u64); 0] = [];
        assert_eq!(
            err(BudgetGrant::builder(0).rule("x-role", none)),
            BudgetGrantError::NoValues { rule: 0, name: "x-role".into() }
        );
        for bad in ["", " admin", "ad\nmin"] {
            assert_eq!(
                err(BudgetGrant::builder(0).rule("x-role", [(bad, 1)])),
                BudgetGrantError::InvalidValue { rule: 0, value: bad.into() }
            );
        }
        assert_eq!(
            err(BudgetGrant::builder(0).rule("x-role", [("a", 1), ("a", 2)])),
            BudgetGrantError::DuplicateValue { rule: 0, value: "a".into() }
        );
    }

    #[test]
    fn spending_more_than_is_left_is_refused_as_budget_exhausted_without_retry_hint() {
        let mut budget = Budget::new(5);
        assert_eq!(budget.try_spend(5), Ok(0));
        assert!(budget.can_afford(0));
        let refused = budget.try_spend(1).unwrap_err();
        assert_eq!(refused, Rejection::new(RejectReason::BudgetExhausted));
        assert_eq!(refused.reason.http_status(), 429);
        assert_eq!(budget.remaining(), 0);
    }

    proptest! {
        #[test]
        fn spending_never_underflows_and_never_grows(
            start in any::<u64>(),
            costs in proptest::collection::vec(any::<u64>(), 0..32),
        ) {
            let mut budget = Budget::new(start);
            for cost in costs {
                let before = budget.remaining();
                prop_assert_eq!(budget.can_afford(cost), cost <= before);
                match budget.try_spend(cost) {
                    Ok(left) => {
                        prop_assert_eq!(left, before - cost);
                        prop_assert_eq!(budget.remaining(), left);
                    }
                    Err(_) => prop_assert_eq!(budget.remaining(), before),
                }
                prop_assert!(budget.remaining() <= before);
            }
        }

        #[test]
        fn effective_budget_never_exceeds_the_grant(
            incoming in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
            granted in any::<u64>(),
        ) {
            let effective = BudgetGrant::effective(incoming.as_deref(), granted);
            prop_assert!(effective <= granted);
            if let Some(Ok(units)) = incoming.as_deref().map(parse_budget) {
                prop_assert_eq!(effective, units.min(granted));
            }
        }

        #[test]
        fn formatted_budgets_parse_back(units in any::<u64>()) {
            prop_assert_eq!(parse_budget(format_budget(units).as_bytes()), Ok(units));
        }
    }
}
