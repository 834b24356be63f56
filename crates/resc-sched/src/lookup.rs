//! `NodeId` → dense index, without a tree lookup on the hot path.

use resc_core::ids::NodeId;
use std::collections::HashMap;

const ABSENT: u32 = u32::MAX;

/// Maps node ids to dense indices `0..n`: a direct table when the ids are
/// dense enough (the usual case: ids numbered per cluster), a hash map
/// otherwise.
#[derive(Debug, Clone)]
pub(crate) enum NodeLookup {
    /// `table[id - base]` is the index, or `ABSENT`.
    Dense { base: u32, table: Vec<u32> },
    /// Sparse ids.
    Sparse(HashMap<u32, u32>),
}

impl NodeLookup {
    /// A lookup for `ids` (index = position). Returns the first duplicate id, if any.
    pub(crate) fn new(ids: &[NodeId]) -> Result<NodeLookup, NodeId> {
        let (Some(min), Some(max)) = (ids.iter().map(|n| n.0).min(), ids.iter().map(|n| n.0).max()) else {
            return Ok(NodeLookup::Dense { base: 0, table: Vec::new() });
        };
        let span = u64::from(max - min) + 1;
        if span <= 4 * ids.len() as u64 + 1024 {
            let mut table = vec![ABSENT; span as usize];
            for (i, id) in ids.iter().enumerate() {
                let slot = &mut table[(id.0 - min) as usize];
                if *slot != ABSENT {
                    return Err(*id);
                }
                *slot = i as u32;
            }
            Ok(NodeLookup::Dense { base: min, table })
        } else {
            let mut map = HashMap::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                if map.insert(id.0, i as u32).is_some() {
                    return Err(*id);
                }
            }
            Ok(NodeLookup::Sparse(map))
        }
    }

    /// The dense index of `id`, if it is known.
    #[inline]
    pub(crate) fn get(&self, id: NodeId) -> Option<usize> {
        match self {
            NodeLookup::Dense { base, table } => {
                let i = id.0.checked_sub(*base)? as usize;
                match table.get(i) {
                    Some(&v) if v != ABSENT => Some(v as usize),
                    _ => None,
                }
            }
            NodeLookup::Sparse(map) => map.get(&id.0).map(|&v| v as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_agree() {
        let dense: Vec<NodeId> = [5, 3, 9].map(NodeId).to_vec();
        let sparse: Vec<NodeId> = [5, 3, 4_000_000_000].map(NodeId).to_vec();
        let d = NodeLookup::new(&dense).expect("no duplicates");
        let s = NodeLookup::new(&sparse).expect("no duplicates");
        assert!(matches!(d, NodeLookup::Dense { .. }));
        assert!(matches!(s, NodeLookup::Sparse(_)));
        assert_eq!(
            (d.get(NodeId(3)), d.get(NodeId(9)), d.get(NodeId(4)), d.get(NodeId(0))),
            (Some(1), Some(2), None, None)
        );
        assert_eq!((s.get(NodeId(4_000_000_000)), s.get(NodeId(6))), (Some(2), None));
        assert_eq!(NodeLookup::new(&[NodeId(1), NodeId(1)]).err(), Some(NodeId(1)));
        assert_eq!(NodeLookup::new(&[]).map(|l| l.get(NodeId(0))).ok(), Some(None));
    }
}
