//! What a parsed document costs, measured before async-graphql validates or
//! executes it, in time linear in the document.
//!
//! The document's text is small, but what it expands to need not be: a
//! fragment that spreads the next one twice, thirty deep, is 1.5 KB of text
//! and 2³⁰ fields. async-graphql's validation walks that expansion (its
//! complexity, depth and cache-control visitors inline every fragment
//! spread, for every operation and every fragment definition), so such a
//! document would hold a worker thread for hours. Here each fragment is
//! summarised once, in dependency order, and every use of it adds its
//! summary: the expansion is counted, never walked.
//!
//! The counts are saturating: a document that expands to more than
//! `u64::MAX` fields is simply over every limit.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// What a document costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Fields the document expands to with every fragment spread inlined,
    /// over all its operations and all its fragment definitions: the work
    /// of async-graphql's inlining validation passes.
    pub fields: u64,
    /// Deepest field nesting after inlining (`__typename` not counted, as
    /// async-graphql's own depth limit counts it).
    pub depth: u64,
    /// Deepest chain of fields, inline fragments and fragment spreads: how
    /// deep async-graphql's validator recurses.
    pub nesting: u64,
    /// Aliased fields as written (not expanded).
    pub aliases: usize,
    /// Directives as written (not expanded).
    pub directives: usize,
}

/// A fragment that spreads itself, directly or through others: its
/// expansion is infinite. Named in the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentCycle(pub String);

/// The expansion of one selection set.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    fields: u64,
    depth: u64,
    nesting: u64,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.fields = self.fields.saturating_add(other.fields);
        self.depth = self.depth.max(other.depth);
        self.nesting = self.nesting.max(other.nesting);
    }
}

/// Measures `doc`.
pub fn measure(doc: &ExecutableDocument) -> Result<Cost, FragmentCycle> {
    let order = dependency_order(doc)?;
    let mut cost = Cost::default();
    let mut done: HashMap<&str, Summary> = HashMap::with_capacity(order.len());
    for name in order {
        let Some(fragment) = doc.fragments.get(name) else { continue };
        cost.directives += fragment.node.directives.len();
        let summary = summarise(&fragment.node.selection_set.node, &done, &mut cost);
        add(&mut cost, summary);
        done.insert(name, summary);
    }
    for (_, op) in doc.operations.iter() {
        cost.directives += op.node.directives.len();
        cost.directives += op.node.variable_definitions.iter().map(|v| v.node.directives.len()).sum::<usize>();
        let summary = summarise(&op.node.selection_set.node, &done, &mut cost);
        add(&mut cost, summary);
    }
    Ok(cost)
}

fn add(cost: &mut Cost, s: Summary) {
    cost.fields = cost.fields.saturating_add(s.fields);
    cost.depth = cost.depth.max(s.depth);
    cost.nesting = cost.nesting.max(s.nesting);
}

/// Summarises one selection set whose fragments are all in `done` (or
/// unknown: async-graphql rejects those, and they expand to nothing). The
/// recursion follows the text's own nesting, which the guard before the
/// parser bounds.
fn summarise(set: &SelectionSet, done: &HashMap<&str, Summary>, cost: &mut Cost) -> Summary {
    let mut total = Summary::default();
    for item in &set.items {
        let inner = match &item.node {
            Selection::Field(f) => {
                cost.aliases += usize::from(f.node.alias.is_some());
                cost.directives += f.node.directives.len();
                let below = summarise(&f.node.selection_set.node, done, cost);
                let counted = u64::from(f.node.name.node != "__typename");
                Summary {
                    fields: below.fields.saturating_add(1),
                    depth: below.depth.saturating_add(counted),
                    nesting: below.nesting.saturating_add(1),
                }
            }
            Selection::InlineFragment(i) => {
                cost.directives += i.node.directives.len();
                let below = summarise(&i.node.selection_set.node, done, cost);
                Summary { nesting: below.nesting.saturating_add(1), ..below }
            }
            Selection::FragmentSpread(s) => {
                cost.directives += s.node.directives.len();
                let below = done.get(s.node.fragment_name.node.as_str()).copied().unwrap_or_default();
                Summary { nesting: below.nesting.saturating_add(1), ..below }
            }
        };
        total.merge(inner);
    }
    total
}

