//! What a parsed document costs, measured before async-graphql validates or
//! executes it, in time linear in the document.
//!
//! The document's text is small, but what it expands to need not be: a
//! fragment that spreads the next one twice, thirty deep, is 1.5 KB of text
//! and 2³⁰ selections. async-graphql walks that expansion more than once
//! before it reports anything: its recursion-depth check follows every
//! spread, and its complexity, depth and cache-control visitors inline
//! every spread of every operation. Here each fragment is summarised once,
//! in dependency order, and every use of it adds its summary: the
//! expansion is counted, never walked.
//!
//! The unit of work is a selection (a field, an inline fragment or a
//! spread: walking a spread of a fragment made only of spreads is work
//! too) plus, for a field, every node of its argument values (the
//! overlapping-fields rule compares arguments pairwise, and variable rules
//! visit every variable reference once per operation). Fragment
//! definitions count once more on their own: the other validation rules
//! walk each definition, and everything it reaches at its level.
//!
//! The counts are saturating: a document that expands past `u64::MAX` is
//! simply over every limit.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// What a document costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Selections (and argument value nodes) the document expands to with
    /// every fragment spread inlined, over all its operations and all its
    /// fragment definitions: a bound on the work of async-graphql's
    /// validation.
    pub work: u64,
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
    /// Most arguments on one field (the overlapping-fields rule compares
    /// each repeated field's arguments with the first one's).
    pub max_arguments: usize,
    /// Variable definitions, over all operations.
    pub variables: usize,
}

/// A fragment that spreads itself, directly or through others: its
/// expansion is infinite. Named in the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentCycle(pub String);

/// The expansion of one selection set.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    work: u64,
    depth: u64,
    nesting: u64,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.work = self.work.saturating_add(other.work);
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
        cost.variables += op.node.variable_definitions.len();
        let summary = summarise(&op.node.selection_set.node, &done, &mut cost);
        add(&mut cost, summary);
    }
    Ok(cost)
}

fn add(cost: &mut Cost, s: Summary) {
    cost.work = cost.work.saturating_add(s.work);
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
                cost.max_arguments = cost.max_arguments.max(f.node.arguments.len());
                let arguments: u64 = f.node.arguments.iter().map(|(_, v)| value_nodes(&v.node)).sum();
                let below = summarise(&f.node.selection_set.node, done, cost);
                let counted = u64::from(f.node.name.node != "__typename");
                Summary {
                    work: below.work.saturating_add(1).saturating_add(arguments),
                    depth: below.depth.saturating_add(counted),
                    nesting: below.nesting.saturating_add(1),
                }
            }
            Selection::InlineFragment(i) => {
                cost.directives += i.node.directives.len();
                let below = summarise(&i.node.selection_set.node, done, cost);
                Summary { work: below.work.saturating_add(1), nesting: below.nesting.saturating_add(1), ..below }
            }
            Selection::FragmentSpread(s) => {
                cost.directives += s.node.directives.len();
                let below = done.get(s.node.fragment_name.node.as_str()).copied().unwrap_or_default();
                Summary { work: below.work.saturating_add(1), nesting: below.nesting.saturating_add(1), ..below }
            }
        };
        total.merge(inner);
    }
    total
}

