//! `${VAR}` and `${VAR:-default}` expansion in config text, before parsing.
//!
//! Expansion is textual so that secrets (an admin token) and per-host values (addresses) can
//! come from the environment in any field; comments are left alone, so a commented-out
//! `${TOKEN}` does not need the variable to exist.

use super::Problem;

/// Expands variables using `lookup`; an unset variable without a default is an error naming
/// its line.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let comment = comment_start(line);
        let (code, rest) = line.split_at(comment);
        let mut remaining = code;
        while let Some(start) = remaining.find("${") {
            out.push_str(&remaining[..start]);
            let after = &remaining[start + 2..];
            let Some(end) = after.find('}') else {
                problems.push(Problem {
                    line: Some(index + 1),
                    key: "${".to_string(),
                    reason: "unterminated `${`: write `${NAME}`".to_string(),
                });
                remaining = "";
                break;
            };
            let spec = &after[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (spec, None),
            };
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => problems.push(Problem {
                    line: Some(index + 1),
                    key: format!("${{{name}}}"),
                    reason: format!(
                        "environment variable {name} is not set (set it, or write `${{{name}:-default}}`)"
                    ),
                }),
            }
            remaining = &after[end + 1..];
        }
        out.push_str(remaining);
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Byte offset where a YAML comment starts on this line (or the line's length).
fn comment_start(line: &str) -> usize {
    let bytes = line.as_bytes();
    let (mut single, mut double) = (false, false);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return i
            }
            _ => {}
        }
    }
    line.len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn variables_expand_with_defaults() {
        let text = "token: ${TOKEN}\nport: ${PORT:-8080}\n";
        assert_eq!(expand(text, env).unwrap(), "token: s3cret\nport: 8080\n");
    }

    #[test]
    fn an_unset_variable_is_an_error_on_its_line() {
        let problems = expand("a: 1\nb: ${MISSING}\n", env).unwrap_err();
        assert_eq!(problems[0].line, Some(2));
        assert!(problems[0].reason.contains("MISSING"));
    }

    #[test]
    fn comments_are_not_expanded() {
        let text = "a: 1 # ${MISSING}\n# token: ${MISSING}\n";
        assert_eq!(expand(text, env).unwrap(), text);
    }
}
