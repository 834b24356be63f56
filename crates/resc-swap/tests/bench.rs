//! The measurement functions run (scaled down) and report what the CLI prints.

mod common;

use resc_swap::bench::{self, BenchConfig, Pattern, Work};

#[test]
fn the_quick_configuration_measures_every_case_correctly() {
    if !common::userfaultfd_or_skip() {
        return;
    }
    let config = BenchConfig::quick();
    let report = bench::run(&config).expect("bench");
    assert_eq!(report.cases.len(), config.array_mib.len() * config.local_mib.len() * 3 * 2);
    for case in &report.cases {
        assert!(case.checksum_ok, "{case:?}");
        assert!(case.seconds > 0.0 && case.seconds_all_local > 0.0);
        assert!((case.overhead - (case.seconds / case.seconds_all_local - 1.0)).abs() < 1e-9);
        assert!(case.stats.missing_faults > 0, "the array did not fit: {case:?}");
        assert!(["busy", "idle", "mixed"].contains(&case.regime.as_str()));
    }
    assert!(report.cases.iter().any(|c| c.pattern == Pattern::PageRandom && c.work == Work::Bandwidth));
    assert_eq!(report.eviction.len(), 6, "two policies × seq, block-random, hot-cold");
    assert_eq!(report.handler.len(), 10, "five policies × seq, block-random");
    let json = serde_json::to_value(&report).expect("json");
    let case = &json["cases"][0];
    for key in
        ["array_mib", "local_mib", "pattern", "work", "seconds", "seconds_all_local", "overhead", "regime", "stats"]
    {
        assert!(case.get(key).is_some(), "{key} missing from {case}");
    }
    assert!(case["stats"].get("missing_faults").is_some());
    assert_eq!(json["cases"].as_array().map(Vec::len), Some(report.cases.len()));
}
