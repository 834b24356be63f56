//! Conformance checks for [`Transport`]: see the contract in
//! [`crate::transport`].
//!
//! The checks allocate their regions from a [`MemoryPool`] the transport
//! reaches, and free them when they end (also when they fail). They need a
//! few KiB of the pool's capacity and open endpoints of their own, so they
//! can share a transport with other checks.

use super::{pattern, unique_invocation};
use crate::ids::{AccessKey, ComputeId, Endpoint};
use crate::pool::MemoryPool;
use crate::transport::{BatchError, RemoteOp, RemoteRegion, Transport, TransportError};
use std::time::Duration;

/// How long a check waits for a message that was sent: a bound against
/// hanging, not a performance expectation.
const ARRIVAL: Duration = Duration::from_secs(10);
/// The timeout of a `recv` that must time out.
const SHORT: Duration = Duration::from_millis(50);

/// Runs every transport check.
pub fn transport_suite(memory: &dyn MemoryPool, transport: &dyn Transport) {
    check_read_after_write(memory, transport);
    check_zero_fill(memory, transport);
    check_wrong_key(memory, transport);
    check_out_of_bounds(memory, transport);
    check_freed_region(memory, transport);
    check_batch_stops_at_first_failure(memory, transport);
    check_batch_read_sees_earlier_write(memory, transport);
    check_batch_across_regions(memory, transport);
    check_messages_in_order(transport);
    check_message_payloads_complete(transport);
    check_send_to_unopened_endpoint(transport);
    check_recv_timeout(transport);
    check_close_drops_messages(transport);
    check_concurrent_senders_keep_order(transport);
}

/// A region that is freed when the check ends, whichever way it ends.
struct Scratch<'a> {
    pool: &'a dyn MemoryPool,
    region: RemoteRegion,
}

impl<'a> Scratch<'a> {
    fn new(pool: &'a dyn MemoryPool, len: u64, check: &str) -> Self {
        let region = pool
            .allocate(len)
            .unwrap_or_else(|e| panic!("{check}: allocating a {len}-byte region for the check failed: {e}"));
        Scratch { pool, region }
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        // Already freed by the check, or the check failed: either way nothing to report.
        let _ = self.pool.free(&self.region);
    }
}

fn read_vec(transport: &dyn Transport, region: &RemoteRegion, offset: u64, len: usize, check: &str) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    transport
        .read(region, offset, &mut buf)
        .unwrap_or_else(|e| panic!("{check}: reading {len} bytes at offset {offset} of {} failed: {e}", region.region));
    buf
}

fn write_ok(transport: &dyn Transport, region: &RemoteRegion, offset: u64, data: &[u8], check: &str) {
    transport.write(region, offset, data).unwrap_or_else(|e| {
        panic!("{check}: writing {} bytes at offset {offset} of {} failed: {e}", data.len(), region.region)
    });
}

fn forged(region: &RemoteRegion) -> RemoteRegion {
    RemoteRegion { key: AccessKey(region.key.0 ^ 0x5a5a_0001), ..*region }
}

fn endpoint(invocation: crate::ids::InvocationId, component: u32) -> Endpoint {
    Endpoint { invocation, component: ComputeId(component), instance: 0 }
}

/// Bytes written are read back exactly, and overwrites replace only their range.
pub fn check_read_after_write(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/read_after_write";
    let scratch = Scratch::new(memory, 8192, CHECK);
    let region = scratch.region;
    let mut model = vec![0u8; 8192];

    let first = pattern(1000, 1);
    write_ok(transport, &region, 100, &first, CHECK);
    model[100..1100].copy_from_slice(&first);
    assert_eq!(
        read_vec(transport, &region, 100, 1000, CHECK),
        first,
        "{CHECK}: the bytes read back differ from those written"
    );

    let second = pattern(100, 2);
    write_ok(transport, &region, 500, &second, CHECK);
    model[500..600].copy_from_slice(&second);
    let last = pattern(10, 3);
    write_ok(transport, &region, 8182, &last, CHECK);
    model[8182..].copy_from_slice(&last);
    assert!(
        read_vec(transport, &region, 0, 8192, CHECK) == model,
        "{CHECK}: after overlapping writes the region does not hold what was written (an overwrite changed bytes outside its range?)"
    );
    assert_eq!(
        read_vec(transport, &region, 550, 1, CHECK),
        vec![model[550]],
        "{CHECK}: a one-byte read returned the wrong byte"
    );

    // An empty range at the very end lies within the region.
    transport
        .write(&region, 8192, &[])
        .unwrap_or_else(|e| panic!("{CHECK}: an empty write at the region's end failed: {e}"));
    transport
        .read(&region, 8192, &mut [])
        .unwrap_or_else(|e| panic!("{CHECK}: an empty read at the region's end failed: {e}"));
}

