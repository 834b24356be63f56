use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn compute_spec(name: &str) -> ComputeSpec {
    ComputeSpec { name: name.to_owned(), code: format!("test.{name}"), cpu: 1.0, parallelism: 1 }
}

fn template(compute: &[&str], memory: &[&str], edges: &[(EdgeKind, &str, &str)]) -> Template {
    Template {
        app: "test".to_owned(),
        budget_mib: 1024,
        compute: compute.iter().map(|name| compute_spec(name)).collect(),
        memory: memory
            .iter()
            .map(|name| MemorySpec { name: (*name).to_owned(), initial_mib: 4, increment_mib: 4 })
            .collect(),
        edges: edges
            .iter()
            .map(|&(kind, from, to)| EdgeSpec { kind, from: from.to_owned(), to: to.to_owned() })
            .collect(),
    }
}

fn graph(compute: &[&str], memory: &[&str], edges: &[(EdgeKind, &str, &str)]) -> ResourceGraph {
    ResourceGraph::from_template(&template(compute, memory, edges)).expect("a valid graph")
}

fn c(graph: &ResourceGraph, name: &str) -> ComputeId {
    match graph.find(name) {
        Some(ComponentRef::Compute(id)) => id,
        other => panic!("`{name}` is not a compute component: {other:?}"),
    }
}

fn m(graph: &ResourceGraph, name: &str) -> MemoryId {
    match graph.find(name) {
        Some(ComponentRef::Memory(id)) => id,
        other => panic!("`{name}` is not a memory component: {other:?}"),
    }
}

fn names(graph: &ResourceGraph, ids: impl IntoIterator<Item = ComputeId>) -> Vec<String> {
    ids.into_iter().map(|id| graph.compute(id).name.clone()).collect()
}

const T: EdgeKind = EdgeKind::Trigger;
const A: EdgeKind = EdgeKind::Access;
const M: EdgeKind = EdgeKind::Message;

#[test]
fn chain_span_runs_from_first_to_last_accessor() {
    let g = graph(
        &["a", "b", "c"],
        &["m", "only_b"],
        &[(T, "a", "b"), (T, "b", "c"), (A, "a", "m"), (A, "c", "m"), (A, "b", "only_b")],
    );
    let stages: Vec<u32> = ["a", "b", "c"].iter().map(|n| g.stage(c(&g, n))).collect();
    assert_eq!(stages, [0, 1, 2]);

    let span = g.span(m(&g, "m"));
    assert_eq!((span.first_stage, span.last_stage), (0, 2));
    assert_eq!(names(&g, span.opened_by.iter().copied()), ["a"]);
    assert_eq!(names(&g, span.closed_after.iter().copied()), ["a", "c"]);

    let span = g.span(m(&g, "only_b"));
    assert_eq!((span.first_stage, span.last_stage), (1, 1));
    assert_eq!(names(&g, span.opened_by.iter().copied()), ["b"]);
    assert_eq!(names(&g, span.closed_after.iter().copied()), ["b"]);

    assert_eq!(names(&g, g.entry_points()), ["a"]);
    assert_eq!(names(&g, g.exit_points()), ["c"]);
    assert_eq!(names(&g, g.topological_order().iter().copied()), ["a", "b", "c"]);
}

#[test]
fn diamond_fans_out_and_in() {
    // a → b → d and a → c → d: b and c share stage 1, d is stage 2.
    let g = graph(
        &["d", "c", "b", "a"],
        &["wide", "edge"],
        &[
            (T, "a", "b"),
            (T, "a", "c"),
            (T, "b", "d"),
            (T, "c", "d"),
            (A, "c", "wide"),
            (A, "b", "wide"),
            (A, "d", "edge"),
            (A, "a", "edge"),
        ],
    );
    for (name, stage) in [("a", 0), ("b", 1), ("c", 1), ("d", 2)] {
        assert_eq!(g.stage(c(&g, name)), stage, "stage of {name}");
    }
    assert_eq!(names(&g, g.triggers(c(&g, "a")).iter().copied()), ["b", "c"]);
    assert_eq!(names(&g, g.triggered_by(c(&g, "d")).iter().copied()), ["b", "c"]);
    assert_eq!(names(&g, g.entry_points()), ["a"]);
    assert_eq!(names(&g, g.exit_points()), ["d"]);
    let order = names(&g, g.topological_order().iter().copied());
    assert_eq!(order.first().map(String::as_str), Some("a"));
    assert_eq!(order.last().map(String::as_str), Some("d"));

    // Both accessors of `wide` are at stage 1: either may open it.
    let wide = g.span(m(&g, "wide"));
    assert_eq!((wide.first_stage, wide.last_stage), (1, 1));
    assert_eq!(names(&g, wide.opened_by.iter().copied()), ["c", "b"]);
    assert_eq!(names(&g, wide.closed_after.iter().copied()), ["c", "b"]);

    let edge = g.span(m(&g, "edge"));
    assert_eq!((edge.first_stage, edge.last_stage), (0, 2));
    assert_eq!(names(&g, edge.opened_by.iter().copied()), ["a"]);
    assert_eq!(names(&g, edge.closed_after.iter().copied()), ["d", "a"]);
}

