//! Runs every scheduler measurement and prints the report as JSON.
//!
//! `cargo run --release -p resc-sched --example sched_bench [-- --toy]`
fn main() {
    let config = if std::env::args().any(|a| a == "--toy") {
        resc_sched::bench::BenchConfig::toy()
    } else {
        resc_sched::bench::BenchConfig::default()
    };
    match resc_sched::bench::run(&config).map(|report| serde_json::to_string_pretty(&report)) {
        Ok(Ok(json)) => println!("{json}"),
        Ok(Err(e)) => eprintln!("cannot serialize the report: {e}"),
        Err(e) => eprintln!("cannot build the cluster: {e}"),
    }
}
