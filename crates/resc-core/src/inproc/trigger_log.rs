//! A trigger log in this process's memory.

use crate::ids::InvocationId;
use crate::trigger_log::{LogError, LogPosition, ReadBatch, TriggerLog, TriggerRecord};
use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};

/// A [`TriggerLog`] in memory: durable only as long as the process lives.
/// It serves tests and single-process runs that do not need recovery across
/// restarts.
///
/// Positions are dense (0, 1, 2, …). A completed invocation's records are
/// dropped at [`complete`](TriggerLog::complete) (the contract allows it), so
/// the log's memory stays bounded by what is pending even when nobody calls
/// [`truncate`](TriggerLog::truncate).
#[derive(Debug, Default)]
pub struct InMemoryTriggerLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The position the next append gets.
    next: u64,
    /// Every record before this position is truncated.
    start: u64,
    /// (position, record) of pending invocations, in position order.
    records: VecDeque<(LogPosition, TriggerRecord)>,
}

impl State {
    fn truncate(&mut self, before: LogPosition) -> LogPosition {
        let before = before.0.min(self.next);
        if before > self.start {
            self.start = before;
            let keep_from = self.records.partition_point(|(p, _)| p.0 < before);
            self.records.drain(..keep_from);
        }
        LogPosition(self.start)
    }
}

impl InMemoryTriggerLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TriggerLog for InMemoryTriggerLog {
    fn append(&self, record: &TriggerRecord) -> Result<LogPosition, LogError> {
        let mut state = self.state.lock();
        let position = LogPosition(state.next);
        state.next += 1;
        state.records.push_back((position, record.clone()));
        Ok(position)
    }

    fn read_from(&self, from: LogPosition, max: usize) -> Result<ReadBatch, LogError> {
        let state = self.state.lock();
        let first = state.records.partition_point(|(p, _)| *p < from);
        let records: Vec<_> = state.records.iter().skip(first).take(max).cloned().collect();
        let next = if records.len() < max {
            // Everything at or after `from` was returned.
            from.max(LogPosition(state.next))
        } else {
            records.last().map_or(from, |(last, _)| LogPosition(last.0 + 1))
        };
        Ok(ReadBatch { records, next })
    }

    fn records(&self, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError> {
        Ok(self.state.lock().records.iter().filter(|(_, r)| r.invocation == invocation).cloned().collect())
    }

    fn complete(&self, invocation: InvocationId) -> Result<(), LogError> {
        self.state.lock().records.retain(|(_, r)| r.invocation != invocation);
        Ok(())
    }

    fn pending(&self) -> Result<Vec<InvocationId>, LogError> {
        let state = self.state.lock();
        let mut seen = HashSet::new();
        Ok(state.records.iter().map(|(_, r)| r.invocation).filter(|i| seen.insert(*i)).collect())
    }

    fn truncate(&self, before: LogPosition) -> Result<(), LogError> {
        self.state.lock().truncate(before);
        Ok(())
    }

    fn truncate_completed(&self) -> Result<LogPosition, LogError> {
        let mut state = self.state.lock();
        // Every retained record is pending: the first one is the floor.
        let floor = state.records.front().map_or(state.next, |(p, _)| p.0);
        Ok(state.truncate(LogPosition(floor)))
    }
}
