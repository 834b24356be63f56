//! Conformance checks for [`TriggerLog`]: see the contract in
//! [`crate::trigger_log`].
//!
//! Run them on an empty log. Each check uses invocation ids of its own and
//! completes its invocations when it ends, so the checks can share one log;
//! they look only at their own invocations in [`TriggerLog::pending`].

use super::{pattern, unique_invocation};
use crate::ids::{ComputeId, InvocationId};
use crate::trigger_log::{LogPosition, TriggerLog, TriggerRecord, TriggerSource};

/// Runs every trigger log check.
pub fn trigger_log_suite(log: &dyn TriggerLog) {
    check_positions_increase(log);
    check_records_byte_exact(log);
    check_records_not_mixed(log);
    check_complete_removes_from_pending(log);
    check_pending_in_first_append_order(log);
    check_unknown_invocation_has_no_records(log);
}

/// Completes the check's invocations when it ends, whichever way it ends.
struct Invocations<'a> {
    log: &'a dyn TriggerLog,
    ids: Vec<InvocationId>,
}

impl<'a> Invocations<'a> {
    fn new(log: &'a dyn TriggerLog, count: usize) -> Self {
        Invocations { log, ids: (0..count).map(|_| unique_invocation()).collect() }
    }
}

impl Drop for Invocations<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.log.complete(*id);
        }
    }
}

fn record(invocation: InvocationId, source: TriggerSource, payload: Vec<u8>) -> TriggerRecord {
    TriggerRecord { invocation, source, payload }
}

fn component(component: u32, instance: u32) -> TriggerSource {
    TriggerSource::Component { component: ComputeId(component), instance }
}

fn append(log: &dyn TriggerLog, record: &TriggerRecord, check: &str) -> LogPosition {
    log.append(record)
        .unwrap_or_else(|e| panic!("{check}: appending a {}-byte record failed: {e}", record.payload.len()))
}

fn records(log: &dyn TriggerLog, invocation: InvocationId, check: &str) -> Vec<(LogPosition, TriggerRecord)> {
    log.records(invocation).unwrap_or_else(|e| panic!("{check}: reading the records of {invocation} failed: {e}"))
}

/// `pending`, restricted to `mine`, in the log's order.
fn my_pending(log: &dyn TriggerLog, mine: &[InvocationId], check: &str) -> Vec<InvocationId> {
    let pending = log.pending().unwrap_or_else(|e| panic!("{check}: listing pending invocations failed: {e}"));
    pending.into_iter().filter(|i| mine.contains(i)).collect()
}

/// Every append gets a position larger than every position before, also
/// across invocations and after one is completed; `records` reports the
/// positions `append` returned.
pub fn check_positions_increase(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/positions_increase";
    let invs = Invocations::new(log, 3);
    let mut last: Option<LogPosition> = None;
    let mut appended: Vec<(InvocationId, LogPosition)> = Vec::new();
    for i in 0..30usize {
        let invocation = invs.ids[i % 3];
        if i == 20 {
            log.complete(invs.ids[0]).unwrap_or_else(|e| panic!("{CHECK}: complete failed: {e}"));
        }
        let position = append(log, &record(invocation, component(1, i as u32), vec![i as u8]), CHECK);
        if let Some(last) = last {
            assert!(position > last, "{CHECK}: append {i} got {position:?}, not after the previous {last:?}");
        }
        last = Some(position);
        appended.push((invocation, position));
    }
    for &invocation in &invs.ids[1..] {
        let expected: Vec<LogPosition> =
            appended.iter().filter(|(inv, _)| *inv == invocation).map(|(_, p)| *p).collect();
        let got: Vec<LogPosition> = records(log, invocation, CHECK).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, expected, "{CHECK}: records() reports other positions than append() returned");
    }
}

/// An invocation's records come back in append order, byte for byte: an
/// empty payload, every byte value, and a 1 MiB payload; both kinds of source.
pub fn check_records_byte_exact(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/records_byte_exact";
    let invs = Invocations::new(log, 1);
    let invocation = invs.ids[0];
    let appended: Vec<TriggerRecord> = vec![
        record(invocation, TriggerSource::External, Vec::new()),
        record(invocation, component(0, 0), vec![0]),
        record(invocation, component(3, 7), (0..=255u8).collect()),
        record(invocation, component(u32::MAX, u32::MAX), pattern(1 << 20, 30)),
        record(invocation, TriggerSource::External, b"\n\r\0{\"json\": true}".to_vec()),
        record(invocation, component(2, 1), Vec::new()),
    ];
    let positions: Vec<LogPosition> = appended.iter().map(|r| append(log, r, CHECK)).collect();
    let got = records(log, invocation, CHECK);
    assert_eq!(got.len(), appended.len(), "{CHECK}: appended {} records, read back {}", appended.len(), got.len());
    for (i, ((position, back), (sent, sent_at))) in got.iter().zip(appended.iter().zip(&positions)).enumerate() {
        assert_eq!(position, sent_at, "{CHECK}: record {i} came back at another position or out of order");
        assert_eq!(back.invocation, sent.invocation, "{CHECK}: record {i} came back with another invocation");
        assert_eq!(back.source, sent.source, "{CHECK}: record {i} came back with another source");
        assert!(
            back.payload == sent.payload,
            "{CHECK}: record {i} ({} bytes) came back with {} bytes or changed",
            sent.payload.len(),
            back.payload.len()
        );
    }
}

