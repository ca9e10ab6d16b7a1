//! The Redis key layout: one hash-tagged key per limit and key, so every script touches a
//! single slot and runs unchanged on Redis Cluster.
//!
//! Layout: `{spillway:<limit>:<key>}:gcra` holds an exact limit's GCRA state (the theoretical
//! arrival time, a string of microseconds since the Unix epoch, server time),
//! `{spillway:<limit>:<key>}:counter:<window>` a counter-mode limit's count in one window, and
//! `{spillway:<limit>:<key>}:lease` holds a lease-mode limit's fleet (a hash of instance id →
//! `"<demand per second> <lease expiry in ms>"`). The limit name and the key are escaped so
//! that neither can end the hash tag early or collide with another pair: `%`, `{`, `}` and `:`
//! are written `%25`, `%7B`, `%7D` and `%3A`.

use std::fmt::Write;

/// The store key of an exact limit's GCRA state: `{spillway:<limit>:<key>}:gcra`.
pub fn gcra_key(limit: &str, key: &str) -> String {
    store_key(limit, key, "gcra")
}

/// The prefix of a counter-mode limit's window keys, `{spillway:<limit>:<key>}:counter`: the
/// script counts in `<prefix>:<window index>`, on the same slot.
pub fn counter_key(limit: &str, key: &str) -> String {
    store_key(limit, key, "counter")
}

/// The store key of a lease-mode limit's fleet hash: `{spillway:<limit>:<key>}:lease`.
pub fn lease_key(limit: &str, key: &str) -> String {
    store_key(limit, key, "lease")
}

fn store_key(limit: &str, key: &str, suffix: &str) -> String {
    let mut out = String::with_capacity(limit.len() + key.len() + 20);
    out.push_str("{spillway:");
    escape_into(&mut out, limit);
    out.push(':');
    escape_into(&mut out, key);
    out.push_str("}:");
    out.push_str(suffix);
    out
}

fn escape_into(out: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' | '{' | '}' | ':' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_hash_tag_per_limit_and_key() {
        assert_eq!(gcra_key("per-user", "alice"), "{spillway:per-user:alice}:gcra");
        assert_eq!(lease_key("api", "/v1"), "{spillway:api:/v1}:lease");
    }

    #[test]
    fn braces_and_separators_are_escaped_so_tags_cannot_end_early_or_collide() {
        assert_eq!(gcra_key("a:b", "c"), "{spillway:a%3Ab:c}:gcra");
        assert_ne!(gcra_key("a:b", "c"), gcra_key("a", "b:c"));
        assert_eq!(gcra_key("l", "x}y{z%"), "{spillway:l:x%7Dy%7Bz%25}:gcra");
    }
}
