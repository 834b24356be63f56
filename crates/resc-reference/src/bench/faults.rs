//! `resc bench faults`: how long recovery takes after each kind of fault,
//! and what durable trigger logging costs the warm chain, side by side.
//!
//! Recovery time is an invocation's latency with one fault injected (at the
//! same start every time) minus its median latency without, on the LR
//! application. The logging cost is the warm chain's median latency with
//! each trigger log against the in-memory log (no durability: logging off).

use super::median;
use crate::apps::{self, chain::ChainJob, lr::LrJob, CHAIN_TEMPLATE, LR_TEMPLATE};
use crate::embedded::{EmbeddedPlatform, Fault, FaultPlan, PlatformConfig, PlatformError};
use crate::trigger_log::{FileLogOptions, FileTriggerLog, FsyncPolicy};
use resc_core::memory::CacheConfig;
use resc_core::resources::{KIB, MIB};
use resc_core::sandbox::CodeRegistry;
use resc_core::size_class::SizeClasses;
use resc_core::template;
use resc_core::trigger_log::TriggerLog;
use serde::Serialize;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// What to run.
#[derive(Debug, Clone)]
pub struct FaultBenchOptions {
    /// Invocations per measurement.
    pub repeat: u32,
    /// Sleep per chain component, ms (the warm chain of Table 1: 100).
    pub chain_sleep_ms: u64,
    /// LR input size, bytes.
    pub lr_bytes: u64,
    /// A NATS server for the JetStream log; `None`: start `nats-server -js`
    /// if it is installed, else leave JetStream out.
    pub nats_url: Option<String>,
}

impl Default for FaultBenchOptions {
    fn default() -> Self {
        FaultBenchOptions { repeat: 5, chain_sleep_ms: 100, lr_bytes: 2_000_000, nats_url: None }
    }
}

impl FaultBenchOptions {
    /// A smoke test: two invocations each, 1 ms sleeps, a small LR input.
    pub fn quick() -> Self {
        FaultBenchOptions { repeat: 2, chain_sleep_ms: 1, lr_bytes: 200_000, nats_url: None }
    }
}

/// Recovery after one kind of fault.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    /// `compute`, `memory` or `node`.
    pub fault: String,
    /// Median LR latency with the fault, ms.
    pub faulty_ms: f64,
    /// Median LR latency without faults, ms.
    pub clean_ms: f64,
    /// The difference: what recovering cost, ms.
    pub recovery_ms: f64,
}

/// The warm chain with one trigger log.
#[derive(Debug, Clone, Serialize)]
pub struct Logging {
    /// `memory (off)`, `file (every record)`, `file (batched)` or `jetstream`.
    pub log: String,
    /// Median end-to-end latency, ms.
    pub chain_ms: f64,
    /// Against the in-memory log: `chain_ms / off − 1`.
    pub overhead: f64,
}

/// A bar of the issue, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct FaultCheck {
    /// What is compared.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// The bound.
    pub at_most: f64,
    /// Whether the value is within it.
    pub reached: bool,
}

/// Everything `resc bench faults` measured.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// Per kind of fault.
    pub recovery: Vec<Recovery>,
    /// Per trigger log.
    pub logging: Vec<Logging>,
    /// Logs left out, and why.
    pub skipped: Vec<String>,
    /// The bars.
    pub checks: Vec<FaultCheck>,
}

/// Why the benchmark could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FaultBenchError {
    /// The platform refused or an invocation failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// A template, input or log directory is broken.
    #[error("{0}")]
    Setup(String),
}

fn lr_config() -> PlatformConfig {
    PlatformConfig {
        size_classes: SizeClasses::powers_of_two(MIB, 16 * MIB, 4 * MIB).unwrap_or_default(),
        cache: CacheConfig::new(256 * KIB, 4 * KIB),
        ..PlatformConfig::default()
    }
}

