//! The `resc` command as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn resc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resc")).args(args).output().expect("the resc binary runs")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON object")
}

#[test]
fn validate_accepts_the_shipped_templates() {
    for name in ["lr.json", "chain.json"] {
        let out = resc(&["validate", example(name).to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
}

#[test]
fn validate_names_the_unknown_component_and_its_edge() {
    let file = example("bad_unknown_edge.json");
    let out = resc(&["validate", file.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`trainig_set`"), "names the component: {stderr}");
    assert!(stderr.contains("edge #") && stderr.contains("(access)"), "names the edge: {stderr}");
    let text = std::fs::read_to_string(&file).expect("example readable");
    let line = text.lines().position(|l| l.contains("trainig_set")).expect("the typo is there") + 1;
    assert!(stderr.contains(&format!("line {line},")), "points at line {line}: {stderr}");
}

#[test]
fn validate_reports_a_missing_file() {
    let out = resc(&["validate", "/nonexistent/template.json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/template.json"));
}

#[test]
fn demo_lr_json_has_one_entry_per_input_with_equal_accuracy() {
    let svg = std::env::temp_dir().join(format!("resc-cli-test-{}.svg", std::process::id()));
    let out = resc(&[
        "demo",
        "lr",
        "--json",
        "--input-mb",
        "2",
        "--input-mb",
        "3",
        "--epochs",
        "3",
        "--repeat",
        "1",
        "--svg",
        svg.to_str().expect("utf-8 path"),
    ]);
    let report = json(&out);
    let runs = report["runs"].as_array().expect("runs array");
    assert_eq!(runs.len(), 2);
    for (run, mb) in runs.iter().zip([2.0, 3.0]) {
        assert_eq!(run["input_mb"].as_f64(), Some(mb));
        for field in ["saving", "overhead", "accuracy_resc", "accuracy_baseline"] {
            assert!(run[field].as_f64().is_some_and(f64::is_finite), "{field} in {run}");
        }
        assert_eq!(run["accuracy_resc"], run["accuracy_baseline"]);
        // ReSC allocates less than the function sized for the peak and held throughout.
        assert!(run["saving"].as_f64().is_some_and(|s| s > 0.0), "{run}");
    }
    assert_eq!(report["within_slot"], serde_json::Value::Bool(true));
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(chart.starts_with("<svg") && chart.matches("<polyline").count() == 2 * 2 * 2);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn demo_chain_reports_latency_per_invocation() {
    let report = json(&resc(&["demo", "chain", "--json", "--sleep-ms", "1", "--repeat", "2"]));
    assert_eq!(report["components"], 10);
    let runs = report["runs"].as_array().expect("runs array");
    assert_eq!(runs.len(), 2);
    for run in runs {
        let e2e = run["end_to_end_ms"].as_f64().expect("end_to_end_ms");
        let compute = run["compute_ms"].as_f64().expect("compute_ms");
        // Ten 1 ms sleeps happen inside the code pieces, and the platform's work adds to them.
        assert!(compute >= 10.0 && e2e >= compute, "{run}");
        assert!(run["overhead_per_trigger_us"].as_f64().is_some());
    }
}

/// A `resc memory-server` child process, killed when dropped.
struct MemoryServer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl MemoryServer {
    fn start() -> MemoryServer {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_resc"))
            .args(["memory-server", "--listen", "127.0.0.1:0", "--node", "7", "--capacity-mib", "64"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the memory server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("it prints its address");
        let announced: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
        let addr = announced["addr"].as_str().expect("addr").parse().expect("a socket address");
        MemoryServer { child, addr }
    }
}

impl Drop for MemoryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_memory_server_process_hosts_regions_for_this_one() {
    use resc_core::ids::NodeId;
    use resc_core::pool::MemoryPool;
    use resc_core::transport::Transport;
    use resc_rdma::tcp::{Directory, TcpMemoryPool, TcpNodeServer, TcpTransport};
    let server = MemoryServer::start();
    let directory = std::sync::Arc::new(Directory::new());
    directory.add_node(NodeId(7), server.addr);
    let pool = TcpMemoryPool::new(NodeId(7), directory.clone());
    assert_eq!(pool.capacity_bytes(), 64 << 20);
    let local = TcpNodeServer::bind("127.0.0.1:0", NodeId(8), None).expect("a local node for endpoints");
    let transport = TcpTransport::with_local_node(directory, local);
    // The whole conformance suite, across a real process boundary.
    resc_core::testkit::transport::transport_suite(&pool, &transport);
    let region = pool.allocate(1 << 20).expect("allocate in the other process");
    transport.write(&region, 1000, b"crossed a process boundary").expect("write");
    let mut back = [0u8; 26];
    transport.read(&region, 1000, &mut back).expect("read");
    assert_eq!(&back, b"crossed a process boundary");
    pool.free(&region).expect("free");
    assert_eq!(pool.allocated_bytes(), 0);
}

#[test]
fn bench_transport_json_reports_each_measurement_side_by_side() {
    // Starts its own redis-server (installed by scripts/test.sh).
    let report = json(&resc(&["bench", "transport", "--json", "--quick"]));
    let measurements = report["measurements"].as_array().expect("measurements array");
    for m in measurements {
        for field in ["transport", "op", "pattern"] {
            assert!(m[field].is_string(), "{field} in {m}");
        }
        for field in ["size", "gbps", "p50_us", "p99_us"] {
            assert!(m[field].as_f64().is_some_and(|v| v >= 0.0), "{field} in {m}");
        }
        assert!(m["p99_us"].as_f64() >= m["p50_us"].as_f64(), "{m}");
    }
    let has = |transport: &str, size: u64| {
        measurements.iter().any(|m| m["transport"] == transport && m["size"] == size && m["gbps"].as_f64() > Some(0.0))
    };
    for size in [64, 4096, 65536, 1 << 20] {
        for transport in ["in-process", "shm", "tcp", "redis", "tcp-stream", "memcpy"] {
            assert!(has(transport, size), "{transport} at {size} B");
        }
    }
    let checks = report["checks"].as_array().expect("checks array");
    assert!(checks.iter().any(|c| c["name"].as_str().is_some_and(|n| n.contains("redis"))));
}

#[test]
fn bench_locality_json_compares_placements_for_each_pair_count() {
    let report = json(&resc(&["bench", "locality", "--json", "--quick"]));
    let points = report["points"].as_array().expect("points array");
    for pairs in [1, 4] {
        let of = |placement: &str| {
            points
                .iter()
                .find(|p| p["pairs"] == pairs && p["placement"] == placement)
                .unwrap_or_else(|| panic!("{placement} at {pairs} pairs"))
        };
        let (local, remote) = (of("locality"), of("no-locality"));
        // Locality-aware placement puts every memory component on its compute node.
        assert_eq!(local["colocated"], pairs);
        assert!(remote["colocated"].as_u64() <= Some(pairs));
        for p in [local, remote] {
            assert!(
                p["gbps"].as_f64().is_some_and(|g| g > 0.0) && p["mean_latency_us"].as_f64().is_some_and(|l| l > 0.0)
            );
        }
    }
}

#[test]
fn bench_sched_json_reports_throughput_stranding_and_the_three_start_up_modes() {
    let report = json(&resc(&["bench", "sched", "--json", "--quick"]));
    let rack = &report["scheduler"]["rack"];
    assert!(rack["placements_per_sec"].as_f64().is_some_and(|r| r > 0.0));
    assert!(!report["scheduler"]["stranding"].as_array().expect("stranding array").is_empty());
    let startup = report["startup"].as_array().expect("startup array");
    let mode = |name: &str| {
        startup.iter().find(|c| c["mode"] == name).unwrap_or_else(|| panic!("mode {name} missing: {startup:?}"))
    };
    // Two measured invocations of 10 components each.
    assert_eq!(mode("cold")["warm"]["misses"], 20, "cold: every start is cold");
    assert_eq!(mode("cold+prewarm")["warm"]["prewarm_hits"], 18, "all but the first component pre-warmed");
    assert_eq!(mode("warm")["warm"]["hits"], 20, "warm: every start finds its sandbox");
    assert!(report["checks"].as_array().is_some_and(|c| c.len() >= 4));
}

#[test]
fn bench_faults_json_reports_recovery_per_fault_and_logging_cost() {
    let report = json(&resc(&["bench", "faults", "--json", "--quick"]));
    let recovery = report["recovery"].as_array().expect("recovery array");
    let kinds: Vec<&str> = recovery.iter().filter_map(|r| r["fault"].as_str()).collect();
    assert_eq!(kinds, ["compute", "memory", "node"]);
    let logging = report["logging"].as_array().expect("logging array");
    for log in ["memory (off)", "file (every record)", "file (batched)"] {
        assert!(logging.iter().any(|l| l["log"] == log), "{log} missing: {logging:?}");
    }
    assert!(logging.iter().all(|l| l["chain_ms"].as_f64().is_some_and(|ms| ms > 0.0)));
}

#[test]
fn demo_adjust_json_compares_three_policies_on_three_profiles() {
    let report = json(&resc(&["demo", "adjust", "--json", "--invocations", "300", "--every", "50"]));
    let results = report["results"].as_array().expect("results array");
    assert_eq!(results.len(), 9);
    let small = |policy: &str| {
        results.iter().find(|r| r["app"] == "small" && r["policy"] == policy).and_then(|r| r["utilization"].as_f64())
    };
    // Small invocations waste most of a fixed 256 MiB start; the adjuster sizes for them.
    assert!(small("dynamic") > small("fixed"), "{results:?}");
}

#[test]
fn bench_ilp_json_reports_our_solver_on_every_instance() {
    let report = json(&resc(&["bench", "ilp", "--json", "--quick", "--no-python"]));
    let results = report["results"].as_array().expect("results array");
    let ours: Vec<_> = results.iter().filter(|r| r["solver"] == "resc").collect();
    assert_eq!(ours.len(), 2, "one per quick instance");
    for r in ours {
        assert!(r["median_ms"].as_f64().is_some_and(|ms| ms >= 0.0) && r["objective"].as_f64().is_some());
        // A proven gap: the bound never exceeds the (minimized) objective.
        let (objective, bound) = (r["objective"].as_f64().unwrap_or(-1.0), r["bound"].as_f64().unwrap_or(f64::MAX));
        assert!(bound <= objective && r["gap"].as_f64().is_some_and(|g| g >= 0.0), "{r}");
    }
}

#[test]
fn bench_swap_json_reports_each_case_against_all_local() {
    let report = json(&resc(&["bench", "swap", "--json", "--quick"]));
    let cases = report["cases"].as_array().expect("cases array");
    assert!(!cases.is_empty());
    for c in cases {
        for field in ["array_mib", "local_mib", "pattern", "work", "seconds", "seconds_all_local", "overhead"] {
            assert!(!c[field].is_null(), "{field} missing in {c}");
        }
        assert_eq!(c["checksum_ok"], true, "far and local reads computed the same: {c}");
    }
}
