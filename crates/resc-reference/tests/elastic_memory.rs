//! Elastic compute memory on the embedded platform: an instance that
//! outgrows its slot swaps to the memory pool without knowing it, metering
//! shows it, and swap space that cannot be had fails the invocation.

use resc_core::resources::{Resources, MIB};
use resc_core::runtime::Context;
use resc_core::sandbox::CodeRegistry;
use resc_core::scheduler::Pool;
use resc_core::size_class::SizeClasses;
use resc_core::template;
use resc_reference::alloc_meter::{PlatformAllocator, PLATFORM_ALLOCATOR};
use resc_reference::embedded::{EmbeddedPlatform, PlatformConfig, PlatformError, SwapSettings};
use resc_reference::metering::Side;

#[global_allocator]
static ALLOCATOR: PlatformAllocator = PLATFORM_ALLOCATOR;

const SLOT: u64 = 8 * MIB;

/// Sums `i * 3` over an array of the input's number of MiB, built and read
/// twice: code that knows nothing of far memory.
fn sum_array(ctx: &mut Context) -> Result<Vec<u8>, resc_core::runtime::CodeError> {
    let mib = ctx.input().first().copied().unwrap_or(1) as usize;
    let words = mib * (MIB as usize) / 8;
    let array: Vec<u64> = (0..words as u64).map(|i| i * 3).collect();
    let first: u64 = array.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    let second: u64 = array.iter().rev().fold(0u64, |a, &x| a.wrapping_add(x));
    Ok([first.to_le_bytes(), second.to_le_bytes()].concat())
}

fn expected(mib: u64) -> Vec<u8> {
    let words = mib * MIB / 8;
    let sum = (0..words).fold(0u64, |a, i| a.wrapping_add(i * 3));
    [sum.to_le_bytes(), sum.to_le_bytes()].concat()
}

fn config(memory_per_node: u64) -> PlatformConfig {
    let mut config = PlatformConfig {
        size_classes: SizeClasses::new([4 * MIB, 16 * MIB], SLOT).expect("classes"),
        swap: Some(SwapSettings { capacity_bytes: 256 * MIB, ready: 1 }),
        ..PlatformConfig::default()
    };
    config.node_pools.insert(Pool::Memory, Resources::memory(memory_per_node));
    config
}

fn platform(memory_per_node: u64) -> (EmbeddedPlatform, resc_reference::embedded::Deployment) {
    let mut code = CodeRegistry::new();
    code.register("big.sum", sum_array);
    let platform = EmbeddedPlatform::new(config(memory_per_node), code).expect("platform");
    platform.swap_available().expect("userfaultfd and the platform allocator are here");
    let graph = template::parse(
        r#"{ "app": "big", "budget_mib": 256,
             "compute": [{ "name": "sum", "code": "big.sum" }] }"#,
    )
    .expect("template");
    let deployment = platform.deploy(graph).expect("deploy");
    (platform, deployment)
}

#[test]
fn an_instance_that_outgrows_its_slot_swaps_and_computes_correctly() {
    let (platform, app) = platform(1024 * MIB);
    let report = platform.invoke(&app, &[40]).expect("invocation");
    assert_eq!(report.outputs, vec![expected(40)]);

    let sum = report.usage.components.iter().find(|c| c.name == "sum").expect("metered");
    assert_eq!(sum.swap.instances_swapping, 1, "{sum:?}");
    assert!(sum.swap.swap_outs > 0 && sum.swap.bytes_out > 0, "40 MiB over an 8 MiB slot swapped out: {sum:?}");
    assert!(sum.swap.swap_ins > 0, "and read back: {sum:?}");
    assert!(!sum.over_slot, "local memory stayed within the slot: peak {} B", sum.peak_bytes);
    assert!(sum.swap.peak_swap_space_bytes >= 16 * MIB, "swap space in 16 MiB components: {sum:?}");

    let swap = report.usage.components.iter().find(|c| c.name == "sum#swap").expect("swap space is metered");
    assert_eq!(swap.side, Side::Memory);
    assert!(swap.physical_components >= 2, "at least 32 MiB went to swap: {swap:?}");
    assert!(swap.consumption.allocated_gib_s > 0.0);
    assert_eq!(platform.memory_in_use_bytes(), 0, "swap space is freed with the instance");
}

#[test]
fn an_instance_within_its_slot_does_not_swap() {
    let (platform, app) = platform(1024 * MIB);
    let report = platform.invoke(&app, &[2]).expect("invocation");
    assert_eq!(report.outputs, vec![expected(2)]);
    let sum = report.usage.components.iter().find(|c| c.name == "sum").expect("metered");
    assert_eq!(sum.swap, Default::default(), "2 MiB fits the 8 MiB slot");
    assert!(report.usage.components.iter().all(|c| c.name != "sum#swap"));
}

#[test]
fn swap_space_that_cannot_be_had_fails_the_invocation_with_a_clear_error() {
    // Memory nodes of 8 MiB cannot hold one 16 MiB swap component.
    let (platform, app) = platform(8 * MIB);
    match platform.invoke(&app, &[40]) {
        Err(PlatformError::ComponentFailed { component, reason, .. }) => {
            assert_eq!(component, "sum");
            assert!(reason.contains("swap") && reason.contains("allocation"), "{reason}");
        }
        other => panic!("expected the swap failure to fail the invocation, got {other:?}"),
    }
    assert_eq!(platform.memory_in_use_bytes(), 0);
}

#[test]
fn platforms_report_when_they_cannot_swap() {
    let mut config = config(1024 * MIB);
    config.swap = None;
    let platform = EmbeddedPlatform::new(config, CodeRegistry::new()).expect("platform");
    let reason = platform.swap_available().expect_err("switched off");
    assert!(reason.contains("switched off"), "{reason}");
}