/// Median LR latency, ms, with `fault` injected at the third start of each
/// invocation (split, by then the input is in memory), or without.
fn lr_latency(options: &FaultBenchOptions, fault: Option<Fault>) -> Result<f64, FaultBenchError> {
    let mut registry = CodeRegistry::new();
    apps::lr::register(&mut registry);
    let mut job = LrJob::new(options.lr_bytes);
    job.epochs = 3;
    let job = serde_json::to_vec(&job).map_err(|e| FaultBenchError::Setup(e.to_string()))?;
    let mut walls = Vec::new();
    for _ in 0..options.repeat {
        let mut platform = EmbeddedPlatform::new(lr_config(), registry.clone())?;
        if fault.is_some() {
            platform = platform.with_fault_plan(Arc::new(FaultPlan::listed([None, None, fault])));
        }
        let graph = template::parse(LR_TEMPLATE).map_err(|e| FaultBenchError::Setup(e.to_string()))?;
        let deployment = platform.deploy(graph)?;
        walls.push(platform.invoke(&deployment, &job)?.wall.as_secs_f64() * 1e3);
    }
    Ok(median(&mut walls))
}

/// Median warm-chain latency, ms, with `log`.
fn chain_latency(options: &FaultBenchOptions, log: Arc<dyn TriggerLog>) -> Result<f64, FaultBenchError> {
    let mut registry = CodeRegistry::new();
    apps::chain::register(&mut registry);
    let platform = EmbeddedPlatform::new(PlatformConfig::default(), registry)?.with_trigger_log(log);
    let graph = template::parse(CHAIN_TEMPLATE).map_err(|e| FaultBenchError::Setup(e.to_string()))?;
    let deployment = platform.deploy(graph)?;
    let job = serde_json::to_vec(&ChainJob { sleep_ms: options.chain_sleep_ms })
        .map_err(|e| FaultBenchError::Setup(e.to_string()))?;
    platform.invoke(&deployment, &job)?; // warms the sandboxes
    let mut walls = Vec::new();
    for _ in 0..options.repeat {
        walls.push(platform.invoke(&deployment, &job)?.wall.as_secs_f64() * 1e3);
    }
    Ok(median(&mut walls))
}

/// A `nats-server -js` child on a free loopback port, stopped when dropped.
struct NatsServer {
    child: Child,
    store: std::path::PathBuf,
    url: String,
}

