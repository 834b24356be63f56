//! Keep-alive and pre-warming on the embedded platform.

use resc::core::runtime::{CodeError, Context};
use resc::core::sandbox::{CodePiece, CodeRegistry};
use resc::core::template;
use resc::reference::alloc_meter::{PlatformAllocator, PLATFORM_ALLOCATOR};
use resc::reference::apps::CHAIN_TEMPLATE;
use resc::reference::embedded::{EmbeddedPlatform, PlatformConfig, WarmStartConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: PlatformAllocator = PLATFORM_ALLOCATOR;

/// The 10-step chain with a code piece that counts its loads and sleeps
/// `sleep_ms` per step.
fn chain(warm: WarmStartConfig, loads: &Arc<AtomicUsize>) -> (EmbeddedPlatform, resc::reference::embedded::Deployment) {
    let mut registry = CodeRegistry::new();
    let counted = loads.clone();
    registry.register_loader("chain.step", move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let piece: Arc<dyn CodePiece> = Arc::new(|ctx: &mut Context| -> Result<Vec<u8>, CodeError> {
            std::thread::sleep(Duration::from_millis(5));
            Ok(ctx.input().to_vec())
        });
        Ok(piece)
    });
    let platform =
        EmbeddedPlatform::new(PlatformConfig { warm, ..PlatformConfig::default() }, registry).expect("platform");
    let deployment = platform.deploy(template::parse(CHAIN_TEMPLATE).expect("chain template")).expect("deploy");
    (platform, deployment)
}

#[test]
fn without_keep_alive_or_pre_warming_every_start_is_cold() {
    let loads = Arc::new(AtomicUsize::new(0));
    let (platform, deployment) = chain(WarmStartConfig::cold(), &loads);
    for _ in 0..2 {
        let report = platform.invoke(&deployment, b"x").expect("invocation");
        assert_eq!(report.outputs, vec![b"x".to_vec()]);
        assert_eq!((report.warm.hits, report.warm.misses, report.warm.prewarmed), (0, 10, 0));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 20, "each cold start loads the code");
}

#[test]
fn pre_warming_starts_every_component_but_the_first_warm() {
    let loads = Arc::new(AtomicUsize::new(0));
    let config = WarmStartConfig { keep_alive: Duration::ZERO, prewarm_next: true, ..WarmStartConfig::default() };
    let (platform, deployment) = chain(config, &loads);
    let report = platform.invoke(&deployment, b"x").expect("invocation");
    assert_eq!(report.outputs, vec![b"x".to_vec()]);
    assert_eq!(report.warm.misses, 1, "only the first component starts cold");
    assert_eq!(report.warm.prewarmed, 9);
    assert_eq!(report.warm.prewarm_hits, 9);
    assert_eq!(loads.load(Ordering::SeqCst), 10, "one load per environment, pre-warmed or not");
    assert!(report.warm.idle_gib_s > 0.0, "a pre-warmed sandbox holds its slot while it waits");
}

#[test]
fn kept_alive_sandboxes_serve_the_next_invocation_without_loading_again() {
    let loads = Arc::new(AtomicUsize::new(0));
    let config =
        WarmStartConfig { keep_alive: Duration::from_secs(60), prewarm_next: false, ..WarmStartConfig::default() };
    let (platform, deployment) = chain(config, &loads);
    let first = platform.invoke(&deployment, b"x").expect("first invocation");
    assert_eq!((first.warm.hits, first.warm.misses), (0, 10));
    let second = platform.invoke(&deployment, b"y").expect("second invocation");
    assert_eq!(second.outputs, vec![b"y".to_vec()]);
    assert_eq!((second.warm.hits, second.warm.misses), (10, 0), "every sandbox was kept warm");
    assert_eq!(loads.load(Ordering::SeqCst), 10, "warm starts load nothing");
    assert!(second.warm.idle_gib_s > 0.0, "kept sandboxes hold their slots while idle");
}

#[test]
fn kept_alive_sandboxes_expire() {
    let loads = Arc::new(AtomicUsize::new(0));
    let config =
        WarmStartConfig { keep_alive: Duration::from_millis(1), prewarm_next: false, ..WarmStartConfig::default() };
    let (platform, deployment) = chain(config, &loads);
    platform.invoke(&deployment, b"x").expect("first invocation");
    // The housekeeping tick (100 ms) or the next start tears them down.
    std::thread::sleep(Duration::from_millis(250));
    let second = platform.invoke(&deployment, b"y").expect("second invocation");
    assert_eq!(second.warm.hits, 0, "a keep-alive of 1 ms is over by the next invocation");
    assert_eq!(loads.load(Ordering::SeqCst), 20);
}

#[test]
fn the_invocation_history_pre_warms_the_first_component_before_it_is_needed() {
    let loads = Arc::new(AtomicUsize::new(0));
    let config = WarmStartConfig {
        keep_alive: Duration::ZERO,
        prewarm_next: false,
        prewarm_predicted: true,
        predict_lead: Duration::from_millis(300),
        ..WarmStartConfig::default()
    };
    let (platform, deployment) = chain(config, &loads);
    // Invocations every 400 ms: after two, the next arrival is predicted and
    // the first component is pre-warmed 300 ms ahead of it.
    let mut predicted_hits = 0;
    for _ in 0..6 {
        let report = platform.invoke(&deployment, b"x").expect("invocation");
        predicted_hits += report.warm.prewarm_hits;
        assert!(report.warm.misses >= 9, "nothing but the first component is pre-warmed");
        std::thread::sleep(Duration::from_millis(400).saturating_sub(report.wall));
    }
    assert!(predicted_hits >= 2, "the first component started on a predicted pre-warm {predicted_hits} times of 4");
}