#[test]
fn uneven_diamond_stage_is_the_longest_path() {
    // a → b → d and a → c → e → d: d waits for the longer arm.
    let g = graph(
        &["a", "b", "c", "d", "e"],
        &["m"],
        &[(T, "a", "b"), (T, "b", "d"), (T, "a", "c"), (T, "c", "e"), (T, "e", "d"), (A, "b", "m"), (A, "d", "m")],
    );
    for (name, stage) in [("a", 0), ("b", 1), ("c", 1), ("e", 2), ("d", 3)] {
        assert_eq!(g.stage(c(&g, name)), stage, "stage of {name}");
    }
    let span = g.span(m(&g, "m"));
    assert_eq!((span.first_stage, span.last_stage), (1, 3));
    assert_eq!(names(&g, span.opened_by.iter().copied()), ["b"]);
}

#[test]
fn independent_chains_have_several_entry_and_exit_points() {
    let g = graph(&["x", "y", "solo", "p", "q"], &[], &[(T, "x", "y"), (T, "q", "p")]);
    let entries: BTreeSet<String> = names(&g, g.entry_points()).into_iter().collect();
    let exits: BTreeSet<String> = names(&g, g.exit_points()).into_iter().collect();
    assert_eq!(entries, ["x", "solo", "q"].map(String::from).into());
    assert_eq!(exits, ["y", "solo", "p"].map(String::from).into());
    assert_eq!(g.stage(c(&g, "p")), 1);
    assert_eq!(g.stage(c(&g, "solo")), 0);
}

#[test]
fn repeated_access_and_message_edges_count_once() {
    let g = graph(&["a", "b"], &["m"], &[(A, "a", "m"), (A, "a", "m"), (M, "a", "b"), (M, "b", "a"), (A, "b", "m")]);
    assert_eq!(g.accesses(c(&g, "a")), [m(&g, "m")]);
    assert_eq!(names(&g, g.accessors(m(&g, "m")).iter().copied()), ["a", "b"]);
    assert_eq!(names(&g, g.span(m(&g, "m")).closed_after.iter().copied()), ["a", "b"]);
    // Message edges are symmetric.
    assert_eq!(names(&g, g.peers(c(&g, "a")).iter().copied()), ["b"]);
    assert_eq!(names(&g, g.peers(c(&g, "b")).iter().copied()), ["a"]);
    // Message edges do not order components: both are entry points at stage 0.
    assert_eq!(names(&g, g.entry_points()), ["a", "b"]);
    // The template keeps every edge, repeated or not.
    assert_eq!(g.to_template().edges.len(), 5);
}

#[test]
fn find_tells_compute_from_memory() {
    let g = graph(&["a"], &["m"], &[(A, "a", "m")]);
    assert_eq!(g.find("a"), Some(ComponentRef::Compute(ComputeId(0))));
    assert_eq!(g.find("m"), Some(ComponentRef::Memory(MemoryId(0))));
    assert_eq!(g.find("nope"), None);
}

fn cycle_of(t: &Template) -> (usize, Vec<String>) {
    match ResourceGraph::from_template(t) {
        Err(GraphError::TriggerCycle { edge, cycle }) => (edge, cycle),
        other => panic!("expected a trigger cycle, got {other:?}"),
    }
}