impl NatsServer {
    fn start() -> Result<NatsServer, String> {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let store = std::env::temp_dir().join(format!("resc-bench-nats-{}-{port}", std::process::id()));
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nats-server: {e}"))?;
        let server = NatsServer { child, store, url: format!("nats://127.0.0.1:{port}") };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err("nats-server did not start listening within 5 s".into())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn file_log(dir: &std::path::Path, fsync: FsyncPolicy) -> Result<Arc<dyn TriggerLog>, FaultBenchError> {
    let options = FileLogOptions { fsync, ..FileLogOptions::default() };
    let log = FileTriggerLog::open(dir, options).map_err(|e| FaultBenchError::Setup(e.to_string()))?;
    Ok(Arc::new(log))
}

/// The trigger logs to compare, and those left out with why.
fn logs(options: &FaultBenchOptions, scratch: &std::path::Path) -> Result<LogSet, FaultBenchError> {
    let mut set = LogSet {
        logs: Vec::new(),
        skipped: Vec::new(),
        #[cfg(feature = "jetstream")]
        jetstream: None,
        _nats: None,
    };
    set.logs.push(("file (every record)".into(), file_log(&scratch.join("every"), FsyncPolicy::EveryRecord)?));
    set.logs.push(("file (batched)".into(), file_log(&scratch.join("batched"), FsyncPolicy::batched())?));
    let url = match &options.nats_url {
        Some(url) => Some(url.clone()),
        None => match NatsServer::start() {
            Ok(server) => {
                let url = server.url.clone();
                set._nats = Some(server);
                Some(url)
            }
            Err(why) => {
                set.skipped.push(format!("jetstream: {why}"));
                None
            }
        },
    };
    if let Some(url) = url {
        jetstream(url, &mut set);
    }
    Ok(set)
}

#[cfg(feature = "jetstream")]
fn jetstream(url: String, set: &mut LogSet) {
    use crate::trigger_log::{JetStreamConfig, JetStreamTriggerLog};
    let stream = format!("resc_bench_{}", std::process::id());
    match JetStreamTriggerLog::connect(JetStreamConfig::new(url, stream)) {
        Ok(log) => {
            let log = Arc::new(log);
            set.logs.push(("jetstream".into(), log.clone()));
            set.jetstream = Some(log);
        }
        Err(e) => set.skipped.push(format!("jetstream: {e}")),
    }
}

#[cfg(not(feature = "jetstream"))]
fn jetstream(_: String, set: &mut LogSet) {
    set.skipped.push("jetstream: built without the `jetstream` feature".into());
}

struct LogSet {
    logs: Vec<(String, Arc<dyn TriggerLog>)>,
    skipped: Vec<String>,
    /// The JetStream log, to delete its stream when done.
    #[cfg(feature = "jetstream")]
    jetstream: Option<Arc<crate::trigger_log::JetStreamTriggerLog>>,
    _nats: Option<NatsServer>,
}

impl Drop for LogSet {
    fn drop(&mut self) {
        // Only this set holds the logs: the stream goes once nothing uses it.
        self.logs.clear();
        #[cfg(feature = "jetstream")]
        if let Some(log) = self.jetstream.take().and_then(|log| Arc::try_unwrap(log).ok()) {
            let _ = log.delete_stream();
        }
    }
}

/// Runs every measurement.
pub fn run(options: &FaultBenchOptions, progress: &mut dyn FnMut(&str)) -> Result<FaultReport, FaultBenchError> {
    progress("LR without faults");
    let clean_ms = lr_latency(options, None)?;
    let mut recovery = Vec::new();
    for (name, fault) in [
        ("compute", Fault::KillCompute { after_ops: 8 }),
        ("memory", Fault::KillMemory { pick: 0 }),
        ("node", Fault::KillNode),
    ] {
        progress(name);
        let faulty_ms = lr_latency(options, Some(fault))?;
        recovery.push(Recovery { fault: name.into(), faulty_ms, clean_ms, recovery_ms: faulty_ms - clean_ms });
    }
    progress("chain, logging off");
    let off_ms = chain_latency(options, Arc::new(resc_core::inproc::InMemoryTriggerLog::new()))?;
    let mut logging = vec![Logging { log: "memory (off)".into(), chain_ms: off_ms, overhead: 0.0 }];
    let scratch = std::env::temp_dir().join(format!("resc-bench-faults-{}", std::process::id()));
    let mut set = logs(options, &scratch)?;
    for (name, log) in &set.logs {
        progress(name);
        let chain_ms = chain_latency(options, log.clone())?;
        logging.push(Logging { log: name.clone(), chain_ms, overhead: chain_ms / off_ms - 1.0 });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let checks = logging
        .iter()
        .filter(|l| l.log.starts_with("file"))
        .map(|l| FaultCheck {
            name: format!("bar: {} log overhead on the warm chain", l.log),
            value: l.overhead,
            at_most: 0.10,
            reached: l.overhead <= 0.10,
        })
        .collect();
    let skipped = std::mem::take(&mut set.skipped);
    Ok(FaultReport { recovery, logging, skipped, checks })
}

/// Renders the report as text.
pub fn table(report: &FaultReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "recovery (LR):  fault     with fault ms   without ms   recovery ms");
    for r in &report.recovery {
        let _ = writeln!(
            out,
            "                {:<8} {:>13.1} {:>12.1} {:>13.1}",
            r.fault, r.faulty_ms, r.clean_ms, r.recovery_ms
        );
    }
    let _ = writeln!(out, "logging (warm chain):  log                   chain ms   overhead");
    for l in &report.logging {
        let _ = writeln!(out, "                       {:<20} {:>9.1} {:>9.2} %", l.log, l.chain_ms, l.overhead * 100.0);
    }
    for s in &report.skipped {
        let _ = writeln!(out, "skipped: {s}");
    }
    for c in &report.checks {
        let verdict = if c.reached { "reached" } else { "NOT reached" };
        let _ = writeln!(out, "{}: {:.4} (at most {:.2}): {verdict}", c.name, c.value, c.at_most);
    }
    out
}
