//! Randomized fault campaigns: compute instances, memory components and
//! whole nodes die mid-run, and every invocation still completes with the
//! outputs of a run without faults (the paper's §5.2.4 recovery).

use resc::core::memory::CacheConfig;
use resc::core::resources::{KIB, MIB};
use resc::core::sandbox::CodeRegistry;
use resc::core::size_class::SizeClasses;
use resc::core::template;
use resc::reference::alloc_meter::{PlatformAllocator, PLATFORM_ALLOCATOR};
use resc::reference::apps::{self, chain::ChainJob, lr::LrJob, CHAIN_TEMPLATE, LR_TEMPLATE};
use resc::reference::embedded::{EmbeddedPlatform, FaultPlan, PlatformConfig};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: PlatformAllocator = PLATFORM_ALLOCATOR;

fn config() -> PlatformConfig {
    PlatformConfig {
        size_classes: SizeClasses::powers_of_two(MIB, 16 * MIB, 4 * MIB).expect("valid classes"),
        cache: CacheConfig::new(256 * KIB, 4 * KIB),
        ..PlatformConfig::default()
    }
}

/// Runs `invocations` of `template` on a clean platform and on one with
/// `plan`; every faulty invocation must complete with the clean outputs.
/// Returns the faults applied.
fn campaign(
    template_text: &str,
    registry: &CodeRegistry,
    job: &[u8],
    invocations: usize,
    plan: &Arc<FaultPlan>,
) -> u64 {
    let clean = EmbeddedPlatform::new(config(), registry.clone()).expect("platform");
    let deployment = clean.deploy(template::parse(template_text).expect("template")).expect("deploy");
    let expected = clean.invoke(&deployment, job).expect("a fault-free run").outputs;
    let faulty = EmbeddedPlatform::new(config(), registry.clone()).expect("platform").with_fault_plan(plan.clone());
    let deployment = faulty.deploy(template::parse(template_text).expect("template")).expect("deploy");
    for i in 0..invocations {
        let report = faulty
            .invoke(&deployment, job)
            .unwrap_or_else(|e| panic!("invocation {i} failed under faults ({:?} so far): {e}", plan.applied_counts()));
        assert_eq!(report.outputs, expected, "invocation {i}: outputs differ from the fault-free run");
        assert_eq!(faulty.memory_in_use_bytes(), 0, "invocation {i} left memory behind");
    }
    let applied = plan.applied_counts();
    eprintln!("{template_text:.20}…: {invocations} invocations, faults applied: {applied:?}");
    applied.total()
}

#[test]
fn lr_and_chain_complete_identically_through_over_200_faults() {
    let mut lr = CodeRegistry::new();
    apps::lr::register(&mut lr);
    let mut job = LrJob::new(400_000);
    job.epochs = 3;
    let lr_job = serde_json::to_vec(&job).expect("job encodes");
    let lr_faults = campaign(LR_TEMPLATE, &lr, &lr_job, 60, &Arc::new(FaultPlan::random(11, 0.5, 150)));

    let mut chain = CodeRegistry::new();
    apps::chain::register(&mut chain);
    let chain_job = serde_json::to_vec(&ChainJob { sleep_ms: 0 }).expect("job encodes");
    let chain_faults = campaign(CHAIN_TEMPLATE, &chain, &chain_job, 50, &Arc::new(FaultPlan::random(12, 0.4, 150)));

    assert!(lr_faults + chain_faults >= 200, "only {lr_faults} + {chain_faults} faults were applied");
}
