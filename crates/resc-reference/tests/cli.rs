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
