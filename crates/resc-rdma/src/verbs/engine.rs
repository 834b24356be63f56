//! How a run of one-sided operations on one region becomes RDMA work
//! requests, and how their completions become the batch contract.
//!
//! Pure logic over a [`WorkQueue`] (a queue pair's send side, or a simulated
//! one in the tests), so the contract is tested without RDMA hardware.
//!
//! A run is a slice of consecutive operations on one region. They are
//! checked in order against the memory node's answer (access key, then
//! bounds — the memory node's authoritative length, not the caller's), and
//! turned into *windows*: chains of work requests that fit the staging
//! buffer and the send queue. A window is posted as one chain and waited
//! for before the next is built, so:
//!
//! - the first operation that fails the check is never posted, those before
//!   it are posted and waited for, and the error names it;
//! - if the NIC fails work request *k* of a window, RC semantics flush every
//!   later request of the queue pair unexecuted (the queue pair enters the
//!   error state), so operations after the failing one take no effect, and
//!   no later window is posted;
//! - within a window, an RDMA WRITE that follows an RDMA READ carries the
//!   fence flag, so it cannot overtake the READ at the responder; a READ
//!   after a WRITE needs nothing (RC executes them in order).

use super::messages::RegionAccess;
use super::sys::{RunFailure, Work, WorkOp};
use resc_core::ids::{AccessKey, NodeId, RegionId};
use resc_core::transport::{RemoteOp, RemoteRegion, TransportError};

/// A send queue with registered staging memory.
pub(super) trait WorkQueue {
    /// Bytes of staging memory.
    fn staging_len(&self) -> usize;
    /// Work requests one chain may hold.
    fn max_works(&self) -> usize;
    /// Copies `data` into staging at `offset`.
    fn stage(&mut self, offset: usize, data: &[u8]) -> bool;
    /// Copies staging bytes at `offset` into `buf`.
    fn unstage(&self, offset: usize, buf: &mut [u8]) -> bool;
    /// Posts `works` as one chain and waits for all of them.
    fn run(&mut self, works: &[Work]) -> Result<(), RunFailure>;
}

/// The region a run addresses, as the memory node described it when it
/// accepted the connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    pub(super) node: NodeId,
    pub(super) region: RegionId,
    /// The key the memory node checked when it connected the queue pair.
    pub(super) key: AccessKey,
    pub(super) access: RegionAccess,
}

/// How a run failed; indices are positions in the run.
#[derive(Debug)]
pub(super) enum RunError {
    /// The operation breaks the memory node's rules; it was not posted.
    Refused { index: usize, error: TransportError },
    /// The NIC failed the operation.
    Nic { index: usize, failure: RunFailure },
}

/// Reused buffers of a run: the window's work requests and, for each, the
/// operation and byte offset within it that it carries.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    works: Vec<Work>,
    owners: Vec<(usize, usize)>,
    used: usize,
    has_read: bool,
}

/// Checks one operation the way the memory node would: key first (so a
/// region's length does not leak to whoever lacks its key), then bounds.
pub(super) fn check(target: &Target, region: &RemoteRegion, offset: u64, len: usize) -> Result<(), TransportError> {
    if region.key != target.key {
        return Err(TransportError::AccessDenied { node: target.node, region: target.region });
    }
    let len = len as u64;
    match offset.checked_add(len) {
        Some(end) if end <= target.access.len => Ok(()),
        _ => Err(TransportError::OutOfBounds { region: target.region, offset, len, region_len: target.access.len }),
    }
}

fn parts<'o>(op: &'o RemoteOp<'_>) -> (&'o RemoteRegion, u64, usize, bool) {
    match op {
        RemoteOp::Read { region, offset, buf } => (region, *offset, buf.len(), true),
        RemoteOp::Write { region, offset, data } => (region, *offset, data.len(), false),
    }
}

