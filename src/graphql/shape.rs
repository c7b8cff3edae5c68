//! Counts what async-graphql has no limit for: aliases and directives in a
//! query, over every operation and fragment. A query with thousands of
//! aliases of one cheap field passes the depth and complexity limits yet
//! costs as much as thousands of queries.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// Deepest bracket nesting a query text may have before it is parsed. The
/// parser recurses on nested list and object values without a limit, so a
/// few kilobytes of `[[[[…` would overflow a worker's stack.
pub const MAX_NESTING: usize = 64;

/// Whether `text` nests `(`, `[` and `{` at most [`MAX_NESTING`] deep
/// (outside strings, block strings and comments).
pub fn nesting_ok(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped, mut in_comment) = (0usize, false, false, false);
    for b in text.bytes() {
        if in_comment {
            in_comment = b != b'\n' && b != b'\r';
            continue;
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true, // a block string's quotes toggle in pairs, same result
            b'#' => in_comment = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return false;
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// (aliases, directives) in `doc`.
pub fn count(doc: &ExecutableDocument) -> (usize, usize) {
    let mut n = (0, 0);
    for (_, op) in doc.operations.iter() {
        n.1 += op.node.directives.len();
        n.1 += op.node.variable_definitions.iter().map(|v| v.node.directives.len()).sum::<usize>();
        walk(&op.node.selection_set.node, &mut n);
    }
    for f in doc.fragments.values() {
        n.1 += f.node.directives.len();
        walk(&f.node.selection_set.node, &mut n);
    }
    n
}

fn walk(set: &SelectionSet, n: &mut (usize, usize)) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                n.0 += usize::from(f.node.alias.is_some());
                n.1 += f.node.directives.len();
                walk(&f.node.selection_set.node, n);
            }
            Selection::FragmentSpread(s) => n.1 += s.node.directives.len(),
            Selection::InlineFragment(i) => {
                n.1 += i.node.directives.len();
                walk(&i.node.selection_set.node, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_caught_before_the_parser_sees_it() {
        let deep = format!(
            "{{ thread(id: \"t\") {{ messages(limit: {}1{}) {{ id }} }} }}",
            "[".repeat(3000),
            "]".repeat(3000)
        );
        assert!(!nesting_ok(&deep));
        assert!(nesting_ok(
            "{ thread(id: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\") { id } }"
        ));
        assert!(nesting_ok("# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n{ a }"));
        assert!(nesting_ok(&format!("{}{}", "{".repeat(64), "}".repeat(64))));
        assert!(!nesting_ok(&"{".repeat(65)));
    }

    #[test]
    fn counts_aliases_and_directives_everywhere() {
        let doc = async_graphql::parser::parse_query(
            "query Q($s: Boolean!) @a { x: thread(id: \"t\") { y: messageCount @include(if: $s) ...F ... on Thread @b { z: id } } }
             fragment F on Thread @c { w: id }",
        )
        .expect("parses");
        assert_eq!(count(&doc), (4, 4));
    }
}
