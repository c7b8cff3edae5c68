//! Counts what async-graphql has no limit for: aliases and directives in a
//! query, over every operation and fragment. A query with thousands of
//! aliases of one cheap field passes the depth and complexity limits yet
//! costs as much as thousands of queries.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

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
    fn counts_aliases_and_directives_everywhere() {
        let doc = async_graphql::parser::parse_query(
            "query Q($s: Boolean!) @a { x: thread(id: \"t\") { y: messageCount @include(if: $s) ...F ... on Thread @b { z: id } } }
             fragment F on Thread @c { w: id }",
        )
        .expect("parses");
        assert_eq!(count(&doc), (4, 4));
    }
}