/// Bytes never written read as zeros, also around written ones.
pub fn check_zero_fill(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/zero_fill";
    let scratch = Scratch::new(memory, 3 * 4096 + 17, CHECK);
    let region = scratch.region;
    let len = region.len as usize;
    assert!(
        read_vec(transport, &region, 0, len, CHECK).iter().all(|&b| b == 0),
        "{CHECK}: a fresh region does not read as zeros"
    );
    write_ok(transport, &region, 4000, &pattern(200, 4), CHECK);
    let all = read_vec(transport, &region, 0, len, CHECK);
    assert!(all[..4000].iter().all(|&b| b == 0), "{CHECK}: bytes before a write are no longer zero");
    assert!(all[4200..].iter().all(|&b| b == 0), "{CHECK}: bytes after a write are no longer zero");
}

/// A wrong key is `AccessDenied`; it neither returns nor changes any data.
pub fn check_wrong_key(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/wrong_key";
    let scratch = Scratch::new(memory, 4096, CHECK);
    let region = scratch.region;
    let original = pattern(4096, 5);
    write_ok(transport, &region, 0, &original, CHECK);
    let bad = forged(&region);

    let mut buf = vec![0xEEu8; 64];
    let read = transport.read(&bad, 0, &mut buf);
    assert!(
        matches!(read, Err(TransportError::AccessDenied { region: r, .. }) if r == region.region),
        "{CHECK}: a read with a wrong key returned {read:?}, expected AccessDenied for {}",
        region.region
    );
    assert!(buf.iter().all(|&b| b == 0xEE), "{CHECK}: a read with a wrong key wrote data into the caller's buffer");

    let write = transport.write(&bad, 0, &[0u8; 64]);
    assert!(
        matches!(write, Err(TransportError::AccessDenied { region: r, .. }) if r == region.region),
        "{CHECK}: a write with a wrong key returned {write:?}, expected AccessDenied"
    );
    let zero_key = RemoteRegion { key: AccessKey(0), ..region };
    if zero_key.key != region.key {
        let write = transport.write(&zero_key, 10, &[0u8; 8]);
        assert!(
            matches!(write, Err(TransportError::AccessDenied { .. })),
            "{CHECK}: a write with key 0 returned {write:?}, expected AccessDenied"
        );
    }
    assert!(
        read_vec(transport, &region, 0, 4096, CHECK) == original,
        "{CHECK}: a write with a wrong key changed the region"
    );
}

/// Ranges that do not lie within the region are `OutOfBounds`; they neither
/// return nor change any data.
pub fn check_out_of_bounds(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/out_of_bounds";
    let scratch = Scratch::new(memory, 4096, CHECK);
    let region = scratch.region;
    let len = region.len;
    let original = pattern(4096, 6);
    write_ok(transport, &region, 0, &original, CHECK);

    let cases: [(&str, u64, usize); 6] = [
        ("an empty range past the end", len + 1, 0),
        ("one byte at the end", len, 1),
        ("a range crossing the end", len - 10, 20),
        ("a range one byte too long", 0, len as usize + 1),
        ("an offset whose end overflows u64", u64::MAX, 2),
        ("a large offset whose end overflows u64", u64::MAX - 5, 10),
    ];
    for (what, offset, n) in cases {
        let mut buf = vec![0xEEu8; n];
        let read = transport.read(&region, offset, &mut buf);
        assert!(
            matches!(read, Err(TransportError::OutOfBounds { region: r, offset: o, .. }) if r == region.region && o == offset),
            "{CHECK}: reading {what} (offset {offset}, {n} bytes of a {len}-byte region) returned {read:?}, expected OutOfBounds naming the region and offset"
        );
        assert!(buf.iter().all(|&b| b == 0xEE), "{CHECK}: reading {what} wrote into the caller's buffer");

        let data = vec![0u8; n];
        let write = transport.write(&region, offset, &data);
        assert!(
            matches!(write, Err(TransportError::OutOfBounds { region: r, .. }) if r == region.region),
            "{CHECK}: writing {what} (offset {offset}, {n} bytes of a {len}-byte region) returned {write:?}, expected OutOfBounds"
        );
    }
    assert!(
        read_vec(transport, &region, 0, 4096, CHECK) == original,
        "{CHECK}: an out-of-bounds write changed the region (was it partly applied?)"
    );
}

