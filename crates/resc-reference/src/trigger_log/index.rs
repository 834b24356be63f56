//! What recovery asks of a log, rebuilt by replaying it: the pending
//! invocations, where their records are, and where the log starts.

use resc_core::ids::InvocationId;
use std::collections::{BTreeMap, HashMap};

/// Pending invocations and the locations (`L`) of their records since their
/// last completion, kept by replaying records, completions and truncations
/// in position order.
#[derive(Debug)]
pub(crate) struct PendingIndex<L> {
    /// Every position before this one is truncated.
    start: u64,
    pending: HashMap<InvocationId, Vec<(u64, L)>>,
    /// Pending invocations by the position of their earliest record.
    order: BTreeMap<u64, InvocationId>,
}

impl<L> Default for PendingIndex<L> {
    fn default() -> Self {
        PendingIndex { start: 0, pending: HashMap::new(), order: BTreeMap::new() }
    }
}

impl<L> PendingIndex<L> {
    /// Every position before this one is truncated.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// A record of `invocation` at `position` (ignored before the start).
    pub(crate) fn record(&mut self, position: u64, invocation: InvocationId, loc: L) {
        if position < self.start {
            return;
        }
        let locs = self.pending.entry(invocation).or_default();
        if locs.is_empty() {
            self.order.insert(position, invocation);
        }
        locs.push((position, loc));
    }

    /// `invocation` completed: it is no longer pending.
    pub(crate) fn complete(&mut self, invocation: InvocationId) {
        if let Some(locs) = self.pending.remove(&invocation) {
            if let Some((first, _)) = locs.first() {
                self.order.remove(first);
            }
        }
    }

    /// Everything before `before` is truncated; returns whether the start moved.
    pub(crate) fn truncate(&mut self, before: u64) -> bool {
        if before <= self.start {
            return false;
        }
        self.start = before;
        while let Some((&first, &invocation)) = self.order.first_key_value() {
            if first >= before {
                break;
            }
            self.order.remove(&first);
            if let Some(locs) = self.pending.get_mut(&invocation) {
                locs.retain(|(p, _)| *p >= before);
                match locs.first() {
                    Some((p, _)) => {
                        self.order.insert(*p, invocation);
                    }
                    None => {
                        self.pending.remove(&invocation);
                    }
                }
            }
        }
        true
    }

    /// Pending invocations, in order of their earliest record.
    pub(crate) fn pending(&self) -> Vec<InvocationId> {
        self.order.values().copied().collect()
    }

    /// How many invocations are pending.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// An invocation's records (position, location), in position order.
    pub(crate) fn records(&self, invocation: InvocationId) -> &[(u64, L)] {
        self.pending.get(&invocation).map_or(&[], Vec::as_slice)
    }

    /// The earliest record of any pending invocation.
    pub(crate) fn floor(&self) -> Option<u64> {
        self.order.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_rules() {
        let (a, b, c) = (InvocationId(1), InvocationId(2), InvocationId(3));
        let mut index = PendingIndex::default();
        for (p, inv) in [(0, a), (1, b), (2, a), (3, c), (4, b)] {
            index.record(p, inv, ());
        }
        assert_eq!(index.pending(), vec![a, b, c]);
        index.complete(a);
        assert_eq!(index.pending(), vec![b, c]);
        assert!(index.records(a).is_empty());
        index.record(5, a, ());
        assert_eq!(index.pending(), vec![b, c, a]);
        // b loses its first record and moves behind c.
        assert!(index.truncate(2));
        assert_eq!(index.pending(), vec![c, b, a]);
        assert_eq!(index.floor(), Some(3));
        assert!(!index.truncate(1));
        index.record(1, c, ());
        assert_eq!(index.records(c).len(), 1, "a record before the start is ignored");
        assert!(index.truncate(6));
        assert!(index.pending().is_empty());
        assert_eq!(index.len(), 0);
    }
}
