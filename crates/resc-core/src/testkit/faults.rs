//! Fault injection through the traits (redb's pattern): wrappers that make a
//! working backend fail on demand, to test what the layers above do then.

use crate::ids::Endpoint;
use crate::transport::{BatchError, Message, RemoteOp, Transport, TransportError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A [`Transport`] that forwards to another and fails one-sided operations
/// when told to: every write or every read while switched on, or every
/// operation after a given count. A failed operation has no effect, and the
/// batch stops there as the contract requires.
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    fail_writes: AtomicBool,
    fail_reads: AtomicBool,
    /// Operations left before every operation fails (`u64::MAX`: never).
    budget: AtomicU64,
}

impl std::fmt::Debug for FaultyTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyTransport")
            .field("fail_writes", &self.fail_writes.load(Ordering::SeqCst))
            .field("fail_reads", &self.fail_reads.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl FaultyTransport {
    /// A wrapper that fails nothing yet.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        FaultyTransport {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
        }
    }

    /// Fails every one-sided write while `on`.
    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Fails every one-sided read while `on`.
    pub fn fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::SeqCst);
    }

    /// Lets `n` more one-sided operations through, then fails all (a crash).
    pub fn fail_after(&self, n: u64) {
        self.budget.store(n, Ordering::SeqCst);
    }

    fn fails(&self, op: &RemoteOp<'_>) -> bool {
        let switched = match op {
            RemoteOp::Read { .. } => self.fail_reads.load(Ordering::SeqCst),
            RemoteOp::Write { .. } => self.fail_writes.load(Ordering::SeqCst),
        };
        let spent = self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1)).is_err();
        switched || spent
    }
}

impl Transport for FaultyTransport {
    fn execute(&self, ops: &mut [RemoteOp<'_>]) -> Result<(), BatchError> {
        for (index, op) in ops.iter_mut().enumerate() {
            if self.fails(op) {
                return Err(BatchError { index, error: TransportError::Disconnected("injected fault".into()) });
            }
            self.inner.execute(std::slice::from_mut(op)).map_err(|e| BatchError { index, error: e.error })?;
        }
        Ok(())
    }

    fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError> {
        self.inner.open_endpoint(endpoint)
    }

    fn close_endpoint(&self, endpoint: &Endpoint) {
        self.inner.close_endpoint(endpoint)
    }

    fn send(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
        self.inner.send(from, to, payload)
    }

    fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError> {
        self.inner.recv(at, timeout)
    }
}
