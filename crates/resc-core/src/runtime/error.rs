//! Errors a code piece sees from the runtime API.

use crate::memory::ProvisionError;
use crate::resources::format_bytes;
use crate::transport::TransportError;
use thiserror::Error;

/// Why a channel operation failed. Every variant names the component.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// No component of the application has this name.
    #[error("no component named `{name}` in the application")]
    UnknownComponent {
        /// The name asked for.
        name: String,
    },
    /// The graph has no access or message edge between the caller and the target.
    #[error("`{from}` has no access or message edge to `{to}` in the resource graph")]
    NotConnected {
        /// The calling compute component.
        from: String,
        /// The target.
        to: String,
    },
    /// A memory operation on a message channel, or the other way round.
    #[error("`{operation}` is not an operation of `{component}`, a {kind} component")]
    WrongKind {
        /// The component.
        component: String,
        /// The operation attempted.
        operation: &'static str,
        /// The component's kind.
        kind: crate::graph::ComponentKind,
    },
    /// A read outside the bytes written so far.
    #[error("`{component}`: {len} bytes at address {addr} are past its end ({size} bytes)")]
    OutOfRange {
        /// The component.
        component: String,
        /// Requested address.
        addr: u64,
        /// Requested length.
        len: u64,
        /// Its current length.
        size: u64,
    },
    /// Growing would exceed the application's budget cap. Nothing of the
    /// failed write was applied; everything written before is kept.
    #[error("`{component}`: cannot grow to {}: {source}", format_bytes(*wanted))]
    BudgetExceeded {
        /// The component.
        component: String,
        /// The length the write needed.
        wanted: u64,
        /// The budget detail.
        source: ProvisionError,
    },
    /// Growing failed for another reason (no capacity, controller error).
    #[error("`{component}`: cannot grow to {}: {source}", format_bytes(*wanted))]
    GrowthFailed {
        /// The component.
        component: String,
        /// The length the write needed.
        wanted: u64,
        /// Why.
        source: ProvisionError,
    },
    /// The component was released.
    #[error("`{component}` was released")]
    Released {
        /// The component.
        component: String,
    },
    /// The data path failed.
    #[error("`{component}`: {source}")]
    Transport {
        /// The component.
        component: String,
        /// Why.
        source: TransportError,
    },
    /// `recv` waited its whole timeout.
    #[error("no message from `{component}` within {timeout_ms} ms")]
    Timeout {
        /// The peer.
        component: String,
        /// How long it waited.
        timeout_ms: u64,
    },
    /// A peer instance index beyond the peer's parallelism.
    #[error("`{component}` has {parallelism} instances; there is no instance {instance}")]
    NoSuchInstance {
        /// The peer.
        component: String,
        /// The asked instance.
        instance: u32,
        /// The peer's parallelism.
        parallelism: u32,
    },
}

/// Why a code piece failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodeError {
    /// A runtime API call failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The code piece reported a failure of its own.
    #[error("{0}")]
    Failed(String),
    /// The code piece panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// No code piece is registered under the graph's `code` reference.
    #[error("no code piece is registered as `{0}`")]
    NotRegistered(String),
}

impl CodeError {
    /// A failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        CodeError::Failed(message.into())
    }
}