/// A freed region is `UnknownRegion`, even with its right key.
pub fn check_freed_region(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/freed_region";
    let region = memory.allocate(4096).unwrap_or_else(|e| panic!("{CHECK}: allocating failed: {e}"));
    write_ok(transport, &region, 0, &pattern(16, 7), CHECK);
    memory.free(&region).unwrap_or_else(|e| panic!("{CHECK}: freeing with the right key failed: {e}"));

    let mut buf = vec![0xEEu8; 16];
    let read = transport.read(&region, 0, &mut buf);
    assert!(
        matches!(read, Err(TransportError::UnknownRegion { region: r, .. }) if r == region.region),
        "{CHECK}: reading a freed region returned {read:?}, expected UnknownRegion"
    );
    assert!(buf.iter().all(|&b| b == 0xEE), "{CHECK}: reading a freed region wrote into the caller's buffer");
    let write = transport.write(&region, 0, &[1, 2, 3]);
    assert!(
        matches!(write, Err(TransportError::UnknownRegion { region: r, .. }) if r == region.region),
        "{CHECK}: writing a freed region returned {write:?}, expected UnknownRegion"
    );
}

/// A batch runs in order and stops at the first failure: operations before it
/// took effect, those after it did not, and the error names its index.
pub fn check_batch_stops_at_first_failure(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/batch_stops_at_first_failure";
    let scratch = Scratch::new(memory, 64, CHECK);
    let region = scratch.region;

    let mut seen = [0u8; 4];
    let result = transport.execute(&mut [
        RemoteOp::Write { region, offset: 0, data: b"aaaa" },
        RemoteOp::Write { region, offset: 8, data: b"bbbb" },
        RemoteOp::Read { region, offset: 0, buf: &mut seen },
        RemoteOp::Write { region, offset: 62, data: b"XXXX" },
        RemoteOp::Write { region, offset: 16, data: b"cccc" },
    ]);
    match result {
        Err(BatchError { index: 3, error: TransportError::OutOfBounds { .. } }) => {}
        other => panic!("{CHECK}: a batch whose operation #3 is out of bounds returned {other:?}, expected BatchError {{ index: 3, OutOfBounds }}"),
    }
    assert_eq!(&seen, b"aaaa", "{CHECK}: the read before the failing operation did not complete");
    let all = read_vec(transport, &region, 0, 64, CHECK);
    assert_eq!(&all[0..4], b"aaaa", "{CHECK}: operation #0, before the failure, did not take effect");
    assert_eq!(&all[8..12], b"bbbb", "{CHECK}: operation #1, before the failure, did not take effect");
    assert_eq!(&all[16..20], &[0; 4], "{CHECK}: operation #4, after the failure, took effect");
    assert_eq!(&all[60..64], &[0; 4], "{CHECK}: the failing out-of-bounds write was partly applied");

    // A wrong key at index 1: index 0 applied, index 2 not.
    let bad = forged(&region);
    let result = transport.execute(&mut [
        RemoteOp::Write { region, offset: 24, data: b"dddd" },
        RemoteOp::Write { region: bad, offset: 28, data: b"eeee" },
        RemoteOp::Write { region, offset: 32, data: b"ffff" },
    ]);
    match result {
        Err(BatchError { index: 1, error: TransportError::AccessDenied { .. } }) => {}
        other => panic!("{CHECK}: a batch whose operation #1 has a wrong key returned {other:?}, expected BatchError {{ index: 1, AccessDenied }}"),
    }
    let all = read_vec(transport, &region, 0, 64, CHECK);
    assert_eq!(&all[24..28], b"dddd", "{CHECK}: operation #0 before a denied one did not take effect");
    assert_eq!(&all[28..36], &[0; 8], "{CHECK}: a denied operation or one after it took effect");

    // Failure at index 0: nothing applied.
    let result = transport.execute(&mut [
        RemoteOp::Write { region, offset: 64, data: b"g" },
        RemoteOp::Write { region, offset: 40, data: b"hhhh" },
    ]);
    assert!(
        matches!(result, Err(BatchError { index: 0, error: TransportError::OutOfBounds { .. } })),
        "{CHECK}: a batch failing at its first operation returned {result:?}, expected index 0 and OutOfBounds"
    );
    assert_eq!(
        &read_vec(transport, &region, 40, 4, CHECK),
        &[0; 4],
        "{CHECK}: an operation after a failing first one took effect"
    );

    transport.execute(&mut []).unwrap_or_else(|e| panic!("{CHECK}: an empty batch failed: {e}"));
}

