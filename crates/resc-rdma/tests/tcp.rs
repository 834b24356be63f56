//! The TCP transport against the conformance suites, and adversarial cases.

use resc_core::ids::{AccessKey, NodeId};
use resc_core::inproc::InProcessMemory;
use resc_core::pool::MemoryPool;
use resc_core::testkit;
use resc_core::transport::{RemoteOp, RemoteRegion, Transport, TransportError};
use resc_rdma::tcp::{Directory, TcpMemoryPool, TcpNodeServer, TcpTransport};
use resc_rdma::wire::{self, Op, Status};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

struct Rig {
    memory_server: Arc<TcpNodeServer>,
    pool: TcpMemoryPool,
    transport: TcpTransport,
}

/// A memory node (node 1) on loopback and a compute side whose endpoints
/// live on its own node server (node 2).
fn rig() -> Rig {
    let memory = Arc::new(InProcessMemory::new(NodeId(1), 64 << 20));
    let memory_server = TcpNodeServer::bind("127.0.0.1:0", NodeId(1), Some(memory)).expect("bind memory node");
    let directory = Arc::new(Directory::new());
    directory.add_node(NodeId(1), memory_server.local_addr());
    let compute_server = TcpNodeServer::bind("127.0.0.1:0", NodeId(2), None).expect("bind compute node");
    let transport = TcpTransport::with_local_node(directory.clone(), compute_server);
    let pool = TcpMemoryPool::new(NodeId(1), directory);
    Rig { memory_server, pool, transport }
}

#[test]
fn tcp_passes_the_transport_suite() {
    let rig = rig();
    testkit::transport::transport_suite(&rig.pool, &rig.transport);
}

#[test]
fn tcp_passes_the_memory_pool_suite() {
    let rig = rig();
    testkit::pool::memory_pool_suite(&rig.pool, &rig.transport);
}

#[test]
fn one_connection_per_node_serves_every_region_there() {
    let rig = rig();
    let regions: Vec<RemoteRegion> = (0..4).map(|_| rig.pool.allocate(4096).expect("allocate")).collect();
    for (i, region) in regions.iter().enumerate() {
        rig.transport.write(region, 0, &[i as u8; 16]).expect("write");
    }
    assert_eq!(rig.transport.open_connections(), 1);
}

#[test]
fn a_large_batch_is_pipelined_and_stops_at_the_first_failure() {
    let rig = rig();
    let region = rig.pool.allocate(1 << 20).expect("allocate");
    let forged = RemoteRegion { key: AccessKey(region.key.0 ^ 1), ..region };
    let data = vec![9u8; 4096];
    let mut bufs = vec![vec![0u8; 4096]; 64];
    let mut ops: Vec<RemoteOp<'_>> =
        (0..64).map(|i| RemoteOp::Write { region, offset: i * 4096, data: &data }).collect();
    ops.extend(bufs.iter_mut().enumerate().map(|(i, buf)| RemoteOp::Read { region, offset: i as u64 * 4096, buf }));
    rig.transport.execute(&mut ops).expect("128 operations in one batch");
    drop(ops);
    assert!(bufs.iter().all(|b| b.iter().all(|&x| x == 9)));
    let zeros = vec![0u8; 16];
    let mut ops = vec![
        RemoteOp::Write { region, offset: 0, data: &zeros },
        RemoteOp::Write { region: forged, offset: 0, data: &zeros },
        RemoteOp::Write { region, offset: 4096, data: &zeros },
    ];
    let error = rig.transport.execute(&mut ops).expect_err("the forged key fails");
    assert_eq!(error.index, 1);
    assert!(matches!(error.error, TransportError::AccessDenied { .. }));
    let mut back = [0u8; 16];
    rig.transport.read(&region, 4096, &mut back).expect("read");
    assert_eq!(back, [9u8; 16], "the operation after the failure did not run");
}