#[test]
fn cycle_error_names_the_cycle_in_trigger_order() {
    // x leads into the cycle a → b → c → a and d leaves it; neither is on it.
    let t = template(
        &["x", "a", "b", "c", "d"],
        &[],
        &[(T, "x", "a"), (T, "a", "b"), (T, "b", "c"), (T, "c", "a"), (T, "c", "d")],
    );
    let (edge, cycle) = cycle_of(&t);
    assert_eq!(cycle, ["a", "b", "c", "a"]);
    assert_eq!(edge, 3, "c → a is the cycle's edge written last");
    let err = ResourceGraph::from_template(&t).expect_err("a cycle");
    assert_eq!(err.to_string(), "edge #3 (trigger) closes a trigger cycle: a → b → c → a");
    assert_eq!(err.site(), (Site::Edge { index: 3 }, None));
}

#[test]
fn cycle_error_leaves_out_components_downstream_of_the_cycle() {
    // The first component still waiting for a trigger, `d`, is not on the cycle.
    let t = template(&["d", "c", "b", "a"], &[], &[(T, "c", "d"), (T, "b", "c"), (T, "c", "b"), (T, "a", "b")]);
    let (edge, cycle) = cycle_of(&t);
    assert_eq!(cycle, ["b", "c", "b"]);
    assert_eq!(edge, 2);
}

#[test]
fn cycle_error_on_a_self_trigger() {
    let t = template(&["a", "b"], &[], &[(T, "a", "b"), (T, "b", "b")]);
    assert_eq!(cycle_of(&t), (1, vec!["b".to_owned(), "b".to_owned()]));
}

#[test]
fn cycle_error_rotates_to_end_with_the_last_written_edge() {
    let t = template(&["a", "b", "c"], &[], &[(T, "c", "a"), (T, "b", "c"), (T, "a", "b")]);
    let (edge, cycle) = cycle_of(&t);
    assert_eq!(edge, 2);
    assert_eq!(cycle, ["b", "c", "a", "b"]);
}

/// A random DAG: `n` components named `c0`…, trigger edges that go forward in
/// a random permutation (so the graph is acyclic whatever the index order),
/// memory components each accessed by some components, all edges shuffled.
fn dag() -> impl Strategy<Value = Template> {
    (1usize..10, 0usize..4)
        .prop_flat_map(|(n, memories)| {
            (
                Just(n),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                prop::collection::vec((0..n, 0..n), 0..3 * n),
                prop::collection::vec(prop::collection::vec(0..n, 1..4), memories),
            )
        })
        .prop_flat_map(|(n, permutation, pairs, accessors)| {
            let name = |i: usize| format!("c{i}");
            let mut edges: Vec<EdgeSpec> = pairs
                .into_iter()
                .filter(|(x, y)| x != y)
                .map(|(x, y)| (x.min(y), x.max(y)))
                .collect::<BTreeSet<_>>() // a trigger edge may appear once
                .into_iter()
                .map(|(x, y)| EdgeSpec { kind: T, from: name(permutation[x]), to: name(permutation[y]) })
                .collect();
            for (i, accessors) in accessors.iter().enumerate() {
                for &a in accessors {
                    edges.push(EdgeSpec { kind: A, from: name(a), to: format!("m{i}") });
                }
            }
            let t = Template {
                app: "dag".to_owned(),
                budget_mib: 64,
                compute: (0..n).map(|i| compute_spec(&name(i))).collect(),
                memory: (0..accessors.len())
                    .map(|i| MemorySpec { name: format!("m{i}"), initial_mib: 1, increment_mib: 1 })
                    .collect(),
                edges: Vec::new(),
            };
            (Just(t), Just(edges).prop_shuffle())
        })
        .prop_map(|(mut t, edges)| {
            t.edges = edges;
            t
        })
}

