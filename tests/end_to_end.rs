//! End-to-end behaviour of the embedded platform through the facade.

use resc::core::memory::CacheConfig;
use resc::core::resources::{KIB, MIB};
use resc::core::runtime::{CodeError, Context};
use resc::core::sandbox::CodeRegistry;
use resc::core::size_class::SizeClasses;
use resc::core::template;
use resc::reference::alloc_meter::{PlatformAllocator, PLATFORM_ALLOCATOR};
use resc::reference::apps::{self, lr::LrJob, lr::LrResult, LR_TEMPLATE};
use resc::reference::embedded::{EmbeddedPlatform, PlatformConfig, PlatformError};
use resc::reference::metering::Side;

#[global_allocator]
static ALLOCATOR: PlatformAllocator = PLATFORM_ALLOCATOR;

fn small_config() -> PlatformConfig {
    PlatformConfig {
        size_classes: SizeClasses::powers_of_two(MIB, 16 * MIB, 4 * MIB).expect("valid classes"),
        cache: CacheConfig::new(256 * KIB, 4 * KIB),
        ..PlatformConfig::default()
    }
}

fn lr_platform() -> EmbeddedPlatform {
    let mut registry = CodeRegistry::new();
    apps::lr::register(&mut registry);
    EmbeddedPlatform::new(small_config(), registry).expect("platform")
}

fn lr_job(bytes: u64) -> Vec<u8> {
    let mut job = LrJob::new(bytes);
    job.epochs = 5;
    serde_json::to_vec(&job).expect("job encodes")
}

fn accuracy(outputs: &[Vec<u8>]) -> f64 {
    let result: LrResult = serde_json::from_slice(&outputs[0]).expect("validate outputs an LrResult");
    result.accuracy
}

#[test]
fn lr_reaches_the_same_model_disaggregated_and_aggregated() {
    let platform = lr_platform();
    let deployment = platform.deploy(template::parse(LR_TEMPLATE).expect("lr template")).expect("deploy");
    let job = lr_job(3_000_000);
    let resc = platform.invoke(&deployment, &job).expect("resc run");
    let baseline = platform.invoke_aggregated(&deployment, &job, 128 * MIB).expect("baseline run");
    assert_eq!(resc.outputs, baseline.outputs, "same code, same data: the same model");
    assert!(accuracy(&resc.outputs) > 0.8, "the model learned something: {}", accuracy(&resc.outputs));
    // Every memory component's span ended with the invocation.
    assert_eq!(platform.memory_in_use_bytes(), 0);
    // The graph's 3 memory components were materialized; the baseline has none outside its sandbox.
    let memory: Vec<_> = resc.usage.components.iter().filter(|c| c.side == Side::Memory).collect();
    assert_eq!(memory.len(), 3);
    assert!(baseline.usage.components.iter().all(|c| c.side == Side::Compute));
    // ReSC allocates less than one function sized for it, held for the whole run.
    assert!(resc.usage.total().allocated_gib_s < baseline.usage.total().allocated_gib_s);
    // Each compute instance stayed within its slot.
    assert!(resc.usage.components.iter().filter(|c| c.side == Side::Compute).all(|c| !c.over_slot));
}

const SPANS: &str = r#"{
  "app": "spans", "budget_mib": 16,
  "compute": [
    { "name": "a", "code": "spans.a" },
    { "name": "b", "code": "spans.b" },
    { "name": "c", "code": "spans.c" }
  ],
  "memory": [{ "name": "m", "initial_mib": 1, "increment_mib": 1 }],
  "edges": [
    { "kind": "trigger", "from": "a", "to": "b" },
    { "kind": "trigger", "from": "b", "to": "c" },
    { "kind": "access", "from": "a", "to": "m" },
    { "kind": "access", "from": "b", "to": "m" }
  ]
}"#;

