//! `resc run`: the chain application on the embedded platform with a durable
//! file trigger log, as a long-running service would use it. At start it
//! runs whatever the log holds as accepted and unfinished (the platform died
//! mid-run), then accepts and runs new invocations. Each output goes to an
//! outputs file once per invocation: the file is the outside world, and
//! skipping invocations it already holds makes the at-least-once runs
//! exactly-once as observed there.

use crate::apps::{self, chain::ChainJob, CHAIN_TEMPLATE};
use crate::embedded::{EmbeddedPlatform, InvocationReport, PlatformConfig, PlatformError};
use crate::trigger_log::{FileLogOptions, FileTriggerLog};
use resc_core::ids::InvocationId;
use resc_core::sandbox::CodeRegistry;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The trigger log's directory.
    pub log_dir: PathBuf,
    /// Where outputs go, a line `<invocation> <output as hex>` each.
    pub outputs: PathBuf,
    /// New invocations to accept after recovering.
    pub count: u32,
    /// Sleep per chain component, ms.
    pub sleep_ms: u64,
}

/// What happened, as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// An unfinished invocation from the log ran to completion.
    Recovered(InvocationId),
    /// A new invocation's input is durably in the log.
    Accepted(InvocationId),
    /// An invocation's output reached the outputs file.
    Delivered(InvocationId),
}

/// Why the run stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// The platform or the log failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The outputs file could not be read or written.
    #[error("outputs file {path}: {source}")]
    Outputs {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The outputs file: appends an invocation's line unless it holds one.
struct Outputs {
    path: PathBuf,
    delivered: BTreeSet<u64>,
}

impl Outputs {
    fn open(path: PathBuf) -> Result<Outputs, RunError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(RunError::Outputs { path, source }),
        };
        // A torn last line (a crash mid-write) names no complete delivery.
        let delivered = text
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, hex)| !hex.is_empty() && hex.len() % 2 == 0)
            .filter_map(|(id, _)| id.parse().ok())
            .collect();
        Ok(Outputs { path, delivered })
    }

    fn deliver(&mut self, report: &InvocationReport) -> Result<bool, RunError> {
        if self.delivered.contains(&report.invocation.0) {
            return Ok(false);
        }
        let hex: String = report.outputs.concat().iter().map(|b| format!("{b:02x}")).collect();
        let failed = |source| RunError::Outputs { path: self.path.clone(), source };
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(failed)?;
        writeln!(file, "{} {hex}", report.invocation.0).map_err(failed)?;
        file.sync_data().map_err(failed)?;
        self.delivered.insert(report.invocation.0);
        Ok(true)
    }
}

/// The outputs file and whoever listens to the run.
struct Sink<'a> {
    outputs: Outputs,
    on_event: &'a mut dyn FnMut(RunEvent),
}

impl Sink<'_> {
    fn deliver(&mut self, report: &InvocationReport) -> Result<(), PlatformError> {
        let delivered = self.outputs.deliver(report).map_err(|e| match e {
            RunError::Platform(e) => e,
            other => PlatformError::Config(other.to_string()),
        })?;
        if delivered {
            (self.on_event)(RunEvent::Delivered(report.invocation));
        }
        Ok(())
    }
}

/// Recovers, then runs `count` new invocations of the chain.
pub fn run_chain(options: &RunOptions, on_event: &mut dyn FnMut(RunEvent)) -> Result<(), RunError> {
    let log = FileTriggerLog::open(&options.log_dir, FileLogOptions::default()).map_err(PlatformError::from)?;
    let mut registry = CodeRegistry::new();
    apps::chain::register(&mut registry);
    let platform = EmbeddedPlatform::new(PlatformConfig::default(), registry)?.with_trigger_log(Arc::new(log));
    let graph = resc_core::template::parse(CHAIN_TEMPLATE).map_err(|e| PlatformError::Config(e.to_string()))?;
    let deployment = platform.deploy(graph)?;
    let mut sink = Sink { outputs: Outputs::open(options.outputs.clone())?, on_event };
    for report in platform.recover(&deployment, |r| sink.deliver(r))? {
        (sink.on_event)(RunEvent::Recovered(report.invocation));
    }
    let job = serde_json::to_vec(&ChainJob { sleep_ms: options.sleep_ms })
        .map_err(|e| PlatformError::Config(e.to_string()))?;
    for _ in 0..options.count {
        let invocation = platform.accept(&job)?;
        (sink.on_event)(RunEvent::Accepted(invocation));
        platform.run_accepted(&deployment, invocation, &job, |r| sink.deliver(r))?;
    }
    Ok(())
}
