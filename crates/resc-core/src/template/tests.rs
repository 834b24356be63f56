use super::*;
use crate::graph::{ComponentKind, EdgeEnd, Site};
use crate::ids::{ComputeId, MemoryId};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// A valid template that the error tests below break one edit at a time.
const BASE: &str = r#"{
  "app": "shop",
  "budget_mib": 512,
  "compute": [
    { "name": "ingest", "code": "shop.ingest", "cpu": 0.5, "parallelism": 2 },
    { "name": "price", "code": "shop.price" },
    { "name": "report", "code": "shop.report", "cpu": 2 }
  ],
  "memory": [
    { "name": "orders", "initial_mib": 64, "increment_mib": 32 },
    { "name": "totals", "initial_mib": 8, "increment_mib": 8 }
  ],
  "edges": [
    { "kind": "trigger", "from": "ingest", "to": "price" },
    { "kind": "trigger", "from": "price", "to": "report" },
    { "kind": "access", "from": "ingest", "to": "orders" },
    { "kind": "access", "from": "price", "to": "orders" },
    { "kind": "access", "from": "price", "to": "totals" },
    { "kind": "message", "from": "price", "to": "report" },
    { "kind": "access", "from": "report", "to": "totals" }
  ]
}"#;

const LR: &str = include_str!("../../../../examples/lr.json");
const CHAIN: &str = include_str!("../../../../examples/chain.json");
const BAD_UNKNOWN_EDGE: &str = include_str!("../../../../examples/bad_unknown_edge.json");
const SCHEMA_FILE: &str = include_str!("../../../../docs/template.schema.json");
const GUIDE: &str = include_str!("../../../../docs/template.md");

/// `BASE` with its only occurrence of `from` replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "`{from}` must occur exactly once in BASE");
    BASE.replacen(from, to, 1)
}