#[test]
fn memory_components_live_exactly_their_span() {
    use std::sync::{Arc, OnceLock};
    // The code pieces look at the platform's memory pool while they run.
    let platform_cell: Arc<OnceLock<Arc<EmbeddedPlatform>>> = Arc::new(OnceLock::new());
    let in_use = {
        let cell = platform_cell.clone();
        move || cell.get().map_or(u64::MAX, |p| p.memory_in_use_bytes())
    };
    let (in_a, in_b, in_c) = (in_use.clone(), in_use.clone(), in_use);
    let mut registry = CodeRegistry::new();
    registry
        .register("spans.a", move |ctx: &mut Context| {
            let before = in_a();
            ctx.channel("m")?.write(0, b"kept")?;
            Ok(format!("{before},{}", in_a()).into_bytes())
        })
        .register("spans.b", move |ctx: &mut Context| {
            let mut back = [0u8; 4];
            ctx.channel("m")?.read(0, &mut back)?;
            Ok(format!("{},{},{}", String::from_utf8_lossy(ctx.input()), String::from_utf8_lossy(&back), in_b())
                .into_bytes())
        })
        .register("spans.c", move |ctx: &mut Context| {
            Ok(format!("{},{}", String::from_utf8_lossy(ctx.input()), in_c()).into_bytes())
        });
    let platform = Arc::new(EmbeddedPlatform::new(small_config(), registry).expect("platform"));
    platform_cell.set(platform.clone()).ok();
    let deployment = platform.deploy(template::parse(SPANS).expect("template")).expect("deploy");
    let report = platform.invoke(&deployment, b"").expect("run");
    // Nothing before the first access; 1 MiB from it through b; freed before c.
    let expected = format!("0,{m},kept,{m},0", m = MIB);
    assert_eq!(String::from_utf8_lossy(&report.outputs[0]), expected);
}

const PARALLEL: &str = r#"{
  "app": "fan", "budget_mib": 16,
  "compute": [
    { "name": "source", "code": "fan.source" },
    { "name": "square", "code": "fan.square", "parallelism": 3 },
    { "name": "sum", "code": "fan.sum" }
  ],
  "edges": [
    { "kind": "trigger", "from": "source", "to": "square" },
    { "kind": "trigger", "from": "square", "to": "sum" }
  ]
}"#;

fn number(bytes: &[u8]) -> Result<u64, CodeError> {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| CodeError::failed("not a number"))
}

#[test]
fn fan_out_gives_each_instance_the_input_and_fan_in_gathers_all_outputs() {
    let mut registry = CodeRegistry::new();
    registry
        .register("fan.source", |ctx: &mut Context| Ok(ctx.input().to_vec()))
        .register("fan.square", |ctx: &mut Context| {
            let base = number(ctx.input())?;
            let x = base + u64::from(ctx.instance());
            Ok((x * x).to_string().into_bytes())
        })
        .register("fan.sum", |ctx: &mut Context| {
            let total = ctx.inputs().iter().map(|i| number(i)).sum::<Result<u64, _>>()?;
            Ok(format!("{}:{}", ctx.inputs().len(), total).into_bytes())
        });
    let platform = EmbeddedPlatform::new(small_config(), registry).expect("platform");
    let deployment = platform.deploy(template::parse(PARALLEL).expect("template")).expect("deploy");
    let report = platform.invoke(&deployment, b"10").expect("run");
    // 10² + 11² + 12² = 365, from 3 instances.
    assert_eq!(report.outputs, vec![b"3:365".to_vec()]);
    assert_eq!(report.triggers, 1 + 3);
    let baseline = platform.invoke_aggregated(&deployment, b"10", 128 * MIB).expect("aggregated run");
    assert_eq!(baseline.outputs, report.outputs);
}

const CHATTY: &str = r#"{
  "app": "chat", "budget_mib": 16,
  "compute": [
    { "name": "start", "code": "chat.start" },
    { "name": "ping", "code": "chat.ping" },
    { "name": "pong", "code": "chat.pong" },
    { "name": "join", "code": "chat.join" }
  ],
  "edges": [
    { "kind": "trigger", "from": "start", "to": "ping" },
    { "kind": "trigger", "from": "start", "to": "pong" },
    { "kind": "trigger", "from": "ping", "to": "join" },
    { "kind": "trigger", "from": "pong", "to": "join" },
    { "kind": "message", "from": "ping", "to": "pong" }
  ]
}"#;

