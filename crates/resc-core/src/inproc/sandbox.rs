//! Code pieces on threads of this process.

use crate::runtime::CodeError;
use crate::sandbox::{
    run_piece, CodeLoader, CodePiece, ComputeUsage, Done, EnvId, Sandbox, SandboxError, SandboxJob, SandboxOutcome,
    ThreadAccount,
};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A [`Sandbox`] whose environments are threads of this process. It isolates
/// failures (a panic is an outcome, not a crash) but not memory: it is the
/// embedded platform's sandbox and the reference for the conformance suite.
///
/// An environment is a thread that loads its code, then runs the jobs given
/// to it in order. A cold start ([`Sandbox::start`]) is an environment for
/// one job; a warm one ([`Sandbox::prepare`]) waits for jobs until retired.
/// Clones share their environments.
#[derive(Debug, Clone, Default)]
pub struct ThreadSandbox {
    stack_bytes: Option<usize>,
    envs: Arc<Mutex<HashMap<EnvId, Sender<Queued>>>>,
    next_env: Arc<AtomicU64>,
}

/// A job waiting for its environment, and when it was handed over.
struct Queued {
    job: SandboxJob,
    done: Done,
    requested: Instant,
}

impl ThreadSandbox {
    /// Threads with the platform's default stack.
    pub fn new() -> Self {
        Self::default()
    }

    /// Threads with `bytes` of stack.
    pub fn with_stack(bytes: usize) -> Self {
        ThreadSandbox { stack_bytes: Some(bytes), ..Self::default() }
    }

    /// Environments prepared and not yet retired.
    pub fn environments(&self) -> usize {
        self.envs.lock().len()
    }

    /// Starts an environment thread that loads `code` and runs what arrives on `jobs`.
    fn spawn(&self, label: &str, code: CodeLoader, jobs: Receiver<Queued>) -> Result<(), SandboxError> {
        let mut builder = std::thread::Builder::new().name(label.chars().take(15).collect());
        if let Some(bytes) = self.stack_bytes {
            builder = builder.stack_size(bytes);
        }
        builder
            .spawn(move || {
                let piece = catch_unwind(AssertUnwindSafe(|| code()))
                    .unwrap_or_else(|payload| Err(CodeError::Panicked(panic_message(payload.as_ref()))));
                for queued in jobs {
                    run(&piece, queued);
                }
            })
            .map(|_| ())
            .map_err(|e| SandboxError::StartFailed { label: label.to_owned(), reason: e.to_string() })
    }
}

/// Leaves the account when dropped, so a panic cannot leave a thread charged.
struct Entered(Option<Arc<dyn ThreadAccount>>);

impl Drop for Entered {
    fn drop(&mut self) {
        if let Some(account) = &self.0 {
            account.leave();
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

/// Runs one job on the environment's loaded piece (or reports why it has none).
fn run(piece: &Result<Arc<dyn CodePiece>, CodeError>, queued: Queued) {
    let Queued { job, done, requested } = queued;
    let SandboxJob { label, mut context, account, .. } = job;
    let started = Instant::now();
    let load = started.duration_since(requested);
    let cpu_start = cpu_time::ThreadTime::try_now().ok();
    let output = match piece {
        Ok(piece) => {
            if let Some(account) = &account {
                account.enter();
            }
            let _entered = Entered(account);
            catch_unwind(AssertUnwindSafe(|| run_piece(&**piece, &mut context)))
                .unwrap_or_else(|payload| Err(CodeError::Panicked(panic_message(payload.as_ref()))))
        }
        Err(e) => Err(e.clone()),
    };
    let cpu = cpu_start.and_then(|t| t.try_elapsed().ok()).unwrap_or_default();
    let usage = ComputeUsage { cpu, wall: started.elapsed(), load };
    done(SandboxOutcome { label, output, usage, context });
}

impl Sandbox for ThreadSandbox {
    fn start(&self, job: SandboxJob, done: Done) -> Result<(), SandboxError> {
        let (jobs, queue) = crossbeam_channel::bounded(1);
        let (label, code) = (job.label.clone(), job.code.clone());
        let requested = Instant::now();
        // The queue holds the one job; the thread ends once it has run it.
        let _ = jobs.send(Queued { job, done, requested });
        drop(jobs);
        self.spawn(&label, code, queue)
    }

    fn prepare(&self, label: &str, code: CodeLoader) -> Result<EnvId, SandboxError> {
        let (jobs, queue) = crossbeam_channel::unbounded();
        self.spawn(label, code, queue)?;
        let env = EnvId(self.next_env.fetch_add(1, Ordering::Relaxed));
        self.envs.lock().insert(env, jobs);
        Ok(env)
    }

    fn start_in(&self, env: EnvId, job: SandboxJob, done: Done) -> Result<(), SandboxError> {
        let jobs = self.envs.lock().get(&env).cloned().ok_or(SandboxError::UnknownEnvironment(env))?;
        jobs.send(Queued { job, done, requested: Instant::now() }).map_err(|_| SandboxError::UnknownEnvironment(env))
    }

    fn retire(&self, env: EnvId) {
        // The thread finishes what is queued, then sees the queue closed.
        self.envs.lock().remove(&env);
    }
}
