//! Conformance checks for [`TriggerLog`]: see the contract in
//! [`crate::trigger_log`].
//!
//! There are two kinds of check:
//!
//! - **Shared-log checks** take a `&dyn TriggerLog`. Each uses invocation ids
//!   of its own, looks only at its own records and completes its invocations
//!   when it ends, so these checks can share one log, also concurrently (but
//!   not with a fresh-log check on the same log: truncation drops everything).
//!   [`shared_log_suite`] runs them all.
//! - **Fresh-log checks** take a [`LogFactory`] and open logs of their own by
//!   name: truncation and reopening need a log nobody else uses. The reopen
//!   checks run only for a [`durable`](LogFactory::durable) factory.
//!
//! [`trigger_log_suite`] runs everything.
//!
//! ```
//! use resc_core::inproc::InMemoryTriggerLog;
//! use resc_core::testkit::trigger_log::{trigger_log_suite, Volatile};
//! use resc_core::trigger_log::TriggerLog;
//!
//! // Each name gets a fresh log; the in-memory log cannot be reopened.
//! trigger_log_suite(&Volatile(|_name: &str| Ok(Box::new(InMemoryTriggerLog::new()) as Box<dyn TriggerLog>)));
//! ```

use super::{pattern, unique_invocation};
use crate::ids::{ComputeId, InvocationId};
use crate::trigger_log::{LogError, LogPosition, TriggerLog, TriggerRecord, TriggerSource};
use std::sync::atomic::{AtomicU64, Ordering};

/// Opens trigger logs by name, for the checks that need a log of their own.
pub trait LogFactory: Sync {
    /// Opens the log called `name`: empty the first time a name is used (the
    /// checks never reuse a name of an earlier test run in this process;
    /// a factory over storage shared between runs or processes should add a
    /// prefix of its own). When the factory is [`durable`](Self::durable),
    /// opening a name again after the previous log of that name was dropped
    /// must give back the same log, with everything it held.
    fn open(&self, name: &str) -> Result<Box<dyn TriggerLog>, LogError>;

    /// Whether logs survive being dropped and opened again (the reopen
    /// checks run only then).
    fn durable(&self) -> bool;
}

/// A [`LogFactory`] from a closure whose logs survive reopening.
pub struct Durable<F>(pub F);

/// A [`LogFactory`] from a closure whose logs do not survive reopening.
pub struct Volatile<F>(pub F);

impl<F> LogFactory for Durable<F>
where
    F: Fn(&str) -> Result<Box<dyn TriggerLog>, LogError> + Sync,
{
    fn open(&self, name: &str) -> Result<Box<dyn TriggerLog>, LogError> {
        (self.0)(name)
    }
    fn durable(&self) -> bool {
        true
    }
}

impl<F> LogFactory for Volatile<F>
where
    F: Fn(&str) -> Result<Box<dyn TriggerLog>, LogError> + Sync,
{
    fn open(&self, name: &str) -> Result<Box<dyn TriggerLog>, LogError> {
        (self.0)(name)
    }
    fn durable(&self) -> bool {
        false
    }
}

/// Runs every trigger log check: the shared-log checks on one log of the
/// factory, then each fresh-log check on logs of its own.
pub fn trigger_log_suite(factory: &dyn LogFactory) {
    let shared = open(factory, &unique_name("shared"), "trigger_log/suite");
    shared_log_suite(shared.as_ref());
    drop(shared);
    check_fresh_log_is_empty(factory);
    check_truncate_drops_prefix(factory);
    check_truncate_past_end(factory);
    check_truncate_completed_keeps_pending(factory);
    check_reopen_keeps_state(factory);
    check_reopen_keeps_truncation(factory);
}

