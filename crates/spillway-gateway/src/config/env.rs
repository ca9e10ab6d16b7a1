//! `${VAR}` and `${VAR:-default}` expansion inside the string values of a parsed config.
//!
//! Expansion runs on the parsed document, not on the text: an environment value is always the
//! literal string it holds, whatever characters it contains (`null`, `~`, `abc #x`, `*x`,
//! `a: b`, line breaks), so a variable can never turn a secret into YAML `null`, cut it at a
//! `#` or change the document's structure. Keys and comments are never expanded (comments are
//! gone after parsing), so a commented-out `${TOKEN}` does not need the variable to exist.
//! Numeric settings accept a string of digits (see [`number`]), so `workers: ${WORKERS}` works.

use super::locate::{self, Seg};
use super::Problem;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use std::fmt::Display;
use std::str::FromStr;
use yaml_serde::Value;

/// Key paths of secrets: a secret that ends up empty after expansion is an error, never "no
/// secret" (an empty variable must not turn authentication off).
const SECRETS: &[&[&str]] = &[&["admin", "token"]];

/// Expands variables in every string scalar of `doc` using `lookup`. Problems (an unset
/// variable without a default, an unterminated `${`, an empty secret) name the line of their
/// key in `source`.
pub fn expand_value(
    doc: &mut Value,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    walk(doc, &mut Vec::new(), source, lookup, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn walk(
    node: &mut Value,
    path: &mut Vec<Seg>,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match node {
        Value::String(text) => {
            let problem = |reason: String| Problem {
                line: locate::line_of(source, path),
                key: locate::render(path),
                reason,
            };
            match expand(text, lookup) {
                Ok(expanded) => {
                    if expanded.value.is_empty() && is_secret(path) && !text.is_empty() {
                        let names = expanded.names.join(", ");
                        problems.push(problem(format!(
                            "this secret is empty after expanding `{text}` (from {names}): set \
                             the variable to the secret, or remove the key"
                        )));
                    }
                    *text = expanded.value;
                }
                Err(reasons) => problems.extend(reasons.into_iter().map(problem)),
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                walk(item, path, source, lookup, problems);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (key, value) in map.iter_mut() {
                let name = match key {
                    Value::String(s) => s.clone(),
                    other => yaml_serde::to_string(other).unwrap_or_default().trim().to_string(),
                };
                path.push(Seg::Key(name));
                walk(value, path, source, lookup, problems);
                path.pop();
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, source, lookup, problems),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn is_secret(path: &[Seg]) -> bool {
    SECRETS.iter().any(|secret| {
        secret.len() == path.len()
            && secret.iter().zip(path).all(|(s, p)| matches!(p, Seg::Key(k) if k == s))
    })
}

/// A string after expansion, with the names of the variables it used.
#[derive(Debug, PartialEq, Eq)]
struct Expanded {
    value: String,
    names: Vec<String>,
}

/// Expands the variables in one string; each error is a reason.
fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, Vec<String>> {
    let mut out = Expanded { value: String::with_capacity(text.len()), names: Vec::new() };
    let mut problems = Vec::new();
    let mut remaining = text;
    while let Some(start) = remaining.find("${") {
        out.value.push_str(&remaining[..start]);
        let after = &remaining[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push("unterminated `${`: write `${NAME}`".to_string());
            remaining = "";
            break;
        };
        let spec = &after[..end];
        let (name, default) = match spec.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (spec, None),
        };
        out.names.push(name.to_string());
        match (lookup(name), default) {
            (Some(value), _) => out.value.push_str(&value),
            (None, Some(default)) => out.value.push_str(default),
            (None, None) => problems.push(format!(
                "environment variable {name} is not set (set it, or write `${{{name}:-default}}`)"
            )),
        }
        remaining = &after[end + 1..];
    }
    out.value.push_str(remaining);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Deserializes an optional number that may also be written as a string of digits, so that a
/// numeric setting can come from the environment (`workers: ${WORKERS}`): after expansion the
/// value is the string `"4"`. Use with `#[serde(default, deserialize_with = "...")]`.
pub fn number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + FromStr,
    T::Err: Display,
{
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(value) => number_from(value).map(Some).map_err(D::Error::custom),
    }
}

/// [`number`] for a required setting.
pub fn required_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + FromStr,
    T::Err: Display,
{
    number_from(Value::deserialize(deserializer)?).map_err(D::Error::custom)
}

fn number_from<T>(value: Value) -> Result<T, String>
where
    T: DeserializeOwned + FromStr,
    T::Err: Display,
{
    match value {
        Value::String(text) => {
            text.trim().parse().map_err(|e| format!("`{text}` is not a valid number here: {e}"))
        }
        other => yaml_serde::from_value(other).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn expanded(text: &str) -> Result<Value, Vec<Problem>> {
        let mut doc: Value = yaml_serde::from_str(text).unwrap();
        expand_value(&mut doc, text, &env).map(|()| doc)
    }

    #[test]
    fn variables_expand_with_defaults() {
        let doc =
            expanded("token: ${TOKEN}\nport: ${PORT:-8080}\nurl: a${TOKEN}b${PORT:-}\n").unwrap();
        assert_eq!(doc["token"], Value::String("s3cret".into()));
        assert_eq!(doc["port"], Value::String("8080".into()), "a default stays a string");
        assert_eq!(doc["url"], Value::String("as3cretb".into()));
    }

    #[test]
    fn an_unset_variable_is_an_error_on_its_line() {
        let problems = expanded("a: 1\nb:\n  - ${MISSING}\n").unwrap_err();
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[0].key, "b[0]");
        assert!(problems[0].reason.contains("MISSING is not set"), "{problems:?}");
    }

    #[test]
    fn an_unterminated_variable_is_an_error() {
        let problems = expanded("a: 1\nb: ${TOKEN\n").unwrap_err();
        assert_eq!(problems[0].line, Some(2));
        assert!(problems[0].reason.contains("unterminated"), "{problems:?}");
    }

    #[test]
    fn comments_and_keys_are_not_expanded() {
        let doc = expanded("a: 1 # ${MISSING}\n# token: ${MISSING}\n${KEY}: x\n").unwrap();
        assert_eq!(doc["a"], Value::Number(1.into()));
        assert_eq!(doc["${KEY}"], Value::String("x".into()));
    }

    #[test]
    fn an_empty_secret_names_its_variable() {
        for text in ["admin:\n  token: ${EMPTY}\n", "admin:\n  token: ${UNSET:-}\n"] {
            let problems = expanded(text).unwrap_err();
            assert_eq!(problems[0].line, Some(2), "{text}");
            assert_eq!(problems[0].key, "admin.token");
            let name = if text.contains("EMPTY") { "EMPTY" } else { "UNSET" };
            assert!(problems[0].reason.contains(name), "{problems:?}");
        }
        // An empty value elsewhere is only a value.
        assert_eq!(expanded("name: ${EMPTY}\n").unwrap()["name"], Value::String(String::new()));
    }

    #[test]
    fn numbers_accept_digit_strings_and_name_anything_else() {
        let n: u32 = number_from(Value::String("42".into())).unwrap();
        assert_eq!(n, 42);
        let n: u32 = number_from(Value::Number(7.into())).unwrap();
        assert_eq!(n, 7);
        let e = number_from::<u32>(Value::String("4 workers".into())).unwrap_err();
        assert!(e.contains("`4 workers`"), "{e}");
    }
}