/// Runs `ops` (all on `target`'s region) in order, stopping at the first failure.
pub(super) fn execute_run<Q: WorkQueue>(
    queue: &mut Q,
    target: &Target,
    ops: &mut [RemoteOp<'_>],
    scratch: &mut Scratch,
) -> Result<(), RunError> {
    scratch.works.clear();
    scratch.owners.clear();
    scratch.used = 0;
    scratch.has_read = false;
    let capacity = queue.staging_len().min(u32::MAX as usize);
    let max_works = queue.max_works();
    for index in 0..ops.len() {
        let (region, offset, len, read) = parts(&ops[index]);
        if let Err(error) = check(target, region, offset, len) {
            flush(queue, ops, scratch)?;
            return Err(RunError::Refused { index, error });
        }
        let mut done = 0;
        while done < len {
            if scratch.works.len() >= max_works || scratch.used >= capacity {
                flush(queue, ops, scratch)?;
            }
            if capacity == 0 || max_works == 0 {
                return Err(RunError::Nic {
                    index,
                    failure: RunFailure::Post {
                        index: 0,
                        error: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "no staging memory"),
                    },
                });
            }
            let n = (len - done).min(capacity - scratch.used);
            let local = scratch.used;
            if let RemoteOp::Write { data, .. } = &ops[index] {
                if !queue.stage(local, &data[done..done + n]) {
                    return Err(RunError::Nic {
                        index,
                        failure: RunFailure::Post {
                            index: 0,
                            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "staging refused the bytes"),
                        },
                    });
                }
            }
            scratch.works.push(Work {
                op: if read { WorkOp::Read } else { WorkOp::Write },
                local,
                len: n as u32,
                remote_addr: target.access.addr.wrapping_add(offset).wrapping_add(done as u64),
                rkey: target.access.rkey,
                fence: !read && scratch.has_read,
            });
            scratch.owners.push((index, done));
            scratch.used += n;
            scratch.has_read |= read;
            done += n;
        }
    }
    flush(queue, ops, scratch)
}

