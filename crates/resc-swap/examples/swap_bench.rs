//! Runs the far-memory benchmark and prints its report as JSON.
//!
//! ```sh
//! cargo run --release -p resc-swap --example swap_bench -- quick
//! cargo run --release -p resc-swap --example swap_bench -- full
//! cargo run --release -p resc-swap --example swap_bench -- fig20 1024 200 seq,block-random compute
//! ```
//! `fig20 ARRAY_MIB LOCAL_MIB PATTERNS WORKS [eviction] [handler]` runs one
//! size; add `eviction` / `handler` for the policy comparisons. The region's
//! settings can be overridden with `RESC_SWAP_CHUNK_KIB`, `RESC_SWAP_MAX_RA_KIB`,
//! `RESC_SWAP_INIT_RA_KIB`, `RESC_SWAP_FREE_KIB`, `RESC_SWAP_REPS` (repetitions),
//! `RESC_SWAP_NICE` (the handler's nice value), `RESC_SWAP_HANDLER`
//! (`spin`, `poll`, `hybrid:MICROSECONDS`) and `RESC_SWAP_EVICTION` (`nru`, `clock`).

use resc_swap::bench::{self, BenchConfig, Pattern, Work};
use resc_swap::{EvictionPolicy, HandlerPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.first().map(String::as_str) {
        Some("full") => BenchConfig::full(),
        Some("fig20") => {
            let mut config = BenchConfig::full();
            config.array_mib = vec![args.get(1).ok_or("ARRAY_MIB")?.parse()?];
            config.local_mib = vec![args.get(2).ok_or("LOCAL_MIB")?.parse()?];
            config.patterns = args
                .get(3)
                .map(|p| p.split(',').filter_map(|p| Pattern::ALL.into_iter().find(|x| x.name() == p)).collect())
                .unwrap_or_else(|| Pattern::ALL.to_vec());
            config.works = match args.get(4).map(String::as_str) {
                Some("compute") => vec![Work::Compute],
                Some("bandwidth") => vec![Work::Bandwidth],
                _ => Work::ALL.to_vec(),
            };
            config.compare_eviction = args.iter().any(|a| a == "eviction");
            config.compare_handler = args.iter().any(|a| a == "handler");
            config
        }
        _ => BenchConfig::quick(),
    };
    let mut config = config;
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(kib) = env("RESC_SWAP_CHUNK_KIB") {
        config.swap.chunk_size = kib << 10;
    }
    if let Some(kib) = env("RESC_SWAP_MAX_RA_KIB") {
        config.swap.max_read_ahead = kib << 10;
    }
    if let Some(kib) = env("RESC_SWAP_INIT_RA_KIB") {
        config.swap.initial_read_ahead = kib << 10;
    }
    if let Ok(nice) = std::env::var("RESC_SWAP_NICE") {
        config.swap.handler_nice = nice.parse()?;
    }
    if let Some(n) = env("RESC_SWAP_REPS") {
        config.repetitions = n as u32;
    }
    if let Some(kib) = env("RESC_SWAP_FREE_KIB") {
        config.swap.free_target = (kib as u64) << 10;
    }
    match std::env::var("RESC_SWAP_HANDLER").as_deref() {
        Ok("spin") => config.swap.handler = HandlerPolicy::Spin,
        Ok("poll") => config.swap.handler = HandlerPolicy::Poll,
        Ok(other) if other.starts_with("hybrid:") => {
            config.swap.handler = HandlerPolicy::Hybrid { spin_us: other[7..].parse()? };
        }
        _ => {}
    }
    match std::env::var("RESC_SWAP_EVICTION").as_deref() {
        Ok("nru") => config.swap.eviction = EvictionPolicy::Nru,
        Ok("clock") => config.swap.eviction = EvictionPolicy::Clock,
        _ => {}
    }
    let report = bench::run(&config)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