#[test]
fn concurrent_components_exchange_messages() {
    let mut registry = CodeRegistry::new();
    registry
        .register("chat.start", |_: &mut Context| Ok(Vec::new()))
        .register("chat.ping", |ctx: &mut Context| {
            let mut pong = ctx.channel("pong")?;
            pong.send(b"ping")?;
            Ok(pong.recv()?)
        })
        .register("chat.pong", |ctx: &mut Context| {
            let mut ping = ctx.channel("ping")?;
            let got = ping.recv()?;
            ping.send(b"pong")?;
            Ok(got)
        })
        .register("chat.join", |ctx: &mut Context| Ok(ctx.inputs().concat()));
    let platform = EmbeddedPlatform::new(small_config(), registry).expect("platform");
    let deployment = platform.deploy(template::parse(CHATTY).expect("template")).expect("deploy");
    let report = platform.invoke(&deployment, b"").expect("run");
    assert_eq!(report.outputs, vec![b"pongping".to_vec()]);
    // Aggregated, the concurrent components run as threads of the one function.
    let baseline = platform.invoke_aggregated(&deployment, b"", 128 * MIB).expect("aggregated run");
    assert_eq!(baseline.outputs, report.outputs);
}

const HANDOFF: &str = r#"{
  "app": "handoff", "budget_mib": 16,
  "compute": [{ "name": "writer", "code": "h.writer" }, { "name": "reader", "code": "h.reader" }],
  "memory": [{ "name": "box", "initial_mib": 1, "increment_mib": 1 }],
  "edges": [
    { "kind": "trigger", "from": "writer", "to": "reader" },
    { "kind": "access", "from": "writer", "to": "box" },
    { "kind": "access", "from": "reader", "to": "box" }
  ]
}"#;

#[test]
fn buffered_writes_reach_memory_when_a_piece_returns_without_sync() {
    let mut registry = CodeRegistry::new();
    registry
        .register("h.writer", |ctx: &mut Context| {
            // Buffered, never synced: the runtime writes it back at the end.
            let _pending = ctx.channel("box")?.write_async(0, b"hello")?;
            Ok(Vec::new())
        })
        .register("h.reader", |ctx: &mut Context| {
            let mut back = vec![0u8; 5];
            ctx.channel("box")?.read(0, &mut back)?;
            Ok(back)
        });
    let platform = EmbeddedPlatform::new(small_config(), registry).expect("platform");
    let deployment = platform.deploy(template::parse(HANDOFF).expect("template")).expect("deploy");
    assert_eq!(platform.invoke(&deployment, b"").expect("run").outputs, vec![b"hello".to_vec()]);
}

#[test]
fn a_budget_below_a_memory_components_first_allocation_is_refused_at_deploy() {
    let mut registry = CodeRegistry::new();
    registry
        .register("h.writer", |_: &mut Context| Ok(Vec::new()))
        .register("h.reader", |_: &mut Context| Ok(Vec::new()));
    let config = PlatformConfig {
        // Memory components come in 8 MiB physical components at least.
        size_classes: SizeClasses::powers_of_two(8 * MIB, 16 * MIB, 4 * MIB).expect("valid classes"),
        ..small_config()
    };
    let platform = EmbeddedPlatform::new(config, registry).expect("platform");
    let graph = template::parse(&HANDOFF.replace("\"budget_mib\": 16", "\"budget_mib\": 4")).expect("template");
    let error = platform.deploy(graph).expect_err("1 MiB rounds up to 8 MiB, above the 4 MiB budget");
    assert!(matches!(error, PlatformError::BudgetTooSmall { ref component, .. } if component == "box"), "{error}");
}

const GREEDY: &str = r#"{
  "app": "greedy", "budget_mib": 4,
  "compute": [{ "name": "fill", "code": "greedy.fill" }],
  "memory": [{ "name": "blob", "initial_mib": 1, "increment_mib": 1 }],
  "edges": [{ "kind": "access", "from": "fill", "to": "blob" }]
}"#;

