//! Typed errors of far regions and far heaps.

use resc_core::pool::PoolError;
use resc_core::transport::TransportError;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a far region could not be made, or why it can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SwapError {
    /// userfaultfd cannot be used here: no `/dev/userfaultfd` and the system
    /// call refused, or no permission (it needs root, or
    /// `vm.unprivileged_userfaultfd = 1`, or access to `/dev/userfaultfd`).
    #[error("userfaultfd is unavailable: {reason}")]
    UserfaultfdUnavailable {
        /// The system's answer.
        reason: String,
    },
    /// The kernel lacks a userfaultfd feature the region needs (missing
    /// faults with `UFFDIO_COPY`, write-protect faults on anonymous memory).
    #[error("the kernel does not support {feature}: {reason}")]
    UnsupportedKernel {
        /// The feature.
        feature: &'static str,
        /// The system's answer.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid far-memory configuration: {0}")]
    InvalidConfig(String),
    /// The system refused to reserve the virtual range or start the handler.
    #[error("the system refused {what}: {reason}")]
    System {
        /// What was asked.
        what: &'static str,
        /// The system's answer.
        reason: String,
    },
    /// A backing physical memory component failed (allocation, fetch or
    /// write-back). From then on the region is poisoned: the data a code
    /// piece saw may be wrong (see the crate documentation, "Failures").
    #[error("backing memory failed during {during} at offset {offset:#x} of the far region: {reason}")]
    BackingFailed {
        /// The operation that failed.
        during: FailedOp,
        /// The byte offset within the region of the chunk concerned.
        offset: u64,
        /// The pool's or transport's error.
        reason: String,
    },
    /// A far heap has no free range large enough.
    #[error("the far heap has no free range of {requested} bytes")]
    OutOfFarMemory {
        /// Bytes requested (rounded up to the heap's granule).
        requested: u64,
    },
    /// The process-wide table of far heaps is full.
    #[error("too many far heaps are alive at once (at most {0})")]
    TooManyHeaps(usize),
}

/// The backing operation that failed, in [`SwapError::BackingFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailedOp {
    /// Allocating swap space from the memory pool.
    Allocate,
    /// Reading a chunk back from swap space to serve a fault.
    Fetch,
    /// Writing dirty pages to swap space before dropping them.
    WriteBack,
    /// A userfaultfd operation of the handler itself.
    Handler,
}

impl std::fmt::Display for FailedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailedOp::Allocate => "swap-space allocation",
            FailedOp::Fetch => "fetch",
            FailedOp::WriteBack => "write-back",
            FailedOp::Handler => "fault handling",
        })
    }
}

impl SwapError {
    pub(crate) fn system(what: &'static str, error: impl std::fmt::Display) -> Self {
        SwapError::System { what, reason: error.to_string() }
    }

    pub(crate) fn pool(during: FailedOp, offset: u64, error: &PoolError) -> Self {
        SwapError::BackingFailed { during, offset, reason: error.to_string() }
    }

    pub(crate) fn transport(during: FailedOp, offset: u64, error: &TransportError) -> Self {
        SwapError::BackingFailed { during, offset, reason: error.to_string() }
    }
}
