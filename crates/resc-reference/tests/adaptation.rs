//! Adaptation on the embedded platform: traffic measured alike aggregated
//! or not, adjustments applied to later invocations, and the watermark
//! scenario of `resc demo adapt`.

use resc_core::resources::MIB;
use resc_core::scheduler::Pool;
use resc_reference::adapt::adaptive::{AdaptConfig, Adaptive};
use resc_reference::adapt::adjust::{AdjustConfig, Decision};
use resc_reference::adapt::scenario::{self, AdaptDemoOptions};
use resc_reference::alloc_meter::{PlatformAllocator, PLATFORM_ALLOCATOR};
use resc_reference::embedded::EmbeddedPlatform;

#[global_allocator]
static ALLOCATOR: PlatformAllocator = PLATFORM_ALLOCATOR;

const STREAM: &str = r#"{ "app": "stream", "budget_mib": 64,
  "compute": [{ "name": "produce", "code": "stream.produce", "cpu": 0.5 },
              { "name": "consume", "code": "stream.consume", "cpu": 0.5 }],
  "memory": [{ "name": "buf", "initial_mib": 16, "increment_mib": 1 }],
  "edges": [{ "kind": "trigger", "from": "produce", "to": "consume" },
            { "kind": "access", "from": "produce", "to": "buf" },
            { "kind": "access", "from": "consume", "to": "buf" }] }"#;

fn platform() -> EmbeddedPlatform {
    EmbeddedPlatform::new(scenario::platform_config().expect("config"), scenario::registry()).expect("platform")
}

#[test]
fn traffic_is_measured_alike_aggregated_or_not_and_outputs_agree() {
    let platform = platform();
    let deployment = platform.deploy(resc_core::template::parse(STREAM).expect("template")).expect("deploy");
    let mut adaptive = Adaptive::new(&platform, AdaptConfig::default()).expect("adaptive");
    let app = adaptive.manage(deployment);
    let apart = adaptive.invoke(app, &[3]).expect("disaggregated");
    adaptive.pin(app, true).expect("pin");
    let together = adaptive.invoke(app, &[3]).expect("aggregated");
    assert!(!apart.aggregated && together.aggregated);
    assert_eq!(apart.outputs, together.outputs, "the same code pieces, unchanged");
    assert_eq!(apart.traffic, together.traffic, "logical bytes per peer, however they travel");
    assert_eq!(apart.traffic["produce"]["buf"], 4 * MIB, "produce writes 4 MiB");
    assert_eq!(apart.traffic["consume"]["buf"], 16 * MIB, "consume reads it four times");
    let history = adaptive.history(app).expect("history");
    assert_eq!(history.invocations(), 2);
    assert_eq!(history.component("consume").expect("observed").network_bytes["buf"], (16 * MIB) as f64);
    assert!(history.component("buf").expect("observed").memory_bytes >= (4 * MIB) as f64);
    // Its group for the controller carries that traffic as its saving.
    let group = adaptive.group(app, 1.0).expect("group");
    assert_eq!(group.candidate.saving(), 20 * MIB);
    assert_eq!(group.candidate.total_cpu(), 1000);
}

#[test]
fn every_k_invocations_the_adjuster_resizes_memory_for_the_next_ones() {
    let platform = platform();
    let deployment = platform.deploy(resc_core::template::parse(STREAM).expect("template")).expect("deploy");
    let config = AdaptConfig { adjust: AdjustConfig { every: 3, ..AdjustConfig::default() }, ..AdaptConfig::default() };
    let mut adaptive = Adaptive::new(&platform, config).expect("adaptive");
    let app = adaptive.manage(deployment);
    for i in 0..3 {
        adaptive.invoke(app, &[i]).expect("invocation");
    }
    let resized = adaptive.decisions(app).iter().find_map(|d| match d {
        Decision::ResizeMemory { component, initial_bytes, .. } if component == "buf" => Some(*initial_bytes),
        _ => None,
    });
    let initial = resized.expect("4 MiB used of a 16 MiB initial size: re-sized");
    assert!(initial < 16 * MIB, "shrunk toward the 4 MiB it uses: {initial}");
    let deployment = adaptive.deployment(app).expect("managed");
    assert_eq!(deployment.graph().memory_components()[0].initial_bytes, initial, "the next invocations use it");
    let report = adaptive.invoke(app, &[9]).expect("after the re-size");
    let buf = report.usage.components.iter().find(|c| c.name == "buf").expect("metered");
    assert!(buf.consumption.allocated_gib_s > 0.0);
}

