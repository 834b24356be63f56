//! The platform process is killed with SIGKILL mid-run and restarted: every
//! invocation it accepted completes, and its output reaches the outside
//! world (a file) exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn resc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_resc"))
}

fn ids(lines: &[String], what: &str) -> BTreeSet<u64> {
    lines.iter().filter_map(|l| l.strip_prefix(what)?.trim().parse().ok()).collect()
}

/// Output lines per invocation.
fn outputs(path: &Path) -> BTreeMap<u64, Vec<String>> {
    let mut by_id: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let (id, hex) = line.split_once(' ').expect("a line is `<id> <hex>`");
        by_id.entry(id.parse().expect("an id")).or_default().push(hex.to_owned());
    }
    by_id
}

#[test]
fn a_platform_killed_mid_run_finishes_every_accepted_invocation_once_after_restart() {
    let dir = std::env::temp_dir().join(format!("resc-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (log, out) = (dir.join("log"), dir.join("outputs"));
    let args = |count: &str| {
        let mut c = resc();
        c.args(["run", "--log"]).arg(&log).arg("--outputs").arg(&out).args(["--count", count, "--sleep-ms", "5"]);
        c
    };
    // Run many invocations; kill the process once three are delivered, in
    // the middle of the next one (each takes 10 × 5 ms).
    let mut child = args("1000").stdout(Stdio::piped()).spawn().expect("resc run starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("utf-8 lines");
        let done = line.starts_with("delivered 3");
        seen.push(line);
        if done {
            std::thread::sleep(Duration::from_millis(20));
            break;
        }
        assert!(Instant::now() < deadline, "resc run made no progress: {seen:?}");
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // What it printed before it died.
    seen.extend(lines.map_while(Result::ok));
    let accepted = ids(&seen, "accepted");
    assert!(accepted.len() >= 4, "the killed run accepted {accepted:?}");

    // Restart: recover, and run one more.
    let restarted = args("1").output().expect("resc run restarts");
    assert!(restarted.status.success(), "stderr: {}", String::from_utf8_lossy(&restarted.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&restarted.stdout).lines().map(str::to_owned).collect();
    let recovered = ids(&lines, "recovered");
    assert!(!recovered.is_empty(), "the invocation in flight at the kill was recovered: {lines:?}");
    assert!(recovered.is_subset(&accepted), "only accepted invocations are recovered");
    let fresh = ids(&lines, "accepted");
    assert!(fresh.iter().all(|id| !accepted.contains(id)), "new invocations get new ids: {fresh:?}");

    let delivered = outputs(&out);
    let expected: BTreeSet<u64> = accepted.union(&fresh).copied().collect();
    assert_eq!(delivered.keys().copied().collect::<BTreeSet<u64>>(), expected, "every accepted invocation delivered");
    for (id, lines) in &delivered {
        assert_eq!(lines.len(), 1, "invocation {id} delivered {} times", lines.len());
        assert_eq!(lines[0], delivered[&1][0], "the chain passes its input through: every output is the same");
    }
    // A third start finds nothing left to do.
    let idle = args("0").output().expect("resc run starts again");
    assert!(idle.status.success());
    assert!(ids(&String::from_utf8_lossy(&idle.stdout).lines().map(str::to_owned).collect::<Vec<_>>(), "recovered")
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