/// Posts the window and waits; copies what completed READs fetched.
fn flush<Q: WorkQueue>(queue: &mut Q, ops: &mut [RemoteOp<'_>], scratch: &mut Scratch) -> Result<(), RunError> {
    if scratch.works.is_empty() {
        return Ok(());
    }
    let result = queue.run(&scratch.works);
    // The first work request that did not complete, and its operation.
    let failed = match &result {
        Ok(()) => None,
        Err(RunFailure::Completion { index, .. } | RunFailure::Post { index, .. } | RunFailure::Stuck { index }) => {
            Some(*index)
        }
    };
    let failed_op = failed.map(|w| scratch.owners.get(w).or(scratch.owners.last()).map_or(0, |o| o.0));
    for (work, &(op_index, at)) in scratch.works.iter().zip(&scratch.owners) {
        if failed_op.is_some_and(|f| op_index >= f) {
            break;
        }
        if let (WorkOp::Read, RemoteOp::Read { buf, .. }) = (work.op, &mut ops[op_index]) {
            let n = work.len as usize;
            queue.unstage(work.local, &mut buf[at..at + n]);
        }
    }
    scratch.works.clear();
    scratch.owners.clear();
    scratch.used = 0;
    scratch.has_read = false;
    match (result, failed_op) {
        (Err(failure), Some(index)) => Err(RunError::Nic { index, failure }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ADDR: u64 = 0x7f00_0000_1000;
    const RKEY: u32 = 0xabcd;
    const REM_ACCESS_ERR: u32 = 10;

    /// An RC queue pair to a simulated memory region: work requests of a
    /// chain execute in order; the first that fails stops the chain.
    struct Simulated {
        staging: Vec<u8>,
        remote: Vec<u8>,
        max_works: usize,
        /// Fail the n-th work request posted overall (0-based).
        fail_at: Option<usize>,
        posted: usize,
        chains: Vec<Vec<Work>>,
    }

    impl Simulated {
        fn new(remote_len: usize, staging: usize, max_works: usize) -> Self {
            Simulated {
                staging: vec![0; staging],
                remote: vec![0; remote_len],
                max_works,
                fail_at: None,
                posted: 0,
                chains: Vec::new(),
            }
        }
    }

    impl WorkQueue for Simulated {
        fn staging_len(&self) -> usize {
            self.staging.len()
        }
        fn max_works(&self) -> usize {
            self.max_works
        }
        fn stage(&mut self, offset: usize, data: &[u8]) -> bool {
            self.staging[offset..offset + data.len()].copy_from_slice(data);
            true
        }
        fn unstage(&self, offset: usize, buf: &mut [u8]) -> bool {
            buf.copy_from_slice(&self.staging[offset..offset + buf.len()]);
            true
        }
        fn run(&mut self, works: &[Work]) -> Result<(), RunFailure> {
            assert!(works.len() <= self.max_works, "a chain longer than the send queue");
            self.chains.push(works.to_vec());
            for (index, w) in works.iter().enumerate() {
                let n = w.len as usize;
                assert!(w.local + n <= self.staging.len(), "a work request outside staging");
                let at = (w.remote_addr - ADDR) as usize;
                if self.fail_at == Some(self.posted) || w.rkey != RKEY || at + n > self.remote.len() {
                    self.posted += 1;
                    return Err(RunFailure::Completion { index, status: REM_ACCESS_ERR });
                }
                self.posted += 1;
                match w.op {
                    WorkOp::Read => self.staging[w.local..w.local + n].copy_from_slice(&self.remote[at..at + n]),
                    WorkOp::Write => self.remote[at..at + n].copy_from_slice(&self.staging[w.local..w.local + n]),
                    WorkOp::Send => unreachable!(),
                }
            }
            Ok(())
        }
    }

    fn target(len: u64) -> Target {
        Target {
            node: NodeId(1),
            region: RegionId(7),
            key: AccessKey(42),
            access: RegionAccess { addr: ADDR, rkey: RKEY, len },
        }
    }

    fn region(len: u64) -> RemoteRegion {
        RemoteRegion { node: NodeId(1), region: RegionId(7), key: AccessKey(42), len }
    }

    #[test]
    fn a_read_after_a_write_sees_it_across_windows() {
        let mut q = Simulated::new(256, 16, 3);
        let r = region(256);
        let data: Vec<u8> = (1..=100).collect();
        let mut back = vec![0u8; 100];
        let mut ops = [
            RemoteOp::Write { region: r, offset: 10, data: &data },
            RemoteOp::Read { region: r, offset: 10, buf: &mut back },
        ];
        execute_run(&mut q, &target(256), &mut ops, &mut Scratch::default()).unwrap();
        assert_eq!(back, data);
        assert_eq!(&q.remote[10..110], &data[..]);
        assert!(q.chains.iter().all(|c| c.len() <= 3));
        assert!(q.chains.iter().flatten().all(|w| w.len <= 16));
    }

    #[test]
    fn a_write_after_a_read_in_one_window_is_fenced() {
        let mut q = Simulated::new(64, 64, 8);
        let r = region(64);
        let mut seen = [0u8; 4];
        let mut ops = [
            RemoteOp::Write { region: r, offset: 0, data: b"aaaa" },
            RemoteOp::Read { region: r, offset: 0, buf: &mut seen },
            RemoteOp::Write { region: r, offset: 0, data: b"bbbb" },
        ];
        execute_run(&mut q, &target(64), &mut ops, &mut Scratch::default()).unwrap();
        let fences: Vec<bool> = q.chains[0].iter().map(|w| w.fence).collect();
        assert_eq!(fences, [false, false, true]);
        assert_eq!(&seen, b"aaaa");
        assert_eq!(&q.remote[..4], b"bbbb");
    }

    #[test]
    fn a_refused_operation_stops_the_run_after_posting_those_before_it() {
        let mut q = Simulated::new(64, 64, 8);
        let r = region(64);
        let bad = RemoteRegion { key: AccessKey(43), ..r };
        let mut seen = [0u8; 4];
        let mut untouched = [0xEEu8; 4];
        let mut ops = [
            RemoteOp::Write { region: r, offset: 0, data: b"aaaa" },
            RemoteOp::Read { region: r, offset: 0, buf: &mut seen },
            RemoteOp::Read { region: bad, offset: 0, buf: &mut untouched },
            RemoteOp::Write { region: r, offset: 8, data: b"cccc" },
        ];
        let err = execute_run(&mut q, &target(64), &mut ops, &mut Scratch::default()).unwrap_err();
        assert!(matches!(err, RunError::Refused { index: 2, error: TransportError::AccessDenied { .. } }), "{err:?}");
        assert_eq!(&seen, b"aaaa");
        assert_eq!(untouched, [0xEE; 4]);
        assert_eq!(&q.remote[8..12], &[0; 4]);
    }

    #[test]
    fn the_key_is_checked_before_the_bounds() {
        let t = target(64);
        let bad = RemoteRegion { key: AccessKey(1), ..region(64) };
        assert!(matches!(check(&t, &bad, u64::MAX, 10), Err(TransportError::AccessDenied { .. })));
        let good = region(64);
        assert!(matches!(check(&t, &good, u64::MAX, 2), Err(TransportError::OutOfBounds { .. })));
        assert!(matches!(check(&t, &good, 65, 0), Err(TransportError::OutOfBounds { .. })));
        assert!(check(&t, &good, 64, 0).is_ok());
        // The memory node's length counts, not the caller's.
        let lying = RemoteRegion { len: 1 << 20, ..good };
        assert!(matches!(check(&t, &lying, 60, 8), Err(TransportError::OutOfBounds { region_len: 64, .. })));
    }

    #[test]
    fn a_nic_failure_names_its_operation_and_stops_the_rest() {
        let mut q = Simulated::new(64, 8, 2);
        // Each op fills the 8-byte staging, so each is one work request of
        // its own window: work request #2 is op #2.
        q.fail_at = Some(2);
        let r = region(64);
        let mut first = [0u8; 8];
        let mut ops = [
            RemoteOp::Write { region: r, offset: 0, data: b"01234567" },
            RemoteOp::Read { region: r, offset: 0, buf: &mut first },
            RemoteOp::Write { region: r, offset: 16, data: b"xy" },
            RemoteOp::Write { region: r, offset: 24, data: b"zz" },
        ];
        let err = execute_run(&mut q, &target(64), &mut ops, &mut Scratch::default()).unwrap_err();
        assert!(matches!(err, RunError::Nic { index: 2, .. }), "{err:?}");
        assert_eq!(&first, b"01234567", "the read before the failure completed");
        assert_eq!(&q.remote[16..18], &[0, 0]);
        assert_eq!(&q.remote[24..26], &[0, 0]);
    }

    #[test]
    fn reads_flushed_after_a_failure_leave_their_buffers_alone() {
        let mut q = Simulated::new(64, 64, 8);
        q.remote[..4].copy_from_slice(b"live");
        q.fail_at = Some(1);
        let r = region(64);
        let (mut before, mut failing, mut after) = ([0u8; 4], [0xEEu8; 4], [0xEEu8; 4]);
        let mut ops = [
            RemoteOp::Read { region: r, offset: 0, buf: &mut before },
            RemoteOp::Read { region: r, offset: 0, buf: &mut failing },
            RemoteOp::Read { region: r, offset: 0, buf: &mut after },
        ];
        let err = execute_run(&mut q, &target(64), &mut ops, &mut Scratch::default()).unwrap_err();
        assert!(matches!(err, RunError::Nic { index: 1, .. }), "{err:?}");
        assert_eq!(q.chains.len(), 1, "all three were one window");
        assert_eq!(&before, b"live");
        assert_eq!(failing, [0xEE; 4]);
        assert_eq!(after, [0xEE; 4]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Read(u64, usize),
        Write(u64, Vec<u8>),
        BadKey,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..80, 0usize..40).prop_map(|(o, n)| Op::Read(o, n)),
            4 => (0u64..80, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(o, d)| Op::Write(o, d)),
            1 => Just(Op::BadKey),
        ]
    }

    proptest! {
        /// The engine over a simulated RC queue pair behaves like applying
        /// the operations one by one and stopping at the first bad one.
        #[test]
        fn matches_the_sequential_model(
            ops in proptest::collection::vec(op_strategy(), 0..12),
            staging in 1usize..48,
            max_works in 1usize..5,
            fail_at in proptest::option::of(0usize..30),
        ) {
            const LEN: usize = 64;
            let r = region(LEN as u64);
            let mut q = Simulated::new(LEN, staging, max_works);
            q.fail_at = fail_at;
            let mut bufs: Vec<Vec<u8>> = ops.iter().map(|op| match op {
                Op::Read(_, n) => vec![0xEE; *n],
                _ => vec![0xEE; 1],
            }).collect();
            let mut remote_ops: Vec<RemoteOp<'_>> = ops.iter().zip(bufs.iter_mut()).map(|(op, buf)| match op {
                Op::Read(o, _) => RemoteOp::Read { region: r, offset: *o, buf },
                Op::Write(o, d) => RemoteOp::Write { region: r, offset: *o, data: d },
                Op::BadKey => RemoteOp::Write { region: RemoteRegion { key: AccessKey(0), ..r }, offset: 0, data: &[] },
            }).collect();
            let result = execute_run(&mut q, &target(LEN as u64), &mut remote_ops, &mut Scratch::default());
            drop(remote_ops);

            // The model: apply in order; stop at the first refused op or at
            // the op that carries the `fail_at`-th work request.
            let mut model = vec![0u8; LEN];
            let mut expected_reads: Vec<Option<Vec<u8>>> = vec![None; ops.len()];
            let mut stop = None;
            for (i, op) in ops.iter().enumerate() {
                let (offset, n) = match op {
                    Op::Read(o, n) => (*o, *n),
                    Op::Write(o, d) => (*o, d.len()),
                    Op::BadKey => { stop = Some((i, true)); break; }
                };
                if offset as usize + n > LEN { stop = Some((i, true)); break; }
                match op {
                    Op::Read(..) => expected_reads[i] = Some(model[offset as usize..offset as usize + n].to_vec()),
                    Op::Write(_, d) => model[offset as usize..offset as usize + n].copy_from_slice(d),
                    Op::BadKey => {}
                }
            }
            match (&result, fail_at) {
                (Ok(()), _) => {
                    prop_assert!(stop.is_none());
                    prop_assert_eq!(&q.remote, &model);
                }
                (Err(RunError::Refused { index, .. }), _) => {
                    prop_assert_eq!(Some(*index), stop.map(|s| s.0));
                    prop_assert_eq!(&q.remote, &model);
                }
                (Err(RunError::Nic { index, .. }), Some(_)) => {
                    // Ops before the failing one took effect, it and later ones did not
                    // (a failing write may be partly applied only in chunks before the failure).
                    let mut partial = vec![0u8; LEN];
                    for op in ops.iter().take(*index) {
                        if let Op::Write(o, d) = op { partial[*o as usize..*o as usize + d.len()].copy_from_slice(d); }
                    }
                    if let Op::Write(o, d) = &ops[*index] {
                        // Chunks of the failing write before the failure may have landed.
                        let range = *o as usize..*o as usize + d.len();
                        for (k, at) in range.clone().enumerate() {
                            prop_assert!(q.remote[at] == partial[at] || q.remote[at] == d[k]);
                        }
                        let mut rest = q.remote.clone();
                        rest[range.clone()].copy_from_slice(&partial[range]);
                        prop_assert_eq!(&rest, &partial);
                    } else {
                        prop_assert_eq!(&q.remote, &partial);
                    }
                    for i in 0..*index {
                        if let Some(expected) = &expected_reads[i] { prop_assert_eq!(&bufs[i], expected); }
                    }
                    // Reads after the failing operation fetched nothing (the
                    // failing one itself may hold chunks of earlier windows).
                    for i in *index + 1..ops.len() {
                        if matches!(ops[i], Op::Read(..)) { prop_assert!(bufs[i].iter().all(|&b| b == 0xEE)); }
                    }
                }
                (other, None) => prop_assert!(false, "unexpected {:?}", other),
            }
            if result.is_ok() || matches!(result, Err(RunError::Refused { .. })) {
                for (i, expected) in expected_reads.iter().enumerate() {
                    if let Some(expected) = expected {
                        if stop.is_none_or(|(s, _)| i < s) { prop_assert_eq!(&bufs[i], expected); }
                    }
                }
            }
        }
    }
}
