//! The durable trigger log: every trigger message is recorded before it is
//! delivered, so failed components re-execute from their logged inputs
//! (paper §5.2.4).
//!
//! A [`TriggerLog`] is an append-only sequence of [`TriggerRecord`]s, each at
//! a [`LogPosition`]: an opaque, strictly increasing `u64` offset, like a
//! Kafka partition offset or a JetStream stream sequence. Positions need not
//! be dense: a backend may spend positions on its own bookkeeping (completion
//! markers, for instance), so readers never compute positions, they only
//! compare them and continue from [`ReadBatch::next`].
//!
//! Three views serve two readers:
//!
//! - **Consumers and replay** read the whole log in position order with
//!   [`TriggerLog::read_from`], page by page.
//! - **Recovery** asks which invocations are unfinished,
//!   [`TriggerLog::pending`], and replays each from its records,
//!   [`TriggerLog::records`].
//!
//! [`TriggerLog::complete`] is the acknowledgement: an invocation whose
//! output has been delivered is done, and its records become garbage.
//! [`TriggerLog::truncate`] (and its convenience form
//! [`TriggerLog::truncate_completed`]) reclaims a prefix of the log.
//!
//! # Contract
//!
//! *Appending.*
//! - [`append`](TriggerLog::append) returns only once the record is durable,
//!   in the sense the backend documents (an fsync policy, a server
//!   acknowledgement, or, for the in-memory log, the process's lifetime).
//! - Positions increase in real-time order: if one `append` returns before
//!   another is called, the second gets a larger position. Concurrent
//!   appends get distinct positions.
//! - A record is visible to every reader as soon as its `append` returned.
//!
//! *Reading.*
//! - [`read_from(from, max)`](TriggerLog::read_from) returns at most `max`
//!   retained records at positions `>= from`, in increasing position order,
//!   byte for byte as appended, and a position [`next`](ReadBatch::next) to
//!   continue from: larger than every returned position, at least `from`,
//!   and such that no record at a position in `[from, next)` is skipped;
//!   `next` goes past the end of the log (the position the next append
//!   would get at the earliest) only when `from` already does.
//!   Reading page after page from `next` therefore visits every retained
//!   record exactly once, and a record appended later never appears before
//!   `next`. Positions before the start of the log (see truncation) are not
//!   an error: there is simply nothing there.
//! - [`records(invocation)`](TriggerLog::records) returns the invocation's
//!   retained records appended since its last `complete` (all of them if it
//!   was never completed), in append order, byte for byte, with the
//!   positions `append` returned.
//! - [`pending`](TriggerLog::pending) lists the invocations that have
//!   records in the sense of `records`, each once, in the order of their
//!   earliest such record: what recovery replays.
//!
//! *Acknowledging.*
//! - [`complete(invocation)`](TriggerLog::complete) is durable like `append`.
//!   Afterwards the invocation is not pending and `records` returns nothing
//!   for it, until a later `append` for the same invocation makes it pending
//!   again (with only the new records). Completing an unknown or completed
//!   invocation is not an error.
//! - A completed invocation's records may still be returned by `read_from`
//!   until they are truncated; a backend may also drop them at any time.
//!
//! *Truncating.*
//! - [`truncate(before)`](TriggerLog::truncate) drops every record at a
//!   position `< before`, whatever its invocation, durably; `before` is
//!   clamped to the end of the log (the position the next append would get
//!   at the earliest), so positions keep increasing after any truncation.
//!   Afterwards no reader sees a dropped record; an invocation left without
//!   records is no longer pending. Records at positions `>= before` are
//!   untouched. Truncating to a position at or before the current start is a
//!   no-op. Backends may reclaim storage at a coarser grain (whole files),
//!   but what readers see is exact.
//! - [`truncate_completed`](TriggerLog::truncate_completed) truncates before
//!   the earliest record of any pending invocation (or at the end, when none
//!   is pending), so it never drops a record that recovery needs. It returns
//!   the log's start afterwards: every record before it is gone.
//!
//! *Durability across restarts* (backends that have it, such as the file
//! log and JetStream): after the log is closed (dropped) and opened again,
//! every appended, completed and truncated state survives exactly as before,
//! and new positions are larger than every position handed out before.
//!
//! The conformance suite, `resc_core::testkit::trigger_log` (feature
//! `testkit`), checks each clause.
//!
//! ```
//! use resc_core::ids::InvocationId;
//! use resc_core::inproc::InMemoryTriggerLog;
//! use resc_core::trigger_log::{LogPosition, TriggerLog, TriggerRecord, TriggerSource};
//!
//! let log = InMemoryTriggerLog::new();
//! let input = TriggerRecord {
//!     invocation: InvocationId(1),
//!     source: TriggerSource::External,
//!     payload: b"input".to_vec(),
//! };
//! let at = log.append(&input)?;
//! assert_eq!(log.pending()?, vec![InvocationId(1)]);
//!
//! // A consumer reads the log page by page.
//! let page = log.read_from(LogPosition::START, 100)?;
//! assert_eq!(page.records, vec![(at, input)]);
//! assert!(page.next > at);
//!
//! // Delivered: acknowledge, then reclaim.
//! log.complete(InvocationId(1))?;
//! assert!(log.pending()?.is_empty());
//! log.truncate_completed()?;
//! assert!(log.read_from(LogPosition::START, 100)?.records.is_empty());
//! # Ok::<(), resc_core::trigger_log::LogError>(())
//! ```