#[test]
fn a_compute_component_moved_to_the_balanced_pool_runs_there_with_its_local_memory() {
    use resc_reference::embedded::ComputePlacement;
    let platform = platform();
    let deployment = platform.deploy(resc_core::template::parse(STREAM).expect("template")).expect("deploy");
    let consume = match deployment.graph().find("consume") {
        Some(resc_core::graph::ComponentRef::Compute(id)) => id,
        other => panic!("consume is a compute component: {other:?}"),
    };
    let moved = deployment.with_placement(consume, ComputePlacement { pool: Pool::Balanced, local_bytes: 128 * MIB });
    let report = platform.invoke(&moved, &[1]).expect("invocation");
    let usage = report.usage.components.iter().find(|c| c.name == "consume").expect("metered");
    assert_eq!(usage.slot_bytes, Some(128 * MIB));
    let produce = report.usage.components.iter().find(|c| c.name == "produce").expect("metered");
    assert_eq!(produce.slot_bytes, Some(platform.config().size_classes.compute_slot()));
}

#[test]
fn the_watermark_scenario_splits_the_quietest_first_and_merges_again() {
    let report = scenario::run(&AdaptDemoOptions { steps: 36, peak_load: 5.2 }).expect("scenario");
    let checks = &report.checks;
    assert!(checks.disaggregated_at_watermark, "{}", scenario::table(&report));
    assert!(checks.lowest_communication_first, "{}", scenario::table(&report));
    assert!(checks.reaggregated_after_fall, "{}", scenario::table(&report));
    assert!(report.steps.iter().all(|s| s.utilization_after <= 0.7 + 1e-9), "no step ends above the watermark");
    let csv = scenario::csv(&report);
    assert_eq!(csv.lines().count(), 1 + 36 * 3, "a header and a row per step and application");
    assert!(scenario::svg(&report).starts_with("<svg"));
}

#[test]
fn a_component_that_keeps_swapping_moves_to_the_balanced_pool_and_stops_swapping() {
    use resc_core::resources::Resources;
    use resc_core::size_class::SizeClasses;
    use resc_reference::embedded::{PlatformConfig, SwapSettings};
    let slot = 8 * MIB;
    let mut config = PlatformConfig {
        size_classes: SizeClasses::new([4 * MIB, 16 * MIB, 64 * MIB], slot).expect("classes"),
        swap: Some(SwapSettings { capacity_bytes: 256 * MIB, ready: 1 }),
        ..PlatformConfig::default()
    };
    config.node_pools.insert(Pool::Memory, Resources::memory(resc_core::resources::GIB));
    let mut code = resc_core::sandbox::CodeRegistry::new();
    // Builds and sums a 40 MiB array: five times its 8 MiB slot.
    code.register("big.sum", |_: &mut resc_core::runtime::Context| {
        let array: Vec<u64> = (0..5 * MIB).collect();
        Ok(array.iter().fold(0u64, |a, &x| a.wrapping_add(x)).to_le_bytes().to_vec())
    });
    let platform = EmbeddedPlatform::new(config, code).expect("platform");
    platform.swap_available().expect("swap works here");
    let graph = resc_core::template::parse(
        r#"{ "app": "big", "budget_mib": 256, "compute": [{ "name": "sum", "code": "big.sum" }] }"#,
    )
    .expect("template");
    let adjust = AdjustConfig { every: 2, compute_limit_bytes: slot, swaps_threshold: 10.0 };
    let mut adaptive = Adaptive::new(&platform, AdaptConfig { adjust, ..AdaptConfig::default() }).expect("adaptive");
    let app = adaptive.manage(platform.deploy(graph).expect("deploy"));
    let swapping = |report: &resc_reference::embedded::InvocationReport| {
        report.usage.components.iter().find(|c| c.name == "sum").map_or(0, |c| c.swap.instances_swapping)
    };
    for _ in 0..2 {
        let report = adaptive.invoke(app, b"").expect("invocation");
        assert_eq!(swapping(&report), 1, "40 MiB over an 8 MiB slot swaps");
    }
    let moved = adaptive.decisions(app).iter().find_map(|d| match d {
        Decision::MoveToBalanced { component, local_bytes, .. } if component == "sum" => Some(*local_bytes),
        _ => None,
    });
    let local = moved.expect("a component that keeps swapping is moved");
    assert!(local >= 40 * MIB, "local memory = swap + slot, rounded up to a class: {local}");
    let report = adaptive.invoke(app, b"").expect("invocation after the move");
    assert_eq!(swapping(&report), 0, "with {local} B of local memory it fits");
    let sum = report.usage.components.iter().find(|c| c.name == "sum").expect("metered");
    assert_eq!(sum.slot_bytes, Some(local));
    assert!(!sum.over_slot);
}