/// A read that follows a write to the same bytes in one batch sees the write.
pub fn check_batch_read_sees_earlier_write(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/batch_read_sees_earlier_write";
    let scratch = Scratch::new(memory, 4096, CHECK);
    let region = scratch.region;
    let first = pattern(300, 8);
    let second = pattern(100, 9);
    let mut before = vec![0u8; 300];
    let mut after = vec![0u8; 300];
    transport
        .execute(&mut [
            RemoteOp::Write { region, offset: 1000, data: &first },
            RemoteOp::Read { region, offset: 1000, buf: &mut before },
            RemoteOp::Write { region, offset: 1100, data: &second },
            RemoteOp::Read { region, offset: 1000, buf: &mut after },
        ])
        .unwrap_or_else(|e| panic!("{CHECK}: a valid batch failed: {e}"));
    assert!(before == first, "{CHECK}: a read after a write of the same bytes in one batch did not see the write");
    let mut expected = first.clone();
    expected[100..200].copy_from_slice(&second);
    assert!(after == expected, "{CHECK}: a read after two overlapping writes in one batch did not see both, in order");
}

/// One batch can touch several regions; each operation lands in its own region.
pub fn check_batch_across_regions(memory: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "transport/batch_across_regions";
    let a = Scratch::new(memory, 4096, CHECK);
    let b = Scratch::new(memory, 4096, CHECK);
    let (ra, rb) = (a.region, b.region);
    assert_ne!(ra.region, rb.region, "{CHECK}: two live allocations got the same region id");
    let (pa, pb) = (pattern(2048, 10), pattern(2048, 11));
    let mut back_a = vec![0u8; 2048];
    let mut back_b = vec![0u8; 2048];
    transport
        .execute(&mut [
            RemoteOp::Write { region: ra, offset: 2048, data: &pa },
            RemoteOp::Write { region: rb, offset: 0, data: &pb },
            RemoteOp::Read { region: rb, offset: 0, buf: &mut back_b },
            RemoteOp::Read { region: ra, offset: 2048, buf: &mut back_a },
        ])
        .unwrap_or_else(|e| panic!("{CHECK}: a valid batch over two regions failed: {e}"));
    assert!(back_a == pa && back_b == pb, "{CHECK}: reads in a two-region batch returned the wrong bytes");
    assert!(
        read_vec(transport, &ra, 0, 2048, CHECK).iter().all(|&b| b == 0),
        "{CHECK}: a write to one region leaked into another range"
    );
    assert!(
        read_vec(transport, &rb, 2048, 2048, CHECK).iter().all(|&b| b == 0),
        "{CHECK}: a write to one region leaked into another range"
    );
}

