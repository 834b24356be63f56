//! Span inference: when a memory component lives.

use super::ResourceGraph;
use crate::ids::{ComputeId, MemoryId};

/// When a memory component lives: from the first access (by one of the
/// compute components of its earliest stage) until the last of its accessing
/// compute components ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySpan {
    /// The earliest trigger stage that accesses the component.
    pub first_stage: u32,
    /// The latest trigger stage that accesses the component.
    pub last_stage: u32,
    /// The accessors at the first stage: one of them makes the first access.
    pub opened_by: Vec<ComputeId>,
    /// Every accessor: the component is freed when all of them have ended.
    pub closed_after: Vec<ComputeId>,
}

pub(super) fn infer(graph: &ResourceGraph) -> Vec<MemorySpan> {
    (0..graph.memory.len() as u32)
        .map(|m| {
            let accessors = graph.accessors(MemoryId(m));
            let stage = |c: &ComputeId| graph.stage(*c);
            let first_stage = accessors.iter().map(stage).min().unwrap_or(0);
            let last_stage = accessors.iter().map(stage).max().unwrap_or(0);
            MemorySpan {
                first_stage,
                last_stage,
                opened_by: accessors.iter().copied().filter(|c| stage(c) == first_stage).collect(),
                closed_after: accessors.to_vec(),
            }
        })
        .collect()
}