/// Runs every shared-log check on `log`.
pub fn shared_log_suite(log: &dyn TriggerLog) {
    check_positions_increase(log);
    check_records_byte_exact(log);
    check_records_not_mixed(log);
    check_complete_removes_from_pending(log);
    check_pending_in_first_append_order(log);
    check_unknown_invocation_has_no_records(log);
    check_read_from_in_position_order(log);
    check_read_from_pages(log);
    check_concurrent_appends(log);
    check_large_payloads(log);
    check_many_invocations(log);
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

/// A log name no other check of this process uses.
fn unique_name(check: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{check}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn open(factory: &dyn LogFactory, name: &str, check: &str) -> Box<dyn TriggerLog> {
    factory.open(name).unwrap_or_else(|e| panic!("{check}: opening the log {name:?} failed: {e}"))
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

fn complete(log: &dyn TriggerLog, invocation: InvocationId, check: &str) {
    log.complete(invocation).unwrap_or_else(|e| panic!("{check}: completing {invocation} failed: {e}"));
}

fn truncate(log: &dyn TriggerLog, before: LogPosition, check: &str) {
    log.truncate(before).unwrap_or_else(|e| panic!("{check}: truncating before {before} failed: {e}"));
}

/// `pending`, restricted to `mine`, in the log's order.
fn my_pending(log: &dyn TriggerLog, mine: &[InvocationId], check: &str) -> Vec<InvocationId> {
    let pending = log.pending().unwrap_or_else(|e| panic!("{check}: listing pending invocations failed: {e}"));
    pending.into_iter().filter(|i| mine.contains(i)).collect()
}

/// Reads the whole log from `from` page by page (`page` records at a time),
/// checking the paging clauses, and returns the records of `mine`.
fn read_all(
    log: &dyn TriggerLog,
    from: LogPosition,
    page: usize,
    mine: &[InvocationId],
    check: &str,
) -> Vec<(LogPosition, TriggerRecord)> {
    let mut at = from;
    let mut out = Vec::new();
    let mut last: Option<LogPosition> = None;
    // Bounded: a log that never ends its pages fails instead of hanging.
    for _ in 0..1_000_000 {
        let batch = log.read_from(at, page).unwrap_or_else(|e| panic!("{check}: read_from({at}, {page}) failed: {e}"));
        assert!(
            batch.records.len() <= page,
            "{check}: read_from({at}, {page}) returned {} records",
            batch.records.len()
        );
        assert!(batch.next >= at, "{check}: read_from({at}, {page}) returned next {} before {at}", batch.next);
        for (position, record) in &batch.records {
            assert!(*position >= at, "{check}: read_from({at}, {page}) returned a record at {position}, before {at}");
            assert!(
                *position < batch.next,
                "{check}: read_from({at}, {page}) returned a record at {position}, not before next {}",
                batch.next
            );
            if let Some(last) = last {
                assert!(*position > last, "{check}: read_from returned {position} after {last}: not in position order");
            }
            last = Some(*position);
            if mine.contains(&record.invocation) {
                out.push((*position, record.clone()));
            }
        }
        if batch.records.is_empty() {
            return out;
        }
        at = batch.next;
    }
    panic!("{check}: reading the log from {from} did not reach its end after a million pages");
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
            complete(log, invs.ids[0], CHECK);
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
    // Completed at append 20: only the records since count.
    let since: Vec<LogPosition> =
        appended[20..].iter().filter(|(inv, _)| *inv == invs.ids[0]).map(|(_, p)| *p).collect();
    let got: Vec<LogPosition> = records(log, invs.ids[0], CHECK).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got, since, "{CHECK}: records() of a completed then appended invocation are not the new ones only");
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

/// A completed invocation no longer appears in `pending` and has no
/// records; the others stay. Completing twice is fine, and a record appended
/// after `complete` makes the invocation pending again, with that record only.
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
    complete(log, b, CHECK);
    assert_eq!(
        my_pending(log, &invs.ids, CHECK),
        vec![a, c],
        "{CHECK}: a completed invocation is still pending, or another one vanished"
    );
    assert!(records(log, b, CHECK).is_empty(), "{CHECK}: a completed invocation still has records");
    assert_eq!(records(log, a, CHECK).len(), 2, "{CHECK}: completing one invocation dropped another's records");
    complete(log, a, CHECK);
    complete(log, c, CHECK);
    assert!(my_pending(log, &invs.ids, CHECK).is_empty(), "{CHECK}: completed invocations are still pending");
    // Completing twice is not an error; appending again makes it pending again.
    complete(log, c, CHECK);
    let again = record(c, TriggerSource::External, b"again".to_vec());
    let at = append(log, &again, CHECK);
    assert_eq!(my_pending(log, &invs.ids, CHECK), vec![c], "{CHECK}: a record after complete is not pending");
    assert_eq!(
        records(log, c, CHECK),
        vec![(at, again)],
        "{CHECK}: after complete and a new append, records() is not just the new record"
    );
    complete(log, c, CHECK);
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
    complete(log, a, CHECK);
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

/// `read_from` returns the records at and after a position, in position
/// order, byte for byte, with the positions `append` returned; reading at
/// `next` after the last record finds none of them; `max == 0` returns
/// nothing and skips nothing.
pub fn check_read_from_in_position_order(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/read_from_in_position_order";
    let invs = Invocations::new(log, 3);
    let mut appended = Vec::new();
    for i in 0..12usize {
        let r = record(invs.ids[(i * 5) % 3], component(i as u32, 0), pattern(i * 13, i as u8));
        appended.push((append(log, &r, CHECK), r));
    }
    let first = appended[0].0;
    let got = read_all(log, first, usize::MAX, &invs.ids, CHECK);
    assert_eq!(got, appended, "{CHECK}: read_from(first) does not return the appended records, in order, as appended");
    let got = read_all(log, appended[5].0, 1000, &invs.ids, CHECK);
    assert_eq!(got, appended[5..], "{CHECK}: read_from(position of record 5) does not start at record 5");
    let got = read_all(log, LogPosition(appended[6].0 .0 + 1), 1000, &invs.ids, CHECK);
    assert_eq!(got, appended[7..], "{CHECK}: read_from(just after record 6) does not start at record 7");

    let empty = log.read_from(first, 0).unwrap_or_else(|e| panic!("{CHECK}: read_from({first}, 0) failed: {e}"));
    assert!(empty.records.is_empty(), "{CHECK}: read_from(_, 0) returned records");
    assert_eq!(empty.next, first, "{CHECK}: read_from({first}, 0) skipped the record at {first}");

    // Past the last record: none of ours, now or after more appends by others.
    let last = appended[appended.len() - 1].0;
    let after =
        log.read_from(LogPosition(last.0 + 1), 1000).unwrap_or_else(|e| panic!("{CHECK}: read_from failed: {e}"));
    assert!(
        after.records.iter().all(|(p, r)| *p > last && !invs.ids.contains(&r.invocation)),
        "{CHECK}: read_from after the last record returned one of ours again"
    );
    assert!(after.next > last, "{CHECK}: read_from after the last record returned next {}", after.next);
    let later = record(invs.ids[0], TriggerSource::External, b"later".to_vec());
    let later_at = append(log, &later, CHECK);
    assert!(later_at >= after.next, "{CHECK}: a record appended later got {later_at}, before the next {}", after.next);
    let got = read_all(log, after.next, 1000, &invs.ids, CHECK);
    assert_eq!(got, vec![(later_at, later)], "{CHECK}: continuing from next does not find the later record");
}

/// Reading page by page (1, 2, 3 and 7 records a page) from `next` visits
/// every record exactly once, in position order.
pub fn check_read_from_pages(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/read_from_pages";
    let invs = Invocations::new(log, 2);
    let mut appended = Vec::new();
    for i in 0..17usize {
        let r = record(invs.ids[i % 2], TriggerSource::External, format!("page {i}").into_bytes());
        appended.push((append(log, &r, CHECK), r));
    }
    for page in [1, 2, 3, 7] {
        let got = read_all(log, appended[0].0, page, &invs.ids, CHECK);
        assert_eq!(got, appended, "{CHECK}: reading {page} records a page does not visit every record once, in order");
    }
}

/// Appends from several threads at once: each thread's positions increase,
/// all positions differ, each invocation's records keep their thread's
/// order, and `read_from` returns them all in position order.
pub fn check_concurrent_appends(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/concurrent_appends";
    const THREADS: usize = 4;
    const EACH: usize = 25;
    let invs = Invocations::new(log, THREADS);
    let per_thread: Vec<Vec<(LogPosition, TriggerRecord)>> = std::thread::scope(|s| {
        let handles: Vec<_> = invs
            .ids
            .iter()
            .enumerate()
            .map(|(t, &invocation)| {
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let r = record(invocation, component(t as u32, i as u32), pattern(100 + i, t as u8));
                            (append(log, &r, CHECK), r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("{CHECK}: an appending thread panicked")))
            .collect()
    });
    let mut all: Vec<(LogPosition, TriggerRecord)> = Vec::new();
    for (t, appended) in per_thread.iter().enumerate() {
        assert!(
            appended.windows(2).all(|w| w[0].0 < w[1].0),
            "{CHECK}: thread {t}'s appends did not get increasing positions"
        );
        assert_eq!(
            &records(log, invs.ids[t], CHECK),
            appended,
            "{CHECK}: thread {t}'s records differ or are reordered"
        );
        all.extend(appended.iter().cloned());
    }
    all.sort_by_key(|(p, _)| *p);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "{CHECK}: two concurrent appends got the same position");
    let got = read_all(log, all[0].0, 16, &invs.ids, CHECK);
    assert_eq!(got, all, "{CHECK}: read_from does not return the concurrent appends in position order");
}

/// Large payloads (64 KiB, 1 MiB + 1, 3 MiB + 17 bytes) between small ones
/// come back byte for byte through `records` and `read_from`.
pub fn check_large_payloads(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/large_payloads";
    let invs = Invocations::new(log, 2);
    let mut appended = Vec::new();
    for (i, len) in [64 << 10, 5, (1 << 20) + 1, 0, 3 * (1 << 20) + 17, 1].into_iter().enumerate() {
        let r = record(invs.ids[i % 2], component(i as u32, 1), pattern(len, 40 + i as u8));
        appended.push((append(log, &r, CHECK), r));
    }
    let got = read_all(log, appended[0].0, 2, &invs.ids, CHECK);
    assert!(got == appended, "{CHECK}: read_from does not return the large records byte for byte, in order");
    for (which, invocation) in invs.ids.iter().enumerate() {
        let expected: Vec<_> = appended.iter().skip(which).step_by(2).cloned().collect();
        assert!(
            records(log, *invocation, CHECK) == expected,
            "{CHECK}: records() does not return the large records byte for byte"
        );
    }
}

/// Three hundred invocations with interleaved records: `pending` lists the
/// incomplete ones in first-append order, each with its own two records.
pub fn check_many_invocations(log: &dyn TriggerLog) {
    const CHECK: &str = "trigger_log/many_invocations";
    const N: usize = 300;
    let invs = Invocations::new(log, N);
    let mut expected: Vec<Vec<(LogPosition, TriggerRecord)>> = vec![Vec::new(); N];
    for (i, &inv) in invs.ids.iter().enumerate() {
        let r = record(inv, TriggerSource::External, format!("in {i}").into_bytes());
        expected[i].push((append(log, &r, CHECK), r));
    }
    for (i, &inv) in invs.ids.iter().enumerate().rev() {
        let r = record(inv, component(1, 0), format!("out {i}").into_bytes());
        expected[i].push((append(log, &r, CHECK), r));
    }
    for (i, &inv) in invs.ids.iter().enumerate() {
        if i % 3 == 0 {
            complete(log, inv, CHECK);
        }
    }
    let still: Vec<InvocationId> = invs.ids.iter().enumerate().filter(|(i, _)| i % 3 != 0).map(|(_, &v)| v).collect();
    assert_eq!(my_pending(log, &invs.ids, CHECK), still, "{CHECK}: pending is wrong after completing every third");
    for (i, &inv) in invs.ids.iter().enumerate() {
        let got = records(log, inv, CHECK);
        if i % 3 == 0 {
            assert!(got.is_empty(), "{CHECK}: completed invocation {i} still has records");
        } else {
            assert_eq!(got, expected[i], "{CHECK}: invocation {i}'s records differ");
        }
    }
}

/// A new log has nothing pending and nothing to read; truncating it is fine.
pub fn check_fresh_log_is_empty(factory: &dyn LogFactory) {
    const CHECK: &str = "trigger_log/fresh_log_is_empty";
    let log = open(factory, &unique_name("empty"), CHECK);
    let log = log.as_ref();
    let pending = log.pending().unwrap_or_else(|e| panic!("{CHECK}: pending failed: {e}"));
    assert!(pending.is_empty(), "{CHECK}: a new log has pending invocations");
    let batch = log.read_from(LogPosition::START, 10).unwrap_or_else(|e| panic!("{CHECK}: read_from failed: {e}"));
    assert!(batch.records.is_empty(), "{CHECK}: a new log has records");
    log.truncate_completed().unwrap_or_else(|e| panic!("{CHECK}: truncate_completed on a new log failed: {e}"));
    truncate(log, LogPosition::START, CHECK);
    let inv = unique_invocation();
    let r = record(inv, TriggerSource::External, b"first".to_vec());
    let at = append(log, &r, CHECK);
    assert!(at >= batch.next, "{CHECK}: the first record got {at}, before the next {} of the empty log", batch.next);
    assert_eq!(read_all(log, LogPosition::START, 10, &[inv], CHECK), vec![(at, r)]);
}

/// `truncate(before)` drops exactly the records before `before`, whatever
/// their invocation: readers no longer see them, an invocation left without
/// records is no longer pending, the others are ordered by their earliest
/// remaining record; truncating to an earlier position changes nothing, and
/// later appends get larger positions.
pub fn check_truncate_drops_prefix(factory: &dyn LogFactory) {
    const CHECK: &str = "trigger_log/truncate_drops_prefix";
    let log = open(factory, &unique_name("truncate"), CHECK);
    let log = log.as_ref();
    let ids: Vec<InvocationId> = (0..4).map(|_| unique_invocation()).collect();
    let [a, b, c, d] = [ids[0], ids[1], ids[2], ids[3]];
    let mut appended = Vec::new();
    for (i, inv) in [d, a, b, d, c, a, b, c, a].into_iter().enumerate() {
        let r = record(inv, component(i as u32, 0), format!("r{i}").into_bytes());
        appended.push((append(log, &r, CHECK), r));
    }
    assert_eq!(my_pending(log, &ids, CHECK), vec![d, a, b, c], "{CHECK}: pending before truncating");
    // Keep from record 4 (c) on: d is gone, a and b lost their first records.
    let cut = appended[4].0;
    truncate(log, cut, CHECK);
    let kept = &appended[4..];
    assert_eq!(read_all(log, LogPosition::START, 3, &ids, CHECK), kept, "{CHECK}: read_from after truncate({cut})");
    assert_eq!(
        my_pending(log, &ids, CHECK),
        vec![c, a, b],
        "{CHECK}: pending after truncate({cut}) is not ordered by the earliest remaining record"
    );
    for inv in [a, b, c, d] {
        let expected: Vec<_> = kept.iter().filter(|(_, r)| r.invocation == inv).cloned().collect();
        assert_eq!(records(log, inv, CHECK), expected, "{CHECK}: records() after truncate({cut})");
    }
    // Truncating to an earlier position is a no-op.
    truncate(log, appended[1].0, CHECK);
    assert_eq!(
        read_all(log, LogPosition::START, 100, &ids, CHECK),
        kept,
        "{CHECK}: an earlier truncate changed the log"
    );
    let r = record(d, TriggerSource::External, b"new".to_vec());
    let at = append(log, &r, CHECK);
    assert!(at > appended[8].0, "{CHECK}: an append after truncate got {at}, not after {}", appended[8].0);
    assert_eq!(my_pending(log, &ids, CHECK), vec![c, a, b, d]);
    assert_eq!(records(log, d, CHECK), vec![(at, r)], "{CHECK}: records of a truncated-away invocation appended again");
}

/// `truncate` to a position past the end drops everything and is clamped:
/// later appends are still visible, at larger positions.
pub fn check_truncate_past_end(factory: &dyn LogFactory) {
    const CHECK: &str = "trigger_log/truncate_past_end";
    let log = open(factory, &unique_name("past-end"), CHECK);
    let log = log.as_ref();
    let inv = unique_invocation();
    let mut last = LogPosition::START;
    for i in 0..5u8 {
        last = append(log, &record(inv, TriggerSource::External, vec![i]), CHECK);
    }
    truncate(log, LogPosition(u64::MAX), CHECK);
    assert!(my_pending(log, &[inv], CHECK).is_empty(), "{CHECK}: an invocation is pending after truncating everything");
    assert!(
        read_all(log, LogPosition::START, 10, &[inv], CHECK).is_empty(),
        "{CHECK}: records left after truncate(MAX)"
    );
    let r = record(inv, TriggerSource::External, b"after".to_vec());
    let at = append(log, &r, CHECK);
    assert!(at > last, "{CHECK}: an append after truncate(MAX) got {at}, not after {last}");
    assert_eq!(
        read_all(log, LogPosition::START, 10, &[inv], CHECK),
        vec![(at, r.clone())],
        "{CHECK}: a record appended after truncate(MAX) is not visible: truncate was not clamped to the end"
    );
    assert_eq!(records(log, inv, CHECK), vec![(at, r)]);
    assert_eq!(my_pending(log, &[inv], CHECK), vec![inv]);
}

/// `truncate_completed` keeps every record of a pending invocation, returns
/// a start before them, and, once nothing is pending, drops everything.
pub fn check_truncate_completed_keeps_pending(factory: &dyn LogFactory) {
    const CHECK: &str = "trigger_log/truncate_completed_keeps_pending";
    let log = open(factory, &unique_name("truncate-completed"), CHECK);
    let log = log.as_ref();
    let ids: Vec<InvocationId> = (0..3).map(|_| unique_invocation()).collect();
    let [a, b, c] = [ids[0], ids[1], ids[2]];
    let mut appended = Vec::new();
    for (i, inv) in [a, a, b, c, a, b, c, c, b].into_iter().enumerate() {
        let r = record(inv, component(0, i as u32), pattern(1000 + i, i as u8));
        appended.push((append(log, &r, CHECK), r));
    }
    complete(log, a, CHECK);
    complete(log, c, CHECK);
    let start = log.truncate_completed().unwrap_or_else(|e| panic!("{CHECK}: truncate_completed failed: {e}"));
    let b_records: Vec<_> = appended.iter().filter(|(_, r)| r.invocation == b).cloned().collect();
    assert!(start <= b_records[0].0, "{CHECK}: truncate_completed returned {start}, after b's first record");
    assert_eq!(my_pending(log, &ids, CHECK), vec![b], "{CHECK}: pending after truncate_completed");
    assert_eq!(records(log, b, CHECK), b_records, "{CHECK}: truncate_completed dropped a pending record");
    let read = read_all(log, LogPosition::START, 4, &ids, CHECK);
    assert!(read.iter().all(|(p, _)| *p >= start), "{CHECK}: a record before the returned start {start} is still read");
    let read_b: Vec<_> = read.into_iter().filter(|(_, r)| r.invocation == b).collect();
    assert_eq!(read_b, b_records, "{CHECK}: read_from lost a pending record after truncate_completed");

    complete(log, b, CHECK);
    let start = log.truncate_completed().unwrap_or_else(|e| panic!("{CHECK}: truncate_completed failed: {e}"));
    let last = appended[appended.len() - 1].0;
    assert!(start > last, "{CHECK}: with nothing pending, truncate_completed returned {start}, not past {last}");
    assert!(read_all(log, LogPosition::START, 4, &ids, CHECK).is_empty(), "{CHECK}: completed records left");
    let r = record(a, TriggerSource::External, b"next".to_vec());
    let at = append(log, &r, CHECK);
    assert!(at >= start, "{CHECK}: an append after truncate_completed got {at}, before the start {start}");
    assert_eq!(read_all(log, LogPosition::START, 4, &ids, CHECK), vec![(at, r)]);
}

/// A durable log closed and opened again keeps its records (byte for byte,
/// at their positions), its completions and its pending order, and hands
/// out larger positions afterwards.
pub fn check_reopen_keeps_state(factory: &dyn LogFactory) {
    const CHECK: &str = "trigger_log/reopen_keeps_state";
    if !factory.durable() {
        return;
    }
    let name = unique_name("reopen");
    let ids: Vec<InvocationId> = (0..3).map(|_| unique_invocation()).collect();
    let [a, b, c] = [ids[0], ids[1], ids[2]];
    let mut appended = Vec::new();
    {
        let log = open(factory, &name, CHECK);
        for (i, inv) in [c, a, b, c, a].into_iter().enumerate() {
            let len = if i == 3 { 200_000 } else { 10 * i };
            let r = record(inv, component(i as u32, 2), pattern(len, i as u8));
            appended.push((append(log.as_ref(), &r, CHECK), r));
        }
        complete(log.as_ref(), b, CHECK);
    }
    let mine =
        |inv: InvocationId| -> Vec<_> { appended.iter().filter(|(_, r)| r.invocation == inv).cloned().collect() };
    let last = appended[appended.len() - 1].0;
    {
        let log = open(factory, &name, CHECK);
        let log = log.as_ref();
        assert_eq!(my_pending(log, &ids, CHECK), vec![c, a], "{CHECK}: pending changed across reopening");
        assert!(records(log, c, CHECK) == mine(c), "{CHECK}: records changed across reopening");
        assert_eq!(records(log, a, CHECK), mine(a), "{CHECK}: records changed across reopening");
        assert!(records(log, b, CHECK).is_empty(), "{CHECK}: a completion was lost across reopening");
        let read: Vec<_> = read_all(log, LogPosition::START, 2, &[a, c], CHECK);
        let expected: Vec<_> = appended.iter().filter(|(_, r)| r.invocation != b).cloned().collect();
        assert!(read == expected, "{CHECK}: read_from after reopening does not return the records as appended");
        let r = record(b, TriggerSource::External, b"after reopen".to_vec());
        let at = append(log, &r, CHECK);
        assert!(at > last, "{CHECK}: an append after reopening got {at}, not after {last}");
        complete(log, a, CHECK);
    }
    let log = open(factory, &name, CHECK);
    assert_eq!(my_pending(log.as_ref(), &ids, CHECK), vec![c, b], "{CHECK}: pending after the second reopening");
}

/// A truncation survives reopening, and positions keep increasing.
pub fn check_reopen_keeps_truncation(factory: &dyn LogFactory) {
    const CHECK: &str = "trigger_log/reopen_keeps_truncation";
    if !factory.durable() {
        return;
    }
    let name = unique_name("reopen-truncate");
    let inv = unique_invocation();
    let mut appended = Vec::new();
    {
        let log = open(factory, &name, CHECK);
        for i in 0..6u8 {
            let r = record(inv, TriggerSource::External, vec![i; 100]);
            appended.push((append(log.as_ref(), &r, CHECK), r));
        }
        truncate(log.as_ref(), appended[3].0, CHECK);
    }
    let log = open(factory, &name, CHECK);
    let log = log.as_ref();
    assert_eq!(
        read_all(log, LogPosition::START, 10, &[inv], CHECK),
        appended[3..],
        "{CHECK}: the truncation did not survive reopening"
    );
    assert_eq!(records(log, inv, CHECK), appended[3..]);
    let at = append(log, &record(inv, TriggerSource::External, b"x".to_vec()), CHECK);
    assert!(at > appended[5].0, "{CHECK}: an append after reopening got {at}, not after {}", appended[5].0);
}