/// `records` returns only the invocation's own records, in order, although
/// appends of several invocations interleave.
pub fn check_records_not_mixed(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/records_not_mixed";
    let invs = Invocations::new(log, 3);
    let mut expected: Vec<Vec<TriggerRecord>> = vec![Vec::new(); 3];
    for i in 0..24usize {
        let which = (i * 7 + i / 5) % 3;
        let r = record(invs.ids[which], component(which as u32, i as u32), format!("{which}:{i}").into_bytes());
        append(log, &r, CHECK);
        expected[which].push(r);
    }
    for (which, invocation) in invs.ids.iter().enumerate() {
        let got: Vec<TriggerRecord> = records(log, *invocation, CHECK).into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            got, expected[which],
            "{CHECK}: the records of invocation {which} are mixed with others or out of order"
        );
    }
}

/// A completed invocation no longer appears in `pending`; the others stay.
pub fn check_complete_removes_from_pending(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/complete_removes_from_pending";
    let invs = Invocations::new(log, 3);
    let [a, b, c] = [invs.ids[0], invs.ids[1], invs.ids[2]];
    for inv in [a, b, c, a] {
        append(log, &record(inv, TriggerSource::External, b"input".to_vec()), CHECK);
    }
    assert_eq!(
        my_pending(log, &invs.ids, CHECK),
        vec![a, b, c],
        "{CHECK}: pending does not list the invocations appended to"
    );
    log.complete(b).unwrap_or_else(|e| panic!("{CHECK}: complete failed: {e}"));
    assert_eq!(
        my_pending(log, &invs.ids, CHECK),
        vec![a, c],
        "{CHECK}: a completed invocation is still pending, or another one vanished"
    );
    assert_eq!(records(log, a, CHECK).len(), 2, "{CHECK}: completing one invocation dropped another's records");
    log.complete(a).unwrap_or_else(|e| panic!("{CHECK}: complete failed: {e}"));
    log.complete(c).unwrap_or_else(|e| panic!("{CHECK}: complete failed: {e}"));
    assert!(my_pending(log, &invs.ids, CHECK).is_empty(), "{CHECK}: completed invocations are still pending");
    // Completing twice is not an error; appending again makes it pending again.
    log.complete(c).unwrap_or_else(|e| panic!("{CHECK}: completing a completed invocation failed: {e}"));
    append(log, &record(c, TriggerSource::External, b"again".to_vec()), CHECK);
    assert_eq!(my_pending(log, &invs.ids, CHECK), vec![c], "{CHECK}: a record after complete is not pending");
    log.complete(c).unwrap_or_else(|e| panic!("{CHECK}: complete failed: {e}"));
}

/// `pending` lists invocations in order of their first append, whatever
/// order later appends come in.
pub fn check_pending_in_first_append_order(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/pending_in_first_append_order";
    let invs = Invocations::new(log, 4);
    let [a, b, c, d] = [invs.ids[0], invs.ids[1], invs.ids[2], invs.ids[3]];
    // First appends in the order c, a, d, b, with later appends reversing it.
    for inv in [c, a, d, b, b, d, a, c, a] {
        append(log, &record(inv, component(0, 0), b"x".to_vec()), CHECK);
    }
    assert_eq!(my_pending(log, &invs.ids, CHECK), vec![c, a, d, b], "{CHECK}: pending is not in order of first append");
    log.complete(a).unwrap_or_else(|e| panic!("{CHECK}: complete failed: {e}"));
    assert_eq!(
        my_pending(log, &invs.ids, CHECK),
        vec![c, d, b],
        "{CHECK}: completing one invocation reordered the others"
    );
}

/// An invocation nothing was appended to has no records and is not pending.
pub fn check_unknown_invocation_has_no_records(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/unknown_invocation_has_no_records";
    let invs = Invocations::new(log, 1);
    let unknown = invs.ids[0];
    assert!(records(log, unknown, CHECK).is_empty(), "{CHECK}: an invocation nothing was appended to has records");
    assert!(my_pending(log, &[unknown], CHECK).is_empty(), "{CHECK}: an invocation nothing was appended to is pending");
}