/// 1-based line and column, in characters, of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (i, ch) in text.char_indices() {
        if i >= offset {
            break;
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Line and column of `target` inside the only occurrence of `context` in `text`.
fn locate(text: &str, context: &str, target: &str) -> (usize, usize) {
    let mut found = text.match_indices(context);
    let Some((start, _)) = found.next() else { panic!("`{context}` is not in the text") };
    assert!(found.next().is_none(), "`{context}` occurs more than once");
    let Some(within) = context.find(target) else { panic!("`{target}` is not in `{context}`") };
    line_col(text, start + within)
}

fn at(err: &TemplateError) -> (usize, usize) {
    (err.location().line, err.location().column)
}

/// Parses text that must be refused by validation; returns both errors.
fn invalid(text: &str) -> (TemplateError, GraphError) {
    match parse(text) {
        Err(err) => {
            let Some(graph_error) = err.graph_error().cloned() else { panic!("not a validation error: {err:?}") };
            (err, graph_error)
        }
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

fn compute_site(index: usize, name: &str) -> Site {
    Site::Compute { index, name: name.to_owned() }
}

fn memory_site(index: usize, name: &str) -> Site {
    Site::Memory { index, name: name.to_owned() }
}

#[test]
fn base_is_valid_and_defaults_apply() {
    let graph = parse(BASE).expect("BASE is valid");
    assert_eq!(graph.app(), "shop");
    assert_eq!(graph.budget_bytes(), 512 << 20);
    let compute: Vec<(&str, u32, u32)> =
        graph.compute_components().iter().map(|c| (c.name.as_str(), c.millicores, c.parallelism)).collect();
    assert_eq!(compute, [("ingest", 500, 2), ("price", 1000, 1), ("report", 2000, 1)]);
    let memory: Vec<(&str, u64, u64)> =
        graph.memory_components().iter().map(|m| (m.name.as_str(), m.initial_bytes, m.increment_bytes)).collect();
    assert_eq!(memory, [("orders", 64 << 20, 32 << 20), ("totals", 8 << 20, 8 << 20)]);
    assert_eq!(graph.peers(ComputeId(1)), [ComputeId(2)]);
    // The defaults are written out explicitly when the graph is turned back into a template.
    let template = graph.to_template();
    assert_eq!(template.compute[1].cpu, 1.0);
    assert_eq!(template.compute[1].parallelism, 1);
    assert_eq!(parse(&template.to_json()).expect("round trip").to_template(), template);
}

#[test]
fn memory_and_edges_may_be_left_out() {
    let graph = parse(
        "{\n  \"app\": \"tiny\",\n  \"budget_mib\": 1,\n  \"compute\": [{ \"name\": \"f\", \"code\": \"t.f\" }]\n}",
    )
    .expect("valid");
    assert!(graph.memory_components().is_empty());
    assert_eq!(graph.entry_points().collect::<Vec<_>>(), [ComputeId(0)]);
}

// ---- validation errors: kind, line/column, component, field, message ----

#[test]
fn trigger_cycle() {
    let text = edit(
        r#"{ "kind": "message", "from": "price", "to": "report" }"#,
        r#"{ "kind": "trigger", "from": "report", "to": "ingest" }"#,
    );
    let (err, source) = invalid(&text);
    assert_eq!(
        source,
        GraphError::TriggerCycle { edge: 5, cycle: ["ingest", "price", "report", "ingest"].map(String::from).into() }
    );
    // The location is the edge that closes the cycle.
    assert_eq!(at(&err), locate(&text, r#"{ "kind": "trigger", "from": "report""#, "{"));
    assert_eq!(at(&err), (19, 5));
    assert_eq!((err.component(), err.field()), (None, None));
    assert_eq!(
        err.to_string(),
        "line 19, column 5: edge #5 (trigger) closes a trigger cycle: ingest → price → report → ingest"
    );
}

#[test]
fn unknown_component_in_to() {
    let text = edit(r#""from": "price", "to": "totals""#, r#""from": "price", "to": "total""#);
    let (err, source) = invalid(&text);
    assert_eq!(
        source,
        GraphError::UnknownComponent { edge: 4, kind: EdgeKind::Access, end: EdgeEnd::To, name: "total".into() }
    );
    assert_eq!(at(&err), locate(&text, r#""to": "total""#, r#""total""#));
    assert_eq!((err.component(), err.field()), (None, Some("to")));
    assert_eq!(err.to_string(), "line 18, column 48: edge #4 (access): `to` names unknown component `total`");
}

#[test]
fn unknown_component_in_from() {
    let text = edit(r#""from": "ingest", "to": "price""#, r#""from": "ingset", "to": "price""#);
    let (err, source) = invalid(&text);
    assert_eq!(
        source,
        GraphError::UnknownComponent { edge: 0, kind: EdgeKind::Trigger, end: EdgeEnd::From, name: "ingset".into() }
    );
    assert_eq!(at(&err), locate(&text, r#""ingset""#, r#""ingset""#));
    assert_eq!((err.component(), err.field()), (None, Some("from")));
    let message = err.to_string();
    for part in ["edge #0", "(trigger)", "`from`", "`ingset`"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn duplicate_name_across_compute_and_memory() {
    let text = edit(r#"{ "name": "totals","#, r#"{ "name": "price","#);
    let (err, source) = invalid(&text);
    assert_eq!(
        source,
        GraphError::DuplicateName {
            name: "price".into(),
            first: compute_site(1, "price"),
            second: memory_site(1, "price")
        }
    );
    assert_eq!(at(&err), locate(&text, r#"{ "name": "price", "initial_mib""#, r#""price""#));
    assert_eq!((err.component(), err.field()), (Some("price"), Some("name")));
    assert_eq!(
        err.to_string(),
        "line 11, column 15: memory component `price`: the name `price` is already used by the compute component `price`"
    );
}

#[test]
fn duplicate_name_among_compute() {
    let text = edit(r#"{ "name": "report", "code""#, r#"{ "name": "ingest", "code""#);
    let (err, source) = invalid(&text);
    assert_eq!(
        source,
        GraphError::DuplicateName {
            name: "ingest".into(),
            first: compute_site(0, "ingest"),
            second: compute_site(2, "ingest")
        }
    );
    assert_eq!(at(&err), locate(&text, r#""ingest", "code": "shop.report""#, r#""ingest""#));
    assert_eq!((err.component(), err.field()), (Some("ingest"), Some("name")));
}

#[test]
fn memory_component_nothing_accesses() {
    let text = edit(
        r#"{ "name": "totals", "initial_mib": 8, "increment_mib": 8 }"#,
        "{ \"name\": \"totals\", \"initial_mib\": 8, \"increment_mib\": 8 },\n    { \"name\": \"spare\", \"initial_mib\": 1, \"increment_mib\": 1 }",
    );
    let (err, source) = invalid(&text);
    assert_eq!(source, GraphError::UnaccessedMemory { index: 2, name: "spare".into() });
    assert_eq!(at(&err), locate(&text, r#""spare""#, r#""spare""#));
    assert_eq!(at(&err), (12, 15));
    assert_eq!((err.component(), err.field()), (Some("spare"), Some("name")));
    assert!(err.to_string().contains("memory component `spare` is not accessed"), "{err}");
}

#[test]
fn zero_sizes() {
    struct Case {
        from: &'static str,
        to: &'static str,
        site: Site,
        field: &'static str,
        context: &'static str,
    }
    let cases = [
        Case {
            from: r#""initial_mib": 64"#,
            to: r#""initial_mib": 0"#,
            site: memory_site(0, "orders"),
            field: "initial_mib",
            context: r#""initial_mib": 0"#,
        },
        Case {
            from: r#""increment_mib": 32"#,
            to: r#""increment_mib": 0"#,
            site: memory_site(0, "orders"),
            field: "increment_mib",
            context: r#""increment_mib": 0"#,
        },
        Case {
            from: r#""parallelism": 2"#,
            to: r#""parallelism": 0"#,
            site: compute_site(0, "ingest"),
            field: "parallelism",
            context: r#""parallelism": 0"#,
        },
        Case {
            from: r#""cpu": 2"#,
            to: r#""cpu": 0"#,
            site: compute_site(2, "report"),
            field: "cpu",
            context: r#""cpu": 0 "#,
        },
        Case {
            from: r#""cpu": 2"#,
            to: r#""cpu": -1.5"#,
            site: compute_site(2, "report"),
            field: "cpu",
            context: r#""cpu": -1.5"#,
        },
        Case {
            from: r#""budget_mib": 512"#,
            to: r#""budget_mib": 0"#,
            site: Site::App,
            field: "budget_mib",
            context: r#""budget_mib": 0"#,
        },
    ];
    for case in cases {
        let text = edit(case.from, case.to);
        let (err, source) = invalid(&text);
        assert_eq!(source, GraphError::ZeroSize { site: case.site.clone(), field: case.field }, "{}", case.to);
        let value = case.to.rsplit(' ').next().unwrap_or_default();
        assert_eq!(at(&err), locate(&text, case.context, value), "{}", case.to);
        assert_eq!(err.component(), case.site.component(), "{}", case.to);
        assert_eq!(err.field(), Some(case.field), "{}", case.to);
        // The message names the component (or the application) and the field.
        assert!(
            err.to_string().ends_with(&format!("{}: `{}` must be larger than zero", case.site, case.field)),
            "{err}"
        );
    }
}

#[test]
fn inconsistent_sizes() {
    let text = edit(r#""initial_mib": 64"#, r#""initial_mib": 1024"#);
    let (err, source) = invalid(&text);
    let GraphError::InconsistentSize { site, field, reason } = &source else { panic!("{source:?}") };
    assert_eq!((site, *field), (&memory_site(0, "orders"), "initial_mib"));
    assert!(reason.contains("1024") && reason.contains("512"), "{reason}");
    assert_eq!(at(&err), locate(&text, r#""initial_mib": 1024"#, "1024"));
    assert_eq!((err.component(), err.field()), (Some("orders"), Some("initial_mib")));
    assert_eq!(
        err.to_string(),
        "line 10, column 40: memory component `orders`: `initial_mib` is 1024 MiB, above the application's budget_mib of 512 MiB"
    );

    let text = edit(r#""increment_mib": 8 }"#, r#""increment_mib": 513 }"#);
    let (err, source) = invalid(&text);
    assert!(matches!(source, GraphError::InconsistentSize { field: "increment_mib", .. }), "{source:?}");
    assert_eq!(at(&err), locate(&text, "513", "513"));
    assert_eq!(err.component(), Some("totals"));

    // CPU is counted in millicores: a fourth decimal cannot be honoured.
    for cpu in ["1.2345", "0.0005"] {
        let text = edit(r#""cpu": 2"#, &format!(r#""cpu": {cpu}"#));
        let (err, source) = invalid(&text);
        let GraphError::InconsistentSize { site, field, reason } = &source else { panic!("{source:?}") };
        assert_eq!((site, *field), (&compute_site(2, "report"), "cpu"));
        assert!(reason.contains("millicores"), "{reason}");
        assert_eq!(at(&err), locate(&text, cpu, cpu));
        assert_eq!((err.component(), err.field()), (Some("report"), Some("cpu")));
        assert!(err.to_string().contains("compute component `report`: `cpu`"), "{err}");
    }

    // A budget whose byte count does not fit in 64 bits.
    let text = edit(r#""budget_mib": 512"#, r#""budget_mib": 18446744073709551615"#);
    let (err, source) = invalid(&text);
    assert!(matches!(source, GraphError::InconsistentSize { site: Site::App, field: "budget_mib", .. }), "{source:?}");
    assert_eq!(at(&err), (3, 17));
}

#[test]
fn blank_code_is_refused() {
    let text = edit(r#""code": "shop.price""#, r#""code": " ""#);
    let (err, source) = invalid(&text);
    assert!(matches!(&source, GraphError::InconsistentSize { field: "code", .. }), "{source:?}");
    assert_eq!(at(&err), locate(&text, r#""code": " ""#, r#"" ""#));
    assert_eq!((err.component(), err.field()), (Some("price"), Some("code")));
}

#[test]
fn trigger_edge_into_memory() {
    let text = edit(
        r#"{ "kind": "trigger", "from": "price", "to": "report" }"#,
        r#"{ "kind": "trigger", "from": "price", "to": "totals" }"#,
    );
    let (err, source) = invalid(&text);
    assert_eq!(
        source,
        GraphError::WrongEdgeKind {
            edge: 1,
            kind: EdgeKind::Trigger,
            end: EdgeEnd::To,
            name: "totals".into(),
            expected: ComponentKind::Compute,
            found: ComponentKind::Memory,
        }
    );
    assert_eq!(at(&err), locate(&text, r#""trigger", "from": "price", "to": "totals""#, r#""totals""#));
    assert_eq!((err.component(), err.field()), (None, Some("to")));
    assert_eq!(
        err.to_string(),
        "line 15, column 49: edge #1 (trigger): `to` is `totals`, a memory component, but a trigger edge's `to` must be a compute component"
    );
}

#[test]
fn access_edge_to_compute() {
    let text = edit(r#""access", "from": "price", "to": "totals""#, r#""access", "from": "price", "to": "report""#);
    let (err, source) = invalid(&text);
    assert_eq!(
        source,
        GraphError::WrongEdgeKind {
            edge: 4,
            kind: EdgeKind::Access,
            end: EdgeEnd::To,
            name: "report".into(),
            expected: ComponentKind::Memory,
            found: ComponentKind::Compute,
        }
    );
    assert_eq!(at(&err), locate(&text, r#""access", "from": "price", "to": "report""#, r#""report""#));
    assert_eq!((err.component(), err.field()), (None, Some("to")));
    let message = err.to_string();
    for part in ["edge #4 (access)", "`report`", "a compute component", "must be a memory component"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn memory_component_as_from() {
    for kind in ["message", "access", "trigger"] {
        let text = edit(
            r#"{ "kind": "message", "from": "price", "to": "report" }"#,
            &format!(r#"{{ "kind": "{kind}", "from": "orders", "to": "report" }}"#),
        );
        let (err, source) = invalid(&text);
        let GraphError::WrongEdgeKind { edge, end, name, expected, found, .. } = &source else { panic!("{source:?}") };
        assert_eq!((*edge, *end, name.as_str()), (5, EdgeEnd::From, "orders"), "{kind}");
        assert_eq!((*expected, *found), (ComponentKind::Compute, ComponentKind::Memory), "{kind}");
        assert_eq!(at(&err), locate(&text, r#""from": "orders""#, r#""orders""#), "{kind}");
        assert_eq!((err.component(), err.field()), (None, Some("from")));
        assert!(
            err.to_string().contains(&format!("edge #5 ({kind}): `from` is `orders`, a memory component")),
            "{err}"
        );
    }
}

#[test]
fn message_edge_to_memory() {
    let text = edit(
        r#"{ "kind": "message", "from": "price", "to": "report" }"#,
        r#"{ "kind": "message", "from": "price", "to": "orders" }"#,
    );
    let (_, source) = invalid(&text);
    assert!(
        matches!(
            source,
            GraphError::WrongEdgeKind {
                edge: 5,
                kind: EdgeKind::Message,
                end: EdgeEnd::To,
                expected: ComponentKind::Compute,
                found: ComponentKind::Memory,
                ..
            }
        ),
        "{source:?}"
    );
}

#[test]
fn invalid_names() {
    let text = edit(r#"{ "name": "price","#, r#"{ "name": "price list","#);
    let (err, source) = invalid(&text);
    assert_eq!(source, GraphError::InvalidName { site: compute_site(1, "price list"), name: "price list".into() });
    assert_eq!(at(&err), locate(&text, r#""price list""#, r#""price list""#));
    assert_eq!((err.component(), err.field()), (Some("price list"), Some("name")));
    assert!(
        err.to_string().starts_with("line 6, column 15: compute component `price list`: name \"price list\""),
        "{err}"
    );

    let text = edit(r#""app": "shop""#, r#""app": "my shop!""#);
    let (err, source) = invalid(&text);
    assert_eq!(source, GraphError::InvalidName { site: Site::App, name: "my shop!".into() });
    assert_eq!(at(&err), (2, 10));
    assert_eq!((err.component(), err.field()), (None, Some("app")));

    for name in ["", "é", "a/b", &"x".repeat(65)] {
        let text = edit(r#"{ "name": "orders","#, &format!(r#"{{ "name": "{name}","#));
        let (err, source) = invalid(&text);
        assert_eq!(source, GraphError::InvalidName { site: memory_site(0, name), name: name.into() });
        assert_eq!(at(&err), (10, 15), "{name:?}");
        assert_eq!(err.field(), Some("name"));
    }
    // 64 characters is the longest name allowed.
    let long = "x".repeat(64);
    let text = edit(r#""app": "shop""#, &format!(r#""app": "{long}""#));
    assert_eq!(parse(&text).expect("64 characters").app(), long);
}

#[test]
fn no_compute_component() {
    let text = "{\n  \"app\": \"empty\",\n  \"budget_mib\": 64,\n  \"compute\": []\n}";
    let (err, source) = invalid(text);
    assert_eq!(source, GraphError::NoCompute);
    assert_eq!(at(&err), (4, 14));
    assert_eq!((err.component(), err.field()), (None, Some("compute")));
    assert_eq!(err.to_string(), "line 4, column 14: the application has no compute component");
}

#[test]
fn columns_count_characters_not_bytes() {
    // `ü` is two bytes in UTF-8 but one column.
    let text = edit(r#""code": "shop.price""#, r#""code": "shöp.prüce", "cpu": 1.0001"#);
    let (err, _) = invalid(&text);
    assert_eq!(at(&err), locate(&text, "1.0001", "1.0001"));
    assert_eq!(at(&err), (6, 53));

    let text = edit(r#""code": "shop.price""#, r#""code": "shöp.prüce", "cpu": "two""#);
    let err = parse(&text).expect_err("wrong type");
    assert_eq!(at(&err), locate(&text, r#""two""#, r#""two""#));

    let text = edit(r#""code": "shop.price""#, r#""code": "shöp.prüce" "cpu": 2"#);
    let err = parse(&text).expect_err("missing comma");
    assert_eq!(at(&err), locate(&text, r#""shöp.prüce" "cpu""#, r#""cpu""#));
}

// ---- shape errors ----

#[test]
fn missing_field() {
    let text = edit(r#"{ "name": "price", "code": "shop.price" }"#, r#"{ "name": "price" }"#);
    let err = parse(&text).expect_err("missing code");
    let TemplateError::Shape { path, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(path, "compute[1]");
    assert_eq!(message, "missing field `code`");
    assert_eq!((err.component(), err.field()), (Some("price"), Some("code")));
    assert_eq!(at(&err), locate(&text, r#"{ "name": "price" }"#, "{"));
    assert_eq!(
        err.to_string(),
        "line 6, column 5: component `price`, field `code`: missing field `code` (at `compute[1]`)"
    );

    let text = BASE.replacen("  \"app\": \"shop\",\n", "", 1);
    let err = parse(&text).expect_err("missing app");
    assert!(matches!(err, TemplateError::Shape { .. }), "{err:?}");
    assert_eq!((err.component(), err.field()), (None, Some("app")));
}

#[test]
fn unknown_field() {
    let text = edit(r#""increment_mib": 32 }"#, r#""increment_mib": 32, "shrink_mib": 4 }"#);
    let err = parse(&text).expect_err("unknown field");
    let TemplateError::Shape { path, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(path, "memory[0].shrink_mib");
    assert!(message.starts_with("unknown field `shrink_mib`, expected one of"), "{message}");
    assert_eq!((err.component(), err.field()), (Some("orders"), Some("shrink_mib")));
    // The location is the unknown key.
    assert_eq!(at(&err), locate(&text, r#""shrink_mib""#, r#""shrink_mib""#));

    let text = edit(r#""budget_mib": 512,"#, r#""budget_mib": 512, "budget": 1,"#);
    let err = parse(&text).expect_err("unknown top-level field");
    assert_eq!((err.component(), err.field()), (None, Some("budget")));
    assert_eq!(at(&err), (3, 22));
}

#[test]
fn wrong_type() {
    let text = edit(
        r#"{ "name": "price", "code": "shop.price" }"#,
        r#"{ "name": "price", "code": "shop.price", "cpu": "two" }"#,
    );
    let err = parse(&text).expect_err("cpu is a string");
    let TemplateError::Shape { path, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(path, "compute[1].cpu");
    assert!(message.starts_with("invalid type: string \"two\""), "{message}");
    assert_eq!((err.component(), err.field()), (Some("price"), Some("cpu")));
    assert_eq!(at(&err), locate(&text, r#""two""#, r#""two""#));
    assert_eq!(at(&err).0, 6);

    let text = edit(r#""budget_mib": 512"#, r#""budget_mib": "lots""#);
    let err = parse(&text).expect_err("budget is a string");
    assert!(matches!(err, TemplateError::Shape { .. }), "{err:?}");
    assert_eq!((err.component(), err.field(), at(&err)), (None, Some("budget_mib"), (3, 17)));

    let text = edit(r#""parallelism": 2"#, r#""parallelism": -2"#);
    let err = parse(&text).expect_err("negative parallelism");
    assert_eq!((err.component(), err.field()), (Some("ingest"), Some("parallelism")));
    assert_eq!(at(&err), locate(&text, "-2", "-2"));

    let text = edit(r#""kind": "message""#, r#""kind": "messages""#);
    let err = parse(&text).expect_err("unknown edge kind");
    let TemplateError::Shape { path, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(path, "edges[5].kind");
    assert!(message.starts_with("unknown variant `messages`"), "{message}");
    assert_eq!((err.component(), err.field()), (None, Some("kind")));
    assert_eq!(at(&err), locate(&text, r#""messages""#, r#""messages""#));
}

// ---- syntax errors ----

#[test]
fn truncated_json() {
    let cut = BASE.find(r#"{ "name": "totals""#).unwrap_or_default();
    let text = &BASE[..cut];
    let err = parse(text).expect_err("truncated");
    assert!(matches!(err, TemplateError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains("EOF while parsing"), "{err}");
    assert_eq!(err.location().line, text.lines().count());
    assert_eq!((err.component(), err.field()), (None, None));
}

#[test]
fn syntax_error_mid_text() {
    let text = edit(r#""orders", "initial_mib""#, r#""orders" "initial_mib""#);
    let err = parse(&text).expect_err("missing comma");
    let TemplateError::Syntax { message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(message, "expected `,` or `}`");
    assert_eq!(at(&err), locate(&text, r#""orders" "initial_mib""#, r#""initial_mib""#));
    assert_eq!(err.location().line, 10);
}

#[test]
fn trailing_text() {
    let text = format!("{BASE}\n}}");
    let err = parse(&text).expect_err("trailing brace");
    let TemplateError::Syntax { message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(message, "trailing characters");
    assert_eq!(at(&err), (text.lines().count(), 1));
}

// ---- examples, guide and schema ----

#[test]
fn lr_example() {
    let graph = parse(LR).expect("examples/lr.json is valid");
    assert_eq!(graph.app(), "lr");
    let compute: Vec<&str> = graph.compute_components().iter().map(|c| c.name.as_str()).collect();
    let memory: Vec<&str> = graph.memory_components().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(compute, ["load", "split", "train", "validate"]);
    assert_eq!(memory, ["training_set", "validation_set", "weights"]);
    for (i, stage) in [0, 1, 2, 3].into_iter().enumerate() {
        assert_eq!(graph.stage(ComputeId(i as u32)), stage);
    }
    // The spans docs/template.md explains.
    let spans: Vec<(u32, u32, Vec<ComputeId>, Vec<ComputeId>)> = (0..3)
        .map(|m| {
            let span = graph.span(MemoryId(m));
            (span.first_stage, span.last_stage, span.opened_by.clone(), span.closed_after.clone())
        })
        .collect();
    let c = ComputeId;
    assert_eq!(
        spans,
        [
            (0, 2, vec![c(0)], vec![c(0), c(1), c(2)]),
            (1, 3, vec![c(1)], vec![c(1), c(3)]),
            (2, 3, vec![c(2)], vec![c(2), c(3)]),
        ]
    );
    assert_eq!(graph.to_template(), Template::from_json(LR).expect("reads"));
}

#[test]
fn chain_example() {
    let graph = parse(CHAIN).expect("examples/chain.json is valid");
    assert_eq!(graph.app(), "chain");
    assert!(graph.memory_components().is_empty());
    let compute = graph.compute_components();
    assert_eq!(compute.len(), 10);
    let order: Vec<&str> = graph.topological_order().iter().map(|&id| graph.compute(id).name.as_str()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("step{i}")).collect();
    assert_eq!(order, expected);
    assert_eq!(graph.entry_points().collect::<Vec<_>>(), [ComputeId(0)]);
    assert_eq!(graph.exit_points().collect::<Vec<_>>(), [ComputeId(9)]);
    for i in 0..10u32 {
        assert_eq!(graph.stage(ComputeId(i)), i);
        let next: &[ComputeId] = if i < 9 { &[ComputeId(i + 1)] } else { &[] };
        assert_eq!(graph.triggers(ComputeId(i)), next);
        assert_eq!(compute[i as usize].code, "chain.step");
    }
}

#[test]
fn bad_unknown_edge_example() {
    let err = parse(BAD_UNKNOWN_EDGE).expect_err("examples/bad_unknown_edge.json is invalid");
    assert_eq!(
        err.graph_error(),
        Some(&GraphError::UnknownComponent {
            edge: 6,
            kind: EdgeKind::Access,
            end: EdgeEnd::To,
            name: "trainig_set".into()
        })
    );
    assert_eq!(at(&err), locate(BAD_UNKNOWN_EDGE, r#""trainig_set""#, r#""trainig_set""#));
    // The guide quotes this message verbatim.
    let message = err.to_string();
    assert!(GUIDE.contains(&message), "docs/template.md must quote the error message {message:?}");
    // It is lr.json but for the misspelling.
    assert_eq!(BAD_UNKNOWN_EDGE.replace("trainig_set", "training_set"), LR);
}

#[test]
fn guide_shows_the_lr_example_verbatim() {
    assert!(GUIDE.contains(LR.trim_end()), "docs/template.md must include examples/lr.json verbatim");
}

#[test]
fn schema_file_is_up_to_date() {
    let generated = json_schema();
    if std::env::var("RESC_BLESS").as_deref() == Ok("1") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/template.schema.json");
        let text = serde_json::to_string_pretty(&generated).expect("a schema serializes") + "\n";
        std::fs::write(path, text).expect("write docs/template.schema.json");
        return;
    }
    let stored: serde_json::Value = serde_json::from_str(SCHEMA_FILE).expect("docs/template.schema.json is JSON");
    assert!(
        stored == generated,
        "docs/template.schema.json is out of date; regenerate it with\n  \
         RESC_BLESS=1 cargo test -p resc-core --lib template::tests::schema_file_is_up_to_date"
    );
}

#[test]
fn schema_describes_the_format() {
    let schema = json_schema();
    let keys = |pointer: &str| -> BTreeSet<String> {
        schema.pointer(pointer).and_then(|v| v.as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default()
    };
    let set = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<String>>();
    assert_eq!(keys("/properties"), set(&["app", "budget_mib", "compute", "memory", "edges"]));
    assert_eq!(keys("/$defs/ComputeSpec/properties"), set(&["name", "code", "cpu", "parallelism"]));
    assert_eq!(keys("/$defs/MemorySpec/properties"), set(&["name", "initial_mib", "increment_mib"]));
    assert_eq!(keys("/$defs/EdgeSpec/properties"), set(&["kind", "from", "to"]));
    assert_eq!(schema["required"], serde_json::json!(["app", "budget_mib", "compute"]));
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    assert_eq!(schema["$defs"]["ComputeSpec"]["required"], serde_json::json!(["name", "code"]));
    assert_eq!(schema["$defs"]["ComputeSpec"]["properties"]["cpu"]["default"], serde_json::json!(1.0));
    assert_eq!(schema["$defs"]["ComputeSpec"]["properties"]["parallelism"]["default"], serde_json::json!(1));
    assert_eq!(schema["properties"]["budget_mib"]["minimum"], serde_json::json!(1));
    let kinds: BTreeSet<String> = schema["$defs"]["EdgeKind"]["oneOf"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k["const"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert_eq!(kinds, set(&["trigger", "access", "message"]));
    assert_eq!(schema["$defs"]["MemorySpec"]["properties"]["name"]["pattern"], serde_json::json!("^[A-Za-z0-9_.-]+$"));
}

// ---- round trips ----

/// A random valid template: unique names, CPU in whole millicores, a random
/// trigger DAG (edges only from lower to higher index), at least one access
/// edge per memory component, some message edges, edges in random order.
fn valid_template() -> impl Strategy<Value = Template> {
    let name = "[A-Za-z0-9_.-]{1,16}";
    (1usize..7, 0usize..5)
        .prop_flat_map(move |(n_compute, n_memory)| {
            (
                name,
                1u64..=1 << 20,
                prop::collection::btree_set(name, n_compute + n_memory),
                prop::collection::vec(("[a-z]{1,6}\\.[a-z_]{1,10}", 1u32..=64_000, 1u32..=8), n_compute),
                prop::collection::vec((any::<u64>(), any::<u64>()), n_memory),
                prop::collection::vec((0..n_compute, 0..n_compute), 0..2 * n_compute),
                prop::collection::vec((0..n_compute, 0..n_memory.max(1)), n_memory..3 * n_memory + 1),
                prop::collection::vec((0..n_compute, 0..n_compute), 0..n_compute),
            )
        })
        .prop_flat_map(|(app, budget_mib, names, compute, memory, triggers, accesses, messages)| {
            // Shuffle the names so that compute and memory names are mixed.
            let names: Vec<String> = names.into_iter().collect();
            (Just((app, budget_mib, compute, memory, triggers, accesses, messages)), Just(names).prop_shuffle())
        })
        .prop_flat_map(|((app, budget_mib, compute, memory, triggers, accesses, messages), names)| {
            let (compute_names, memory_names) = names.split_at(compute.len());
            let compute: Vec<ComputeSpec> = compute
                .into_iter()
                .zip(compute_names)
                .map(|((code, millicores, parallelism), name)| ComputeSpec {
                    name: name.clone(),
                    code,
                    cpu: f64::from(millicores) / 1000.0,
                    parallelism,
                })
                .collect();
            let memory: Vec<MemorySpec> = memory
                .into_iter()
                .zip(memory_names)
                .map(|((initial, increment), name)| MemorySpec {
                    name: name.clone(),
                    initial_mib: initial % budget_mib + 1,
                    increment_mib: increment % budget_mib + 1,
                })
                .collect();
            let edge = |kind, from: &str, to: &str| EdgeSpec { kind, from: from.to_owned(), to: to.to_owned() };
            let mut edges: Vec<EdgeSpec> = triggers
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (a.min(b), a.max(b)))
                .collect::<std::collections::BTreeSet<_>>() // a trigger edge may appear once
                .into_iter()
                .map(|(a, b)| edge(EdgeKind::Trigger, &compute[a].name, &compute[b].name))
                .collect();
            // The first n_memory accesses give every memory component an accessor.
            let n_memory = memory.len();
            for (i, (c, m)) in accesses.into_iter().enumerate() {
                let m = if i < n_memory { i } else { m % n_memory.max(1) };
                if let Some(target) = memory.get(m) {
                    edges.push(edge(EdgeKind::Access, &compute[c].name, &target.name));
                }
            }
            edges.extend(
                messages
                    .into_iter()
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| edge(EdgeKind::Message, &compute[a].name, &compute[b].name)),
            );
            let template = Template { app, budget_mib, compute, memory, edges: Vec::new() };
            (Just(template), Just(edges).prop_shuffle())
        })
        .prop_map(|(mut template, edges)| {
            template.edges = edges;
            template
        })
}

proptest! {
    #[test]
    fn template_graph_template_round_trip(t in valid_template()) {
        let graph = ResourceGraph::from_template(&t);
        prop_assert!(graph.is_ok(), "refused: {:?}\n{}", graph.err(), t.to_json());
        let graph = graph.expect("checked");
        prop_assert_eq!(&graph.to_template(), &t);
        prop_assert_eq!(t.to_graph(), Ok(graph));
    }

    #[test]
    fn text_round_trip(t in valid_template()) {
        let text = t.to_json();
        let graph = parse(&text);
        prop_assert!(graph.is_ok(), "refused: {:?}\n{}", graph.err(), text);
        prop_assert_eq!(graph.expect("checked").to_template(), t);
    }

    #[test]
    fn every_graph_error_points_into_the_text(t in valid_template(), which in 0usize..4) {
        // Break a valid template in one of several ways; the error must point
        // at a real line of the text and name the component it is about.
        let mut broken = t.clone();
        let expected_component = match which {
            0 => {
                broken.compute[0].parallelism = 0;
                Some(broken.compute[0].name.clone())
            }
            1 => {
                broken.compute[0].cpu = 0.0005;
                Some(broken.compute[0].name.clone())
            }
            2 => {
                broken.edges.push(EdgeSpec {
                    kind: EdgeKind::Access,
                    from: broken.compute[0].name.clone(),
                    to: "no such component".into(),
                });
                None
            }
            _ => {
                broken.budget_mib = 0;
                None
            }
        };
        let text = broken.to_json();
        let err = parse(&text).expect_err("broken");
        prop_assert!(err.graph_error().is_some(), "{:?}", err);
        prop_assert_eq!(err.component(), expected_component.as_deref());
        let location = err.location();
        let line = text.lines().nth(location.line - 1).unwrap_or_default();
        let rest: String = line.chars().skip(location.column - 1).collect();
        let field = err.field().unwrap_or_default();
        // The pretty-printer writes one `"field": value` per line: the column is the value's.
        let key = format!("\"{field}\": ");
        prop_assert!(line.contains(&key) && line.trim_start().starts_with(&key), "{:?} at {}: {:?}", err, location, line);
        prop_assert_eq!(line.chars().count() - rest.chars().count(), line.find(&key).unwrap_or_default() + key.len());
    }
}
