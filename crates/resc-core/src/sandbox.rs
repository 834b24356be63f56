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
//! - An environment loads a job's code (calls its [`CodeLoader`]) inside
//!   itself, before the piece runs: a cold start pays for the load, and
//!   [`ComputeUsage::load`] includes it. A loader's error is the outcome.
//!
//! ## Warm environments (optional)
//!
//! A sandbox that keeps environments between runs implements
//! [`Sandbox::prepare`], [`Sandbox::start_in`] and [`Sandbox::retire`]; one
//! that does not leaves the defaults, which refuse with
//! [`SandboxError::Unsupported`].
//!
//! - `prepare` creates an idle environment and starts loading the code in it
//!   (a pre-warm); it returns at once with the environment's id.
//! - `start_in` runs a job in a prepared environment on the code it loaded
//!   (the loader is called once per environment, however many jobs run
//!   there); jobs given to one environment run one after another, in order.
//!   After `done`, the environment is idle again. An unknown or retired
//!   environment is refused with [`SandboxError::UnknownEnvironment`] and
//!   `done` is not called.
//! - `retire` tears an environment down once its queued jobs are done;
//!   retiring an unknown environment does nothing.

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
    pieces: HashMap<String, CodeLoader>,
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

    /// Registers `piece` as `name`, replacing any piece of that name; it
    /// loads at no cost.
    pub fn register(&mut self, name: impl Into<String>, piece: impl CodePiece + 'static) -> &mut Self {
        self.pieces.insert(name.into(), loaded(Arc::new(piece)));
        self
    }

    /// Registers a piece that each environment loads with `loader` (see
    /// [`CodeLoader`]), replacing any piece of that name.
    pub fn register_loader(
        &mut self,
        name: impl Into<String>,
        loader: impl Fn() -> Result<Arc<dyn CodePiece>, CodeError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.pieces.insert(name.into(), Arc::new(loader));
        self
    }

    /// The loader of the piece registered as `name`.
    pub fn loader(&self, name: &str) -> Result<CodeLoader, CodeError> {
        self.pieces.get(name).cloned().ok_or_else(|| CodeError::NotRegistered(name.to_owned()))
    }

    /// The piece registered as `name`, loaded here and now.
    pub fn get(&self, name: &str) -> Result<Arc<dyn CodePiece>, CodeError> {
        self.loader(name)?()
    }

    /// Whether every compute component of `graph` has a registered piece;
    /// the first missing reference otherwise.
    pub fn check(&self, graph: &crate::graph::ResourceGraph) -> Result<(), CodeError> {
        for component in graph.compute_components() {
            self.loader(&component.code)?;
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

/// Loads a code piece in the environment that will run it: whatever a
/// cold start costs beyond creating the environment (starting a language
/// runtime, importing code, reading a model) happens here, once per
/// environment.
pub type CodeLoader = Arc<dyn Fn() -> Result<Arc<dyn CodePiece>, CodeError> + Send + Sync>;

/// A loader for a piece that is already loaded (loading costs nothing).
pub fn loaded(piece: Arc<dyn CodePiece>) -> CodeLoader {
    Arc::new(move || Ok(piece.clone()))
}

/// One code piece instance to run.
pub struct SandboxJob {
    /// A label for threads and logs, e.g. `lr/train#0`.
    pub label: String,
    /// The code, loaded by the environment (see [`Sandbox::start_in`] for
    /// environments that loaded it already).
    pub code: CodeLoader,
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
    /// From `start` (or `start_in`) to the piece's first instruction: the
    /// environment and code getting ready. For a cold start, the
    /// environment's creation and the code's load; for a warm environment,
    /// its wake-up (and the rest of its load, if still loading).
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
    /// This sandbox keeps no warm environments.
    #[error("this sandbox does not keep warm environments")]
    Unsupported,
    /// The environment does not exist (never prepared, or retired).
    #[error("no environment {0:?} (never prepared, or retired)")]
    UnknownEnvironment(EnvId),
}

/// An environment kept between runs, named by the sandbox that prepared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct EnvId(pub u64);

/// Completion callback of [`Sandbox::start`].
pub type Done = Box<dyn FnOnce(SandboxOutcome) + Send>;

/// An execution environment for code pieces. See the [module documentation](self).
pub trait Sandbox: Send + Sync {
    /// Starts `job` cold, in an environment of its own that loads its code
    /// and is torn down after it; `done` receives its outcome exactly once.
    fn start(&self, job: SandboxJob, done: Done) -> Result<(), SandboxError>;

    /// Prepares an idle environment and starts loading `code` in it.
    fn prepare(&self, label: &str, code: CodeLoader) -> Result<EnvId, SandboxError> {
        let _ = (label, code);
        Err(SandboxError::Unsupported)
    }

    /// Runs `job` in the prepared environment `env`, on the code it loaded.
    fn start_in(&self, env: EnvId, job: SandboxJob, done: Done) -> Result<(), SandboxError> {
        let _ = (job, done);
        Err(SandboxError::UnknownEnvironment(env))
    }

    /// Tears `env` down once its queued jobs are done.
    fn retire(&self, env: EnvId) {
        let _ = env;
    }
}
