//! A trigger log in this process's memory.

use crate::ids::InvocationId;
use crate::trigger_log::{LogError, LogPosition, TriggerLog, TriggerRecord};
use parking_lot::Mutex;

/// A [`TriggerLog`] in memory: durable only as long as the process lives.
/// It serves tests and single-process runs that do not need recovery across
/// restarts.
#[derive(Debug, Default)]
pub struct InMemoryTriggerLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// (position, record), in append order; completed invocations are removed.
    records: Vec<(LogPosition, TriggerRecord)>,
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
        state.records.push((position, record.clone()));
        Ok(position)
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
        let mut seen = Vec::new();
        for (_, record) in &state.records {
            if !seen.contains(&record.invocation) {
                seen.push(record.invocation);
            }
        }
        Ok(seen)
    }
}
