//! Errors of this crate (placement errors are `resc_core`'s
//! [`ScheduleError`](resc_core::scheduler::ScheduleError)).

use resc_core::ids::NodeId;
use thiserror::Error;

/// Why a scheduler could not be built over a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two nodes of the cluster share an id.
    #[error("node id {0} appears more than once in the cluster")]
    DuplicateNode(NodeId),
}