/// The fragments' names, each after every fragment it spreads; an error if
/// the spreads form a cycle. Iterative (an explicit stack), so a long chain
/// of spreads cannot exhaust the thread's stack.
fn dependency_order(doc: &ExecutableDocument) -> Result<Vec<&str>, FragmentCycle> {
    let spreads: HashMap<&str, Vec<&str>> = doc
        .fragments
        .iter()
        .map(|(name, f)| {
            let mut out = Vec::new();
            spreads_in(&f.node.selection_set.node, &mut out);
            (name.as_str(), out)
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::with_capacity(spreads.len());
    let mut order = Vec::with_capacity(spreads.len());
    for root in spreads.keys() {
        if marks.contains_key(root) {
            continue;
        }
        // (fragment, index of the next spread of it to follow)
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::OnPath);
        while let Some(&(name, next)) = stack.last() {
            let children = spreads.get(name).map(Vec::as_slice).unwrap_or_default();
            if let Some(&child) = children.get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match marks.get(child) {
                    Some(Mark::OnPath) => return Err(FragmentCycle(child.to_owned())),
                    Some(Mark::Done) => {}
                    None if spreads.contains_key(child) => {
                        marks.insert(child, Mark::OnPath);
                        stack.push((child, 0));
                    }
                    None => {} // unknown: async-graphql reports it
                }
            } else {
                marks.insert(name, Mark::Done);
                order.push(name);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// The fragment names spread anywhere in `set`.
fn spreads_in<'a>(set: &'a SelectionSet, out: &mut Vec<&'a str>) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => spreads_in(&f.node.selection_set.node, out),
            Selection::InlineFragment(i) => spreads_in(&i.node.selection_set.node, out),
            Selection::FragmentSpread(s) => out.push(s.node.fragment_name.node.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(q: &str) -> Result<Cost, FragmentCycle> {
        measure(&async_graphql::parser::parse_query(q).expect("parses"))
    }

    /// The query of the report: 30 fragments, each spreading the next twice.
    fn fan_out(width: usize, depth: usize) -> String {
        let mut q = String::from("query Bomb { ...F0 } ");
        for i in 0..depth {
            q.push_str(&format!("fragment F{i} on Query {{ __typename"));
            for _ in 0..width {
                q.push_str(&format!(" ...F{}", i + 1));
            }
            q.push_str(" } ");
        }
        q.push_str(&format!("fragment F{depth} on Query {{ __typename }}"));
        q
    }

    #[test]
    fn counts_the_expansion_without_walking_it() {
        // F_d has 1 field; F_i has 1 + 2·F_{i+1}: 2^(31-i) - 1 fields.
        let c = cost(&fan_out(2, 30)).expect("no cycle");
        let fragments: u64 = (0..=30).map(|i| (1u64 << (31 - i)) - 1).sum();
        assert_eq!(c.fields, fragments + (1u64 << 31) - 1, "every fragment definition plus the operation");
        assert_eq!(c.depth, 0, "__typename does not count towards depth");
        assert_eq!(c.nesting, 31 + 1);
        let huge = cost(&fan_out(4, 40)).expect("no cycle");
        assert_eq!(huge.fields, u64::MAX, "saturates instead of overflowing");
    }

    #[test]
    fn depth_and_nesting_follow_spreads() {
        let c = cost(
            "{ thread(id: \"t\") { ...A } } fragment A on Thread { messages { ... on Message { id } } messageCount }",
        )
        .expect("no cycle");
        // Operation: thread, messages, id, messageCount (4); fragment A: 3.
        assert_eq!(c.fields, 7);
        assert_eq!(c.depth, 3);
        assert_eq!(c.nesting, 5, "thread > ...A > messages > ... on Message > id");
    }

    #[test]
    fn cycles_are_found_at_any_length() {
        assert_eq!(cost("{ ...A } fragment A on Query { ...A }"), Err(FragmentCycle("A".into())));
        let mut q = String::from("{ ...F0 }");
        for i in 0..5000 {
            q.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", (i + 1) % 5000));
        }
        assert!(cost(&q).is_err(), "a 5000-long cycle is found (iteratively)");
    }

    #[test]
    fn long_chains_are_linear_and_unknown_fragments_count_nothing() {
        let mut q = String::from("{ ...F0 }");
        for i in 0..5000 {
            q.push_str(&format!(" fragment F{i} on Query {{ __typename ...F{} }}", i + 1));
        }
        let c = cost(&q).expect("no cycle");
        assert_eq!(c.nesting, 5001, "F4999 spreads the unknown F5000");
        assert_eq!(c.fields, (1..=5000u64).sum::<u64>() + 5000);
    }

    #[test]
    fn counts_aliases_and_directives_everywhere() {
        let c = cost(
            "query Q($s: Boolean!) @a { x: thread(id: \"t\") { y: messageCount @include(if: $s) ...F ... on Thread @b { z: id } } }
             fragment F on Thread @c { w: id }",
        )
        .expect("no cycle");
        assert_eq!((c.aliases, c.directives), (4, 4));
    }

    /// GraphiQL's introspection query with every option graphql-js 16 has
    /// switched on (the largest form a client sends).
    const INTROSPECTION: &str = r#"query IntrospectionQuery {
      __schema {
        description
        queryType { name kind } mutationType { name kind } subscriptionType { name kind }
        types { ...FullType }
        directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } }
      }
    }
    fragment FullType on __Type {
      kind name description specifiedByURL isOneOf
      fields(includeDeprecated: true) {
        name description args(includeDeprecated: true) { ...InputValue } type { ...TypeRef }
        isDeprecated deprecationReason
      }
      inputFields(includeDeprecated: true) { ...InputValue }
      interfaces { ...TypeRef }
      enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
      possibleTypes { ...TypeRef }
    }
    fragment InputValue on __InputValue {
      name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
    }
    fragment TypeRef on __Type {
      kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType {
      kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }
    }"#;

    #[test]
    fn introspection_fits_the_default_limits() {
        let c = cost(INTROSPECTION).expect("no cycle");
        // TypeRef 29, InputValue 35, FullType 177, the operation 230.
        assert_eq!(c.fields, 29 + 35 + 177 + 230);
        assert_eq!(c.depth, 15, "__schema > types > fields > args > type > 10 TypeRef levels");
        assert!(c.fields * 4 <= 2_000, "MAX_QUERY_FIELDS' default leaves room");
        assert!(c.nesting <= crate::graphql::shape::MAX_NESTING as u64);
    }
}
