//! Code pieces on threads of this process.

use crate::runtime::CodeError;
use crate::sandbox::{run_piece, ComputeUsage, Done, Sandbox, SandboxError, SandboxJob, SandboxOutcome, ThreadAccount};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

/// A [`Sandbox`] that runs each job on a thread of its own. It isolates
/// failures (a panic is an outcome, not a crash) but not memory: it is the
/// embedded platform's sandbox and the reference for the conformance suite.
#[derive(Debug, Clone, Default)]
pub struct ThreadSandbox {
    stack_bytes: Option<usize>,
}

impl ThreadSandbox {
    /// Threads with the platform's default stack.
    pub fn new() -> Self {
        Self::default()
    }

    /// Threads with `bytes` of stack.
    pub fn with_stack(bytes: usize) -> Self {
        ThreadSandbox { stack_bytes: Some(bytes) }
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

impl Sandbox for ThreadSandbox {
    fn start(&self, job: SandboxJob, done: Done) -> Result<(), SandboxError> {
        let label = job.label.clone();
        let mut builder = std::thread::Builder::new().name(label.chars().take(15).collect());
        if let Some(bytes) = self.stack_bytes {
            builder = builder.stack_size(bytes);
        }
        let requested = Instant::now();
        builder
            .spawn(move || {
                let SandboxJob { label, piece, mut context, account } = job;
                let started = Instant::now();
                let load = started.duration_since(requested);
                let cpu_start = cpu_time::ThreadTime::try_now().ok();
                let output = {
                    if let Some(account) = &account {
                        account.enter();
                    }
                    let _entered = Entered(account);
                    catch_unwind(AssertUnwindSafe(|| run_piece(&*piece, &mut context)))
                        .unwrap_or_else(|payload| Err(CodeError::Panicked(panic_message(payload.as_ref()))))
                };
                let cpu = cpu_start.and_then(|t| t.try_elapsed().ok()).unwrap_or_default();
                let usage = ComputeUsage { cpu, wall: started.elapsed(), load };
                done(SandboxOutcome { label, output, usage, context });
            })
            .map(|_| ())
            .map_err(|e| SandboxError::StartFailed { label, reason: e.to_string() })
    }
}
