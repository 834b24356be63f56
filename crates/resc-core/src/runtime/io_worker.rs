//! A thread that runs one compute instance's asynchronous reads, so that
//! they overlap the code piece's computation.

use crossbeam_channel::Sender;

/// Work for the I/O thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Runs submitted jobs in order on a thread of its own; the thread ends
/// when the worker is dropped.
pub(crate) struct IoWorker {
    jobs: Sender<Job>,
}

impl IoWorker {
    /// Starts the thread; `None` if the system refuses one.
    pub(crate) fn spawn() -> Option<IoWorker> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        std::thread::Builder::new()
            .name("resc-io".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .ok()?;
        Some(IoWorker { jobs })
    }

    /// Queues a job; gives it back if the thread is gone.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|e| e.0)
    }
}
