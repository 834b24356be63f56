//! Sandboxes: where code pieces run.
//!
//! # Contract
//!
//! - [`Sandbox::start`] runs the job's code piece with its context through
//!   [`run_piece`], off the caller's thread, and calls `done` **exactly
//!   once** with the outcome, whether the piece returned, failed or panicked
//!   (a panic becomes [`CodeError::Panicked`]). When `start` returns an
//!   error, `done` is never called.
//! - The outcome's [`ComputeUsage`] reports the piece's CPU time and wall
//!   time as measured in the sandbox.
//! - When the job carries a [`ThreadAccount`], every allocation the piece
//!   makes on the sandbox's thread is charged to it: the sandbox enters the
//!   account before the piece runs and leaves it after, also on panic.

use crate::runtime::{CodeError, Context};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A code piece: application code that uses only the runtime API.
pub trait CodePiece: Send + Sync {
    /// Runs one instance; the returned bytes are its output, the input of the
    /// components it triggers.
    fn run(&self, ctx: &mut Context) -> Result<Vec<u8>, CodeError>;
}

impl<F> CodePiece for F
where
    F: Fn(&mut Context) -> Result<Vec<u8>, CodeError> + Send + Sync,
{
    fn run(&self, ctx: &mut Context) -> Result<Vec<u8>, CodeError> {
        self(ctx)
    }
}

/// Runs a code piece to its end as every sandbox must: its output counts
/// only once the writes it buffered have reached memory (a piece that
/// returns without `sync` loses nothing).
pub fn run_piece(piece: &dyn CodePiece, ctx: &mut Context) -> Result<Vec<u8>, CodeError> {
    let output = piece.run(ctx)?;
    ctx.sync_all()?;
    Ok(output)
}

/// Code pieces by the names templates refer to them with (`"code": "lr.train"`).
#[derive(Clone, Default)]
pub struct CodeRegistry {
    pieces: HashMap<String, Arc<dyn CodePiece>>,
}

impl std::fmt::Debug for CodeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.pieces.keys().collect();
        names.sort();
        f.debug_struct("CodeRegistry").field("pieces", &names).finish()
    }
}

impl CodeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `piece` as `name`, replacing any piece of that name.
    pub fn register(&mut self, name: impl Into<String>, piece: impl CodePiece + 'static) -> &mut Self {
        self.pieces.insert(name.into(), Arc::new(piece));
        self
    }

    /// The piece registered as `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn CodePiece>, CodeError> {
        self.pieces.get(name).cloned().ok_or_else(|| CodeError::NotRegistered(name.to_owned()))
    }

    /// Whether every compute component of `graph` has a registered piece;
    /// the first missing reference otherwise.
    pub fn check(&self, graph: &crate::graph::ResourceGraph) -> Result<(), CodeError> {
        for component in graph.compute_components() {
            self.get(&component.code)?;
        }
        Ok(())
    }
}

/// Charges the allocations of the thread that entered it to one account.
/// The platform's metering implements it (for example with a counting
/// global allocator); the sandbox only enters and leaves.
pub trait ThreadAccount: Send + Sync {
    /// Charges the current thread's allocations to this account from now on.
    fn enter(&self);
    /// Stops charging the current thread.
    fn leave(&self);
}

/// One code piece instance to run.
pub struct SandboxJob {
    /// A label for threads and logs, e.g. `lr/train#0`.
    pub label: String,
    /// The code.
    pub piece: Arc<dyn CodePiece>,
    /// Its context.
    pub context: Context,
    /// Where its allocations are charged, if anywhere.
    pub account: Option<Arc<dyn ThreadAccount>>,
}

/// What a sandbox measured of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ComputeUsage {
    /// CPU time the piece's thread used.
    pub cpu: Duration,
    /// Wall time from the piece's start to its end.
    pub wall: Duration,
    /// From `start` to the piece's first instruction: the environment and
    /// code getting ready (for a thread sandbox, the thread's start).
    pub load: Duration,
}

/// How a run ended.
#[derive(Debug)]
pub struct SandboxOutcome {
    /// The label of the job.
    pub label: String,
    /// The output, or why there is none.
    pub output: Result<Vec<u8>, CodeError>,
    /// What was measured.
    pub usage: ComputeUsage,
    /// The context, handed back so the platform can read its cache counters.
    pub context: Context,
}

/// Why a sandbox could not start a job.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The system refused to create the execution environment.
    #[error("could not start sandbox for {label}: {reason}")]
    StartFailed {
        /// The job's label.
        label: String,
        /// Why.
        reason: String,
    },
}

/// Completion callback of [`Sandbox::start`].
pub type Done = Box<dyn FnOnce(SandboxOutcome) + Send>;

/// An execution environment for code pieces. See the [module documentation](self).
pub trait Sandbox: Send + Sync {
    /// Starts `job`; `done` receives its outcome exactly once.
    fn start(&self, job: SandboxJob, done: Done) -> Result<(), SandboxError>;
}