/// Nodes of an argument value (a list or object counts itself and its
/// items). The recursion follows the text's bracket nesting, which the
/// guard before the parser bounds.
fn value_nodes(v: &async_graphql_value::Value) -> u64 {
    use async_graphql_value::Value;
    match v {
        Value::List(items) => items.iter().map(value_nodes).fold(1, u64::saturating_add),
        Value::Object(fields) => fields.values().map(value_nodes).fold(1, u64::saturating_add),
        _ => 1,
    }
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
    use proptest::prelude::*;

    use super::*;

    fn parse(q: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(q).expect("parses")
    }

    fn cost(q: &str) -> Result<Cost, FragmentCycle> {
        measure(&parse(q))
    }

    /// The oracle: walks the expansion as async-graphql's inlining passes
    /// do (every spread followed, every time), counting the same units.
    /// Exponential: small documents only.
    fn walked(doc: &ExecutableDocument) -> (u64, u64) {
        fn set(doc: &ExecutableDocument, s: &SelectionSet) -> (u64, u64) {
            let (mut work, mut depth) = (0, 0);
            for item in &s.items {
                let (w, d) = match &item.node {
                    Selection::Field(f) => {
                        let args: u64 = f.node.arguments.iter().map(|(_, v)| value_nodes(&v.node)).sum();
                        let (w, d) = set(doc, &f.node.selection_set.node);
                        (1 + args + w, d + u64::from(f.node.name.node != "__typename"))
                    }
                    Selection::InlineFragment(i) => {
                        let (w, d) = set(doc, &i.node.selection_set.node);
                        (1 + w, d)
                    }
                    Selection::FragmentSpread(sp) => match doc.fragments.get(&sp.node.fragment_name.node) {
                        Some(f) => {
                            let (w, d) = set(doc, &f.node.selection_set.node);
                            (1 + w, d)
                        }
                        None => (1, 0),
                    },
                };
                work += w;
                depth = depth.max(d);
            }
            (work, depth)
        }
        let defs = doc.fragments.values().map(|f| set(doc, &f.node.selection_set.node));
        let ops = doc.operations.iter().map(|(_, op)| set(doc, &op.node.selection_set.node));
        defs.chain(ops).fold((0, 0), |(w, d), (w2, d2)| (w + w2, d.max(d2)))
    }

    fn agrees(q: &str) {
        let c = cost(q).expect("no cycle");
        assert_eq!((c.work, c.depth), walked(&parse(q)), "{q}");
    }

    /// `fragment F{i}` spreads `F{i+1}` `width` times, `depth` deep.
    fn fan_out(width: usize, depth: usize, leaf: &str) -> String {
        let mut q = String::from("query Bomb { ...F0 } ");
        for i in 0..depth {
            q.push_str(&format!("fragment F{i} on Query {{ {leaf}"));
            for _ in 0..width {
                q.push_str(&format!(" ...F{}", i + 1));
            }
            q.push_str(" } ");
        }
        q.push_str(&format!("fragment F{depth} on Query {{ {leaf} }}"));
        q
    }

    #[test]
    fn counts_what_walking_the_expansion_counts() {
        for width in 1..=4 {
            for depth in 0..=6 {
                agrees(&fan_out(width, depth, "__typename"));
                agrees(&fan_out(width, depth, "thread(id: \"t\", x: [1, {a: [2, 3]}]) { id messages { id } }"));
            }
        }
        agrees(
            "{ thread(id: \"t\") { ...A } } fragment A on Thread { messages { ... on Message { id } } messageCount }",
        );
    }

    #[test]
    fn the_report_s_document_saturates_instead_of_being_walked() {
        let report = cost(&fan_out(2, 30, "__typename")).expect("no cycle");
        // F30 = 1; F_i = 1 + 2·(1 + F_{i+1}) = 2^(32-i) - 3.
        assert_eq!(report.work, (0..=30).map(|i| (1u64 << (32 - i)) - 3).sum::<u64>() + (1u64 << 32) - 2);
        assert_eq!(report.nesting, 31 + 1);
        assert_eq!(cost(&fan_out(4, 40, "__typename")).expect("no cycle").work, u64::MAX);
    }

    #[test]
    fn spreads_cost_work_even_when_nothing_is_behind_them() {
        // A fan-out of spreads only, ending at an unknown fragment: no field
        // anywhere, yet 2^30 spreads for async-graphql to follow.
        let mut q = String::from("query { ...F30 } fragment F0 on Query { ...Unknown } ");
        for i in 1..=30 {
            q.push_str(&format!("fragment F{i} on Query {{ ...F{j} ...F{j} }} ", j = i - 1));
        }
        let c = cost(&q).expect("no cycle");
        assert!(c.work > 1 << 30, "{c:?}");
        assert_eq!(c.depth, 0);
    }

    #[test]
    fn arguments_and_variables_are_counted() {
        let many: String = (0..40).map(|i| format!("a{i}: 1 ")).collect();
        let c = cost(&format!("query Q($a: Int, $b: [Int]) {{ thread(id: [1, 2, {{x: 3}}]) {{ id }} f({many}) }}"))
            .expect("no cycle");
        assert_eq!(c.max_arguments, 40);
        assert_eq!(c.variables, 2);
        // thread 1 + args (list 1 + 1 + 1 + object 1 + 1) + id 1; f 1 + 40.
        assert_eq!(c.work, 1 + 5 + 1 + 1 + 40);
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
    fn long_chains_are_measured_without_deep_recursion() {
        let mut q = String::from("{ ...F0 }");
        for i in 0..5000 {
            q.push_str(&format!(" fragment F{i} on Query {{ __typename ...F{} }}", i + 1));
        }
        let c = cost(&q).expect("no cycle");
        assert_eq!(c.nesting, 5001, "F4999 spreads the unknown F5000");
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

    /// Random fragment graphs (fragment i spreads fragments after it, so
    /// no cycles): the measure equals the walk.
    fn graph() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::collection::vec((0usize..6, 0usize..3), 0..4), 1..7).prop_map(|frags| {
            let n = frags.len();
            let mut q = String::from("{ ...G0 __typename } ");
            for (i, spreads) in frags.iter().enumerate() {
                q.push_str(&format!("fragment G{i} on Query {{ __typename "));
                for (j, kind) in spreads {
                    let target = i + 1 + j;
                    let spread = if target < n { format!("G{target}") } else { "Missing".into() };
                    match kind {
                        0 => q.push_str(&format!("...{spread} ")),
                        1 => q.push_str(&format!("thread(id: \"t\") {{ ... on Thread {{ id }} }} ...{spread} ")),
                        _ => q.push_str(&format!("... on Query {{ ...{spread} }} ")),
                    }
                }
                q.push_str("} ");
            }
            q
        })
    }

    proptest! {
        #[test]
        fn the_measure_equals_the_walk_on_random_graphs(q in graph()) {
            let c = cost(&q).expect("acyclic by construction");
            prop_assert_eq!((c.work, c.depth), walked(&parse(&q)));
        }
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
        agrees(INTROSPECTION);
        let c = cost(INTROSPECTION).expect("no cycle");
        assert_eq!(c.work, 498, "the figure the README and MAX_QUERY_FIELDS' default cite");
        assert_eq!(c.depth, 15, "__schema > types > fields > args > type > 10 TypeRef levels");
        assert!(c.work * 3 <= 2_000, "MAX_QUERY_FIELDS' default leaves room");
        assert!(c.nesting <= crate::graphql::shape::MAX_NESTING as u64);
        assert!(c.max_arguments <= 1);
    }
}