/// Opens `endpoints`, runs `f`, and closes them again, also when `f` fails.
fn with_endpoints<const N: usize>(transport: &dyn Transport, check: &str, f: impl FnOnce([&Endpoint; N])) {
    struct Close<'a, const N: usize>(&'a dyn Transport, [Endpoint; N]);
    impl<const N: usize> Drop for Close<'_, N> {
        fn drop(&mut self) {
            for e in &self.1 {
                self.0.close_endpoint(e);
            }
        }
    }
    let invocation = unique_invocation();
    let endpoints: [Endpoint; N] = std::array::from_fn(|i| endpoint(invocation, i as u32));
    for e in &endpoints {
        transport.open_endpoint(e).unwrap_or_else(|err| panic!("{check}: opening endpoint {e} failed: {err}"));
    }
    let guard = Close(transport, endpoints);
    f(std::array::from_fn(|i| &guard.1[i]));
}

fn recv_ok(transport: &dyn Transport, at: &Endpoint, check: &str, what: &str) -> crate::transport::Message {
    transport
        .recv(at, ARRIVAL)
        .unwrap_or_else(|e| panic!("{check}: {what}: no message arrived at {at} within {ARRIVAL:?}: {e}"))
}

/// 100 messages from one endpoint to another arrive once each, complete, in order.
pub fn check_messages_in_order(transport: &dyn Transport) {
    const CHECK: &str = "transport/messages_in_order";
    with_endpoints(transport, CHECK, |[a, b]| {
        for i in 0..100u32 {
            transport
                .send(a, b, &i.to_le_bytes())
                .unwrap_or_else(|e| panic!("{CHECK}: sending message {i} to an open endpoint failed: {e}"));
        }
        for i in 0..100u32 {
            let message = recv_ok(transport, b, CHECK, &format!("message {i} of 100"));
            assert_eq!(&message.from, a, "{CHECK}: message {i} names the wrong sender");
            assert_eq!(
                message.payload,
                i.to_le_bytes(),
                "{CHECK}: message {i} of 100 arrived out of order, duplicated or changed"
            );
        }
        let extra = transport.recv(b, SHORT);
        assert!(
            matches!(extra, Err(TransportError::Timeout(_))),
            "{CHECK}: after 100 messages were received, recv returned {extra:?}, expected Timeout (a duplicate?)"
        );
    });
}

/// An empty and a 1 MiB message arrive byte for byte; messages go only to
/// their destination.
pub fn check_message_payloads_complete(transport: &dyn Transport) {
    const CHECK: &str = "transport/message_payloads_complete";
    with_endpoints(transport, CHECK, |[a, b, c]| {
        let big = pattern(1 << 20, 12);
        transport.send(a, b, &[]).unwrap_or_else(|e| panic!("{CHECK}: sending an empty message failed: {e}"));
        transport.send(a, b, &big).unwrap_or_else(|e| panic!("{CHECK}: sending a 1 MiB message failed: {e}"));
        transport.send(c, a, b"to a").unwrap_or_else(|e| panic!("{CHECK}: sending to a failed: {e}"));
        let empty = recv_ok(transport, b, CHECK, "the empty message");
        assert!(empty.payload.is_empty(), "{CHECK}: an empty message arrived with {} bytes", empty.payload.len());
        let large = recv_ok(transport, b, CHECK, "the 1 MiB message");
        assert!(
            large.payload == big,
            "{CHECK}: a 1 MiB message arrived with {} bytes, or changed",
            large.payload.len()
        );
        let to_a = recv_ok(transport, a, CHECK, "the message for a");
        assert_eq!((&to_a.from, to_a.payload.as_slice()), (c, &b"to a"[..]), "{CHECK}: the message for a is wrong");
        let none = transport.recv(c, SHORT);
        assert!(
            matches!(none, Err(TransportError::Timeout(_))),
            "{CHECK}: an endpoint nobody sent to received {none:?}"
        );
    });
}

