//! The durable trigger log: every trigger message is recorded before it is
//! delivered, so failed components re-execute from their logged inputs.
//!
//! # Contract
//!
//! - [`TriggerLog::append`] returns only once the record is durable (for the
//!   backend's notion of durable) and gives it a position that is larger than
//!   every position returned before.
//! - [`TriggerLog::records`] returns an invocation's records in append order,
//!   byte for byte as appended.
//! - [`TriggerLog::complete`] marks an invocation done; its records may then
//!   be dropped, and it no longer appears in [`TriggerLog::pending`].
//!   Completing an unknown invocation is not an error; a record appended
//!   after `complete` makes the invocation pending again.
//! - [`TriggerLog::pending`] lists, in order of first append, the
//!   invocations with records that are not complete: what recovery replays.

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

/// A record's position in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition(pub u64);

/// Why the log failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LogError {
    /// The backing store failed.
    #[error("trigger log storage failed: {0}")]
    Storage(String),
    /// A stored record is damaged.
    #[error("trigger log record at {position:?} is corrupt: {reason}")]
    Corrupt {
        /// Where.
        position: LogPosition,
        /// What is wrong.
        reason: String,
    },
}

/// A durable, ordered log of trigger messages. See the [module documentation](self).
pub trait TriggerLog: Send + Sync {
    /// Appends a record durably.
    fn append(&self, record: &TriggerRecord) -> Result<LogPosition, LogError>;
    /// An invocation's records, in append order.
    fn records(&self, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError>;
    /// Marks an invocation complete.
    fn complete(&self, invocation: InvocationId) -> Result<(), LogError>;
    /// Invocations with records that are not complete, in order of first append.
    fn pending(&self) -> Result<Vec<InvocationId>, LogError>;
}
