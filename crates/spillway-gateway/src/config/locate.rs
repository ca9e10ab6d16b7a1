//! Finds the line of a key path (`routes[1].cluster`) in block-style YAML source.
//!
//! The YAML parser reports positions for syntax and type errors but not for errors found later
//! by validation (an unknown cluster name, two listeners on one port). This scanner maps the
//! key path of such an error back to a line by indentation, so that every error names a line.
//! It is deliberately simple: a key is looked for at the column of its mapping's first key
//! (plain or quoted); when it sits inside a flow mapping (`{ a: 1 }`) or behind an alias
//! (`*name`) it answers with the line of the enclosing key.

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Renders a key path as `routes[1].match.path`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

/// Whether `body` starts with `key:`, the key written plain, in single or in double quotes.
fn is_key(body: &str, key: &str) -> bool {
    let rest =
        ['"', '\''].iter().find_map(|&q| body.strip_prefix(q)?.strip_prefix(key)?.strip_prefix(q));
    rest.or_else(|| body.strip_prefix(key)).is_some_and(|rest| rest.starts_with(':'))
}

/// The 1-based line where `path` is written in `source`, or the nearest enclosing key's line.
pub fn line_of(source: &str, path: &[Seg]) -> Option<usize> {
    let lines: Vec<&str> = source.lines().collect();
    // The region [start, end) holding the current node, and the column its content starts at.
    let (mut start, mut end, mut min_indent) = (0usize, lines.len(), 0usize);
    let mut found: Option<usize> = None;
    for seg in path {
        match seg {
            Seg::Key(key) => {
                let mut hit = None;
                // The mapping's keys all sit at the column of its first key: a deeper line
                // with the same name belongs to a nested mapping or a block scalar.
                let mut key_col = None;
                for (i, line) in lines.iter().enumerate().take(end).skip(start) {
                    if !is_content(line) {
                        continue;
                    }
                    let ind = indent_of(line);
                    if ind < min_indent {
                        continue;
                    }
                    let body = line[ind..].trim_start_matches("- ");
                    let col = line.len() - body.len();
                    if *key_col.get_or_insert(col) != col {
                        continue;
                    }
                    if is_key(body, key) {
                        hit = Some((i, col));
                        break;
                    }
                }
                let Some((i, col)) = hit else { return found };
                found = Some(i + 1);
                // The value spans the following lines indented deeper than the key.
                let mut j = i + 1;
                while j < end && (!is_content(lines[j]) || indent_of(lines[j]) > col) {
                    j += 1;
                }
                // A sequence may sit at the same indentation as its key.
                while j < end && is_content(lines[j]) && indent_of(lines[j]) == col {
                    if !lines[j][col..].starts_with("- ") && lines[j][col..].trim() != "-" {
                        break;
                    }
                    j += 1;
                    while j < end && (!is_content(lines[j]) || indent_of(lines[j]) > col) {
                        j += 1;
                    }
                }
                start = i + 1;
                end = j;
                min_indent = col + 1;
                if start == end {
                    // Inline value (flow mapping or scalar): stay on the key's line.
                    return found;
                }
            }
            Seg::Index(n) => {
                let dash_indent = (start..end)
                    .filter(|&i| is_content(lines[i]))
                    .map(|i| indent_of(lines[i]))
                    .min()?;
                let items: Vec<usize> = (start..end)
                    .filter(|&i| {
                        is_content(lines[i])
                            && indent_of(lines[i]) == dash_indent
                            && lines[i][dash_indent..].starts_with('-')
                    })
                    .collect();
                let &item = items.get(*n)?;
                let item_end = items.get(n + 1).copied().unwrap_or(end);
                found = Some(item + 1);
                start = item;
                end = item_end;
                min_indent = dash_indent + 2;
            }
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SOURCE: &str = "\
workers: 2
listeners:
  - name: public
    address: 127.0.0.1:8080
routes:
  - name: a
    match: { path: /a }
    cluster: one
  - name: b
    match:
      path_prefix: /b
    cluster: two
";

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }

    #[test]
    fn key_paths_map_to_their_lines() {
        assert_eq!(line_of(SOURCE, &[key("workers")]), Some(1));
        assert_eq!(line_of(SOURCE, &[key("listeners"), Seg::Index(0), key("address")]), Some(4));
        assert_eq!(line_of(SOURCE, &[key("routes"), Seg::Index(1), key("cluster")]), Some(12));
        assert_eq!(line_of(SOURCE, &[key("routes"), Seg::Index(0), key("cluster")]), Some(8));
        assert_eq!(
            line_of(SOURCE, &[key("routes"), Seg::Index(1), key("match"), key("path_prefix")]),
            Some(11)
        );
    }

    #[test]
    fn keys_in_flow_mappings_fall_back_to_the_enclosing_line() {
        assert_eq!(
            line_of(SOURCE, &[key("routes"), Seg::Index(0), key("match"), key("path")]),
            Some(7)
        );
    }

    const TRICKY: &str = "\
clusters:
  - name: one
    health_check:
      path: /h
      timeout: 1s
    timeout: 2s
  - \"name\": two
    'timeouts': &t
      connect: 1s
  - name: three
    timeouts: *t
    outlier: { consecutive_failures: 5,
      max_ejection: 1m }
    body: |
      name: not a key
    balance: p2c_ewma
";

    #[test]
    fn a_key_reused_inside_a_nested_mapping_is_found_at_its_own_depth() {
        let one = [key("clusters"), Seg::Index(0)];
        assert_eq!(line_of(TRICKY, &[&one[..], &[key("timeout")]].concat()), Some(6));
        let nested = [&one[..], &[key("health_check"), key("timeout")]].concat();
        assert_eq!(line_of(TRICKY, &nested), Some(5));
    }

    #[test]
    fn quoted_keys_are_found() {
        assert_eq!(line_of(TRICKY, &[key("clusters"), Seg::Index(1), key("name")]), Some(7));
        let connect = [key("clusters"), Seg::Index(1), key("timeouts"), key("connect")];
        assert_eq!(line_of(TRICKY, &connect), Some(9));
    }

    #[test]
    fn an_alias_points_at_the_line_that_uses_it() {
        let connect = [key("clusters"), Seg::Index(2), key("timeouts"), key("connect")];
        assert_eq!(line_of(TRICKY, &connect), Some(11));
    }

    #[test]
    fn keys_of_a_multi_line_flow_mapping_are_on_their_line_or_the_enclosing_one() {
        let outlier = [key("clusters"), Seg::Index(2), key("outlier")];
        let first = [&outlier[..], &[key("consecutive_failures")]].concat();
        assert_eq!(line_of(TRICKY, &first), Some(12));
        let continued = [&outlier[..], &[key("max_ejection")]].concat();
        assert_eq!(line_of(TRICKY, &continued), Some(13));
    }

    #[test]
    fn block_scalar_text_is_not_taken_for_a_key() {
        assert_eq!(line_of(TRICKY, &[key("clusters"), Seg::Index(2), key("name")]), Some(10));
        assert_eq!(line_of(TRICKY, &[key("clusters"), Seg::Index(2), key("balance")]), Some(16));
    }

    #[test]
    fn paths_render_with_indices() {
        assert_eq!(render(&[key("routes"), Seg::Index(1), key("cluster")]), "routes[1].cluster");
    }
}