/// `send` to an endpoint that is not open fails with `UnknownEndpoint`.
pub fn check_send_to_unopened_endpoint(transport: &dyn Transport) {
    const CHECK: &str = "transport/send_to_unopened_endpoint";
    with_endpoints(transport, CHECK, |[a]| {
        let nowhere = endpoint(a.invocation, 99);
        let result = transport.send(a, &nowhere, b"hello");
        assert!(
            matches!(&result, Err(TransportError::UnknownEndpoint(e)) if *e == nowhere),
            "{CHECK}: sending to an endpoint that was never opened returned {result:?}, expected UnknownEndpoint({nowhere})"
        );
        let result = transport.recv(&nowhere, SHORT);
        assert!(
            matches!(result, Err(TransportError::UnknownEndpoint(_) | TransportError::Timeout(_))),
            "{CHECK}: receiving on an endpoint that was never opened returned {result:?}"
        );
    });
}

/// `recv` on an open endpoint with nothing to receive returns `Timeout` (it
/// does not block past its timeout).
pub fn check_recv_timeout(transport: &dyn Transport) {
    const CHECK: &str = "transport/recv_timeout";
    with_endpoints(transport, CHECK, |[a]| {
        let result = transport.recv(a, SHORT);
        assert!(
            matches!(&result, Err(TransportError::Timeout(e)) if e == a),
            "{CHECK}: recv on an empty open endpoint returned {result:?}, expected Timeout({a})"
        );
        let result = transport.recv(a, Duration::ZERO);
        assert!(
            matches!(&result, Err(TransportError::Timeout(_))),
            "{CHECK}: recv with a zero timeout returned {result:?}, expected Timeout"
        );
    });
}

/// Closing an endpoint drops its unreceived messages; sending to it then
/// fails, and reopening it starts empty.
pub fn check_close_drops_messages(transport: &dyn Transport) {
    const CHECK: &str = "transport/close_drops_messages";
    with_endpoints(transport, CHECK, |[a, b]| {
        transport.send(a, b, b"dropped").unwrap_or_else(|e| panic!("{CHECK}: send failed: {e}"));
        transport.close_endpoint(b);
        let result = transport.send(a, b, b"after close");
        assert!(
            matches!(result, Err(TransportError::UnknownEndpoint(_))),
            "{CHECK}: sending to a closed endpoint returned {result:?}, expected UnknownEndpoint"
        );
        transport.open_endpoint(b).unwrap_or_else(|e| panic!("{CHECK}: reopening an endpoint failed: {e}"));
        let result = transport.recv(b, SHORT);
        assert!(
            matches!(result, Err(TransportError::Timeout(_))),
            "{CHECK}: a reopened endpoint received {result:?}; the messages of a closed endpoint must be dropped"
        );
        transport
            .send(a, b, b"fresh")
            .unwrap_or_else(|e| panic!("{CHECK}: sending to a reopened endpoint failed: {e}"));
        let message = recv_ok(transport, b, CHECK, "a message to the reopened endpoint");
        assert_eq!(message.payload, b"fresh", "{CHECK}: the reopened endpoint received the wrong message");
    });
}

/// Two senders on two threads: each sender's messages arrive in its order.
pub fn check_concurrent_senders_keep_order(transport: &dyn Transport) {
    const CHECK: &str = "transport/concurrent_senders_keep_order";
    const EACH: u32 = 50;
    with_endpoints(transport, CHECK, |[a, b, to]| {
        std::thread::scope(|s| {
            for from in [a, b] {
                s.spawn(move || {
                    for i in 0..EACH {
                        transport
                            .send(from, to, &i.to_le_bytes())
                            .unwrap_or_else(|e| panic!("{CHECK}: concurrent send {i} from {from} failed: {e}"));
                    }
                });
            }
        });
        let mut next = [0u32; 2];
        for n in 0..2 * EACH {
            let message = recv_ok(transport, to, CHECK, &format!("message {n} of {}", 2 * EACH));
            let sender = [a, b]
                .iter()
                .position(|e| **e == message.from)
                .unwrap_or_else(|| panic!("{CHECK}: a message came from {}, which sent nothing", message.from));
            assert_eq!(
                message.payload,
                next[sender].to_le_bytes(),
                "{CHECK}: messages from {} arrived out of order or duplicated",
                message.from
            );
            next[sender] += 1;
        }
    });
}