use crate::ids::{ComputeId, InvocationId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Who produced a trigger message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriggerSource {
    /// The event that invoked the application.
    External,
    /// One instance of a compute component.
    Component {
        /// The component.
        component: ComputeId,
        /// Its instance.
        instance: u32,
    },
}

/// One trigger message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The invocation.
    pub invocation: InvocationId,
    /// Who produced it.
    pub source: TriggerSource,
    /// The bytes: the invocation's input or the component's output.
    pub payload: Vec<u8>,
}

/// A record's position in the log: an opaque offset that increases with
/// every append (not necessarily by one). See the [module documentation](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition(pub u64);

impl LogPosition {
    /// The smallest position: reading from it reads the whole retained log.
    pub const START: LogPosition = LogPosition(0);
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// One page of [`TriggerLog::read_from`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadBatch {
    /// Retained records, in increasing position order.
    pub records: Vec<(LogPosition, TriggerRecord)>,
    /// Where to continue: larger than every position in `records`, and no
    /// record between the requested position and this one was skipped.
    pub next: LogPosition,
}

/// Why the log failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LogError {
    /// The backing store failed (an I/O error, a server's refusal).
    #[error("trigger log storage failed: {context}: {reason}")]
    Storage {
        /// What the log was doing, and on what (a path, a stream).
        context: String,
        /// The underlying error.
        reason: String,
    },
    /// A stored record is damaged: it is reported, never skipped.
    #[error("trigger log record {position} at {location} is corrupt: {reason}")]
    Corrupt {
        /// The damaged record's position or, where its header is unreadable,
        /// the position it would have had (the one after the last good record).
        position: LogPosition,
        /// Where it is stored: a file and byte offset, a stream and sequence.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The end of the log was torn by a crash (a partially written last
    /// record), and the log was opened with repairs refused. Opening it with
    /// repairs allowed truncates the torn bytes: they were never acknowledged.
    #[error("trigger log has a torn tail at {location}: {torn_bytes} bytes after the last complete record")]
    TornTail {
        /// Where the last complete record ends: a file and byte offset.
        location: String,
        /// How many bytes follow it.
        torn_bytes: u64,
    },
    /// The log's server cannot be reached.
    #[error("trigger log server {endpoint} is unavailable: {reason}")]
    Unavailable {
        /// The server's address, as configured.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A record is larger than the backend can store.
    #[error("trigger log record of {bytes} bytes exceeds the backend's limit of {max} bytes")]
    TooLarge {
        /// The record's encoded size.
        bytes: u64,
        /// The largest size the backend accepts.
        max: u64,
    },
    /// An earlier write failed in a way that leaves the log's state unknown
    /// (for instance a failed fsync); the log refuses further work until it
    /// is opened again, which recovers a consistent state.
    #[error("trigger log is unusable after an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),
}

impl LogError {
    /// A [`LogError::Storage`] from what the log was doing and why it failed.
    pub fn storage(context: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        LogError::Storage { context: context.into(), reason: reason.to_string() }
    }
}

/// A durable, ordered log of trigger messages. See the [module documentation](self)
/// for the contract every implementation keeps.
pub trait TriggerLog: Send + Sync {
    /// Appends a record durably and returns its position.
    fn append(&self, record: &TriggerRecord) -> Result<LogPosition, LogError>;

    /// Up to `max` retained records at positions `>= from`, in position
    /// order, and where to continue.
    fn read_from(&self, from: LogPosition, max: usize) -> Result<ReadBatch, LogError>;

    /// An invocation's records since its last [`complete`](Self::complete),
    /// in append order.
    fn records(&self, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError>;

    /// Marks an invocation complete (the acknowledgement), durably.
    fn complete(&self, invocation: InvocationId) -> Result<(), LogError>;

    /// Invocations with records that are not complete, in order of their
    /// earliest record.
    fn pending(&self) -> Result<Vec<InvocationId>, LogError>;

    /// Drops every record at a position `< before` (clamped to the end of
    /// the log), durably.
    fn truncate(&self, before: LogPosition) -> Result<(), LogError>;

    /// Truncates before the earliest record of any pending invocation and
    /// returns the log's start afterwards.
    ///
    /// The provided implementation asks [`pending`](Self::pending) and
    /// [`records`](Self::records) for the earliest pending record and, when
    /// nothing is pending, reads to the end of the log; backends override it
    /// when they know the answer cheaper.
    fn truncate_completed(&self) -> Result<LogPosition, LogError> {
        let mut floor: Option<LogPosition> = None;
        for invocation in self.pending()? {
            if let Some((first, _)) = self.records(invocation)?.first() {
                floor = Some(floor.map_or(*first, |f| f.min(*first)));
            }
        }
        let before = match floor {
            Some(floor) => floor,
            None => {
                let mut at = LogPosition::START;
                loop {
                    let page = self.read_from(at, 1024)?;
                    if page.records.is_empty() {
                        break page.next;
                    }
                    at = page.next;
                }
            }
        };
        self.truncate(before)?;
        Ok(before)
    }
}