/// Raw frames to the memory node, answered by one response.
fn raw(rig: &Rig, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(rig.memory_server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    stream.write_all(bytes).expect("send");
    // End of input: a frame cut short meets EOF instead of waiting.
    stream.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response
}

#[test]
fn malformed_frames_get_an_error_and_the_server_goes_on() {
    let rig = rig();
    for garbage in [
        &[0u8, 0, 0, 0][..],               // an empty body
        &[5, 0, 0, 0, 99, 1, 2, 3, 4][..], // an unknown operation
        &[255, 255, 255, 255][..],         // a body far over the limit
        &[2, 0, 0, 0, 2, 0][..],           // a read head cut short (then EOF)
    ] {
        let response = raw(&rig, garbage);
        if response.len() >= 4 + wire::RESPONSE_HEAD {
            let len = u32::from_le_bytes([response[0], response[1], response[2], response[3]]);
            let head = wire::decode_response_head(len, &response[4..4 + wire::RESPONSE_HEAD]).expect("a response");
            assert_eq!(head.status, Status::Malformed, "{garbage:?}");
        }
    }
    // A read with a tail is inconsistent: refused, never a panic.
    let mut frame = Vec::new();
    wire::encode_request_head(&mut frame, 1, &Op::Stats, 3);
    frame.extend_from_slice(b"abc");
    assert!(!raw(&rig, &frame).is_empty());
    // The server still serves well-formed requests.
    let region = rig.pool.allocate(4096).expect("the server survived");
    rig.transport.write(&region, 0, b"alive").expect("write");
}

#[test]
fn a_server_that_goes_away_mid_operation_is_a_disconnection() {
    let rig = rig();
    let region = rig.pool.allocate(1 << 20).expect("allocate");
    rig.transport.write(&region, 0, b"before").expect("write");
    rig.memory_server.shutdown();
    let mut buf = vec![0u8; 1 << 20];
    let error = rig.transport.read(&region, 0, &mut buf).expect_err("the node is gone");
    assert!(matches!(error, TransportError::Disconnected(_)), "{error}");
}

/// A memory node with room for operations larger than a wire frame.
fn big_rig() -> Rig {
    let memory = Arc::new(InProcessMemory::new(NodeId(1), 512 << 20));
    let memory_server = TcpNodeServer::bind("127.0.0.1:0", NodeId(1), Some(memory)).expect("bind memory node");
    let directory = Arc::new(Directory::new());
    directory.add_node(NodeId(1), memory_server.local_addr());
    Rig {
        pool: TcpMemoryPool::new(NodeId(1), directory.clone()),
        transport: TcpTransport::new(directory),
        memory_server,
    }
}

/// Runs `f` on a thread and fails the test if it does not finish within a
/// generous bound: a liveness check against deadlock, not a speed check.
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what} did not finish: deadlock?"))
}

#[test]
fn a_batch_of_a_large_read_then_a_large_write_does_not_deadlock() {
    let rig = Arc::new(big_rig());
    let region = rig.pool.allocate(64 << 20).expect("allocate");
    let r = rig.clone();
    finishes("read 16 MiB then write 16 MiB in one batch", move || {
        let data = vec![3u8; 16 << 20];
        let mut buf = vec![0u8; 16 << 20];
        let mut ops = [
            RemoteOp::Read { region, offset: 0, buf: &mut buf },
            RemoteOp::Write { region, offset: 32 << 20, data: &data },
        ];
        r.transport.execute(&mut ops).expect("the batch completes");
    });
}

#[test]
fn operations_larger_than_a_frame_are_split() {
    let rig = big_rig();
    let region = rig.pool.allocate(80 << 20).expect("allocate");
    let data: Vec<u8> = (0..(65usize << 20)).map(|i| (i % 251) as u8).collect();
    rig.transport.write(&region, 1, &data).expect("a 65 MiB write");
    let mut back = vec![0u8; data.len()];
    rig.transport.read(&region, 1, &mut back).expect("a 65 MiB read");
    assert!(back == data);
}

#[test]
fn a_stalled_client_holds_no_lock_and_a_cut_write_changes_nothing() {
    let rig = Arc::new(rig());
    let region = rig.pool.allocate(4096).expect("allocate");
    rig.transport.write(&region, 0, b"original").expect("write");
    // A raw client starts a 4096-byte write to the region, sends 10 bytes, and stalls.
    let mut stalled = TcpStream::connect(rig.memory_server.local_addr()).expect("connect");
    let mut frame = Vec::new();
    wire::encode_request_head(&mut frame, 1, &Op::Write { region: region.region, key: region.key, offset: 0 }, 4096);
    frame.extend_from_slice(&[0xEE; 10]);
    stalled.write_all(&frame).expect("send part of a write");
    let r = rig.clone();
    let back = finishes("operations next to a stalled client", move || {
        let other = r.pool.allocate(4096).expect("allocate beside the stall");
        r.transport.write(&other, 0, b"fine").expect("write beside the stall");
        let mut back = [0u8; 8];
        r.transport.read(&region, 0, &mut back).expect("read the stalled region");
        r.pool.free(&other).expect("free beside the stall");
        back
    });
    assert_eq!(&back, b"original", "nothing of the stalled write was applied");
    drop(stalled);
    let mut after = [0u8; 8];
    rig.transport.read(&region, 0, &mut after).expect("read after the client left");
    assert_eq!(&after, b"original", "a write cut short by a disconnect changes nothing");
    rig.pool.free(&region).expect("free");
}
