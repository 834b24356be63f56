//! Write-behind: buffered writes that leave for memory on the instance's
//! I/O thread while the code piece goes on.
//!
//! A batch owns copies of its bytes until they are in memory. Before the
//! instance touches memory itself (a fetch, a direct read or write, a sync),
//! it [settles](WriteBehind::settle): it waits for the batches in flight, and
//! writes again, on its own thread, any batch that failed. Nothing a batch
//! carries is lost: a batch that fails again stays queued and the error is
//! reported, and the next settle tries once more. Reads and prefetches posted
//! to the same I/O thread run after the batches before them, in order.

use crate::memory::{Snapshot, VirtualMemory};
use crate::transport::{RemoteOp, Transport, TransportError};
use crossbeam_channel::Receiver;
use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes bound for virtual address `addr` of a component.
pub(crate) struct OwnedWrite {
    pub(crate) addr: u64,
    pub(crate) bytes: Box<[u8]>,
}

/// Writes to one component, written together.
pub(crate) struct WriteBatch {
    pub(crate) memory: Arc<VirtualMemory>,
    pub(crate) writes: Vec<OwnedWrite>,
}

impl WriteBatch {
    /// Writes the batch as one transport batch; returns the bytes written.
    /// Bytes of a released component, or past its end after a shrink, have
    /// no home and are dropped.
    pub(crate) fn write(&self, transport: &dyn Transport) -> Result<usize, TransportError> {
        let mut snapshot = Snapshot::default();
        if self.memory.refresh(&mut snapshot).is_err() {
            return Ok(0);
        }
        let mut ops: Vec<RemoteOp<'_>> = Vec::with_capacity(self.writes.len());
        let mut written = 0;
        for write in &self.writes {
            let len = (snapshot.len.saturating_sub(write.addr) as usize).min(write.bytes.len());
            let Some(pieces) = snapshot.map.split(write.addr, len) else { continue };
            for piece in pieces {
                ops.push(RemoteOp::Write {
                    region: piece.region,
                    offset: piece.offset,
                    data: &write.bytes[piece.buf_range()],
                });
            }
            written += len;
        }
        transport.execute(&mut ops).map(|()| written).map_err(|e| e.error)
    }
}

/// What the I/O thread hands back for a batch.
pub(crate) type Written = Result<usize, (TransportError, WriteBatch)>;

/// The batches of one instance not yet known to be in memory.
#[derive(Default)]
pub(crate) struct WriteBehind {
    /// Each batch's component, and where its outcome arrives.
    in_flight: VecDeque<(String, Receiver<Written>)>,
    failed: Vec<WriteBatch>,
}

/// A batch that could not be written, for the error report.
pub(crate) struct SettleError {
    pub(crate) component: String,
    pub(crate) source: TransportError,
}

impl WriteBehind {
    /// Records a batch posted to the I/O thread.
    pub(crate) fn posted(&mut self, component: String, done: Receiver<Written>) {
        self.in_flight.push_back((component, done));
    }

    /// Whether nothing is in flight or waiting.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.failed.is_empty()
    }

    /// Whether a batch failed and waits to be written again: memory lacks
    /// bytes this instance wrote, so nothing may be fetched ahead.
    pub(crate) fn has_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Waits for every batch in flight, then writes the failed ones again
    /// here. Returns the bytes the I/O thread wrote and the bytes written
    /// here; on an error, what is still unwritten stays queued.
    pub(crate) fn settle(&mut self, transport: &dyn Transport) -> Result<(usize, usize), SettleError> {
        let mut behind = 0;
        let mut lost = None;
        while let Some((component, done)) = self.in_flight.pop_front() {
            match done.recv() {
                Ok(Ok(bytes)) => behind += bytes,
                Ok(Err((_, batch))) => self.failed.push(batch),
                // Only a panic on the I/O thread drops a batch unanswered.
                Err(_) => lost = lost.or(Some(component)),
            }
        }
        if let Some(component) = lost {
            let source = TransportError::Disconnected("the I/O thread ended with writes in flight".into());
            return Err(SettleError { component, source });
        }
        let mut here = 0;
        while let Some(batch) = self.failed.first() {
            match batch.write(transport) {
                Ok(bytes) => {
                    here += bytes;
                    self.failed.remove(0);
                }
                Err(source) => {
                    let component = batch.memory.name().to_owned();
                    return Err(SettleError { component, source });
                }
            }
        }
        Ok((behind, here))
    }
}