#[test]
fn going_over_the_budget_is_a_clear_error_and_keeps_what_was_written() {
    let mut registry = CodeRegistry::new();
    registry.register("greedy.fill", |ctx: &mut Context| {
        let mut blob = ctx.channel("blob")?;
        let chunk = vec![7u8; MIB as usize];
        let mut written = 0;
        let error = loop {
            match blob.write(written, &chunk) {
                Ok(()) => written += chunk.len() as u64,
                Err(e) => break e,
            }
        };
        // Everything before the failed write is intact.
        let mut back = vec![0u8; written as usize];
        blob.read(0, &mut back)?;
        assert!(back.iter().all(|&b| b == 7));
        assert_eq!(blob.len(), written);
        Err(error.into())
    });
    let platform = EmbeddedPlatform::new(small_config(), registry).expect("platform");
    let deployment = platform.deploy(template::parse(GREEDY).expect("template")).expect("deploy");
    let error = platform.invoke(&deployment, b"").expect_err("the budget stops the fill");
    let PlatformError::ComponentFailed { component, reason, .. } = &error else { panic!("unexpected error {error}") };
    assert_eq!(component, "fill");
    assert!(reason.contains("blob") && reason.contains("budget"), "{reason}");
    assert_eq!(platform.memory_in_use_bytes(), 0, "a failed invocation frees its memory");
}

#[test]
fn a_compute_component_over_its_slot_swaps_or_is_reported() {
    for swap in [true, false] {
        let mut registry = CodeRegistry::new();
        registry.register("greedy.fill", |_: &mut Context| {
            let big = vec![1u8; 6 * MIB as usize];
            Ok(vec![big.iter().map(|&b| b as u64).sum::<u64>() as u8])
        });
        let mut config = small_config();
        if !swap {
            config.swap = None;
        }
        let platform = EmbeddedPlatform::new(config, registry).expect("platform");
        let graph = template::parse(GREEDY).expect("template");
        let deployment = platform.deploy(graph).expect("deploy");
        let report = platform.invoke(&deployment, b"").expect("run");
        assert_eq!(report.outputs, vec![vec![(6 * MIB % 256) as u8]]);
        let fill = report.usage.components.iter().find(|c| c.name == "fill").expect("fill ran");
        if swap {
            assert_eq!(fill.swap.instances_swapping, 1, "6 MiB in a 4 MiB slot swaps: {fill:?}");
            assert!(!fill.over_slot, "it swapped instead: {}", fill.peak_bytes);
        } else {
            assert!(fill.peak_bytes >= 6 * MIB, "measured, not assumed: {}", fill.peak_bytes);
            assert!(fill.over_slot, "6 MiB in a 4 MiB slot without swap is over");
        }
    }
}

#[test]
fn deploying_a_graph_with_an_unregistered_code_piece_fails() {
    let platform = EmbeddedPlatform::new(small_config(), CodeRegistry::new()).expect("platform");
    let error = platform.deploy(template::parse(GREEDY).expect("template")).expect_err("nothing registered");
    assert!(error.to_string().contains("greedy.fill"), "{error}");
}

#[test]
fn over_tcp_each_instance_connects_to_its_memory_while_its_code_loads() {
    use resc::reference::embedded::DataPath;
    let mut registry = CodeRegistry::new();
    apps::lr::register(&mut registry);
    let platform = EmbeddedPlatform::new(PlatformConfig { data_path: DataPath::Tcp, ..small_config() }, registry)
        .expect("platform with TCP memory nodes");
    let deployment = platform.deploy(template::parse(LR_TEMPLATE).expect("lr template")).expect("deploy");
    let job = lr_job(2_000_000);
    let over_tcp = platform.invoke(&deployment, &job).expect("run over TCP");
    let baseline = platform.invoke_aggregated(&deployment, &job, 128 * MIB).expect("baseline");
    assert_eq!(over_tcp.outputs, baseline.outputs, "the data path does not change the result");
    // `load` creates the training set; every later component finds memory placed and connects to it.
    let traces: std::collections::HashMap<&str, _> =
        over_tcp.startup.iter().map(|t| (t.component.as_str(), t)).collect();
    assert!(traces["load"].connect_us.is_none());
    for later in ["split", "train", "validate"] {
        let trace = traces[later];
        let (begin, end) = trace.connect_us.expect("connections set up from the placement");
        assert!(trace.connections >= 1 && begin <= end, "{trace:?}");
    }
    assert!(over_tcp.cache.bytes_read > 0, "reads went over the transport");
    assert_eq!(platform.memory_in_use_bytes(), 0);
}