proptest! {
    #[test]
    fn topological_order_and_stages_respect_triggers(t in dag()) {
        let g = ResourceGraph::from_template(&t).expect("a DAG is valid");
        let n = g.compute_components().len();
        let order = g.topological_order();
        let mut position = vec![usize::MAX; n];
        for (i, id) in order.iter().enumerate() {
            prop_assert_eq!(position[id.0 as usize], usize::MAX, "{} appears twice", id);
            position[id.0 as usize] = i;
        }
        prop_assert_eq!(order.len(), n);
        for edge in t.edges.iter().filter(|e| e.kind == T) {
            let (from, to) = (c(&g, &edge.from), c(&g, &edge.to));
            prop_assert!(g.stage(from) < g.stage(to), "stage {} → {}", edge.from, edge.to);
            prop_assert!(position[from.0 as usize] < position[to.0 as usize], "order {} → {}", edge.from, edge.to);
        }
        for id in (0..n as u32).map(ComputeId) {
            // The stage is the longest trigger path from an entry point.
            let expected = g.triggered_by(id).iter().map(|&p| g.stage(p) + 1).max().unwrap_or(0);
            prop_assert_eq!(g.stage(id), expected);
            prop_assert_eq!(g.entry_points().any(|e| e == id), g.triggered_by(id).is_empty());
            prop_assert_eq!(g.exit_points().any(|e| e == id), g.triggers(id).is_empty());
        }
        for id in (0..g.memory_components().len() as u32).map(MemoryId) {
            let span = g.span(id);
            let accessors: BTreeSet<ComputeId> = t
                .edges
                .iter()
                .filter(|e| e.kind == A && e.to == g.memory(id).name)
                .map(|e| c(&g, &e.from))
                .collect();
            let stages: Vec<u32> = accessors.iter().map(|&a| g.stage(a)).collect();
            prop_assert_eq!(Some(span.first_stage), stages.iter().copied().min());
            prop_assert_eq!(Some(span.last_stage), stages.iter().copied().max());
            prop_assert_eq!(span.closed_after.iter().copied().collect::<BTreeSet<_>>(), accessors.clone());
            prop_assert_eq!(span.closed_after.len(), accessors.len());
            let opened: BTreeSet<ComputeId> =
                accessors.iter().copied().filter(|&a| g.stage(a) == span.first_stage).collect();
            prop_assert_eq!(span.opened_by.iter().copied().collect::<BTreeSet<_>>(), opened);
        }
    }

    #[test]
    fn a_back_edge_is_reported_as_a_real_cycle(t in dag(), pick in any::<prop::sample::Index>()) {
        let g = ResourceGraph::from_template(&t).expect("a DAG is valid");
        let triggers: Vec<&EdgeSpec> = t.edges.iter().filter(|e| e.kind == T).collect();
        prop_assume!(!triggers.is_empty());
        let back = triggers[pick.index(triggers.len())];
        let mut cyclic = t.clone();
        cyclic.edges.push(EdgeSpec { kind: T, from: back.to.clone(), to: back.from.clone() });
        let (edge, cycle) = cycle_of(&cyclic);
        prop_assert!(cycle.len() >= 3, "{:?}", cycle);
        prop_assert_eq!(cycle.first(), cycle.last());
        let members: BTreeSet<&String> = cycle.iter().collect();
        prop_assert_eq!(members.len(), cycle.len() - 1, "a member repeats: {:?}", cycle);
        for pair in cycle.windows(2) {
            prop_assert!(
                cyclic.edges.iter().any(|e| e.kind == T && e.from == pair[0] && e.to == pair[1]),
                "no trigger edge {} → {} in {:?}", pair[0], pair[1], cycle
            );
        }
        let closing = &cyclic.edges[edge];
        prop_assert_eq!(closing.kind, T);
        prop_assert_eq!(&closing.from, &cycle[cycle.len() - 2]);
        prop_assert_eq!(&closing.to, &cycle[cycle.len() - 1]);
        // The original graph is a DAG: the new edge must be on every cycle.
        prop_assert_eq!(edge, cyclic.edges.len() - 1);
        prop_assert!(g.stage(c(&g, &back.from)) < g.stage(c(&g, &back.to)));
    }
}

#[test]
fn a_repeated_trigger_edge_is_refused() {
    let text = r#"{"app":"t","budget_mib":64,
      "compute":[{"name":"a","code":"x"},{"name":"b","code":"x"}],
      "edges":[{"kind":"trigger","from":"a","to":"b"},{"kind":"trigger","from":"a","to":"b"}]}"#;
    let error = crate::template::parse(text).expect_err("the second edge repeats the first");
    assert_eq!(error.graph_error(), Some(&GraphError::DuplicateTrigger { edge: 1, from: "a".into(), to: "b".into() }));
}
