//! The shared-memory transport against the conformance suites (in process,
//! over a Unix socket, and across a process boundary), revocation, sharing,
//! and adversarial control frames and descriptors.

use proptest::prelude::*;
use resc_core::ids::{AccessKey, NodeId, RegionId};
use resc_core::pool::MemoryPool;
use resc_core::testkit;
use resc_core::transport::{RemoteOp, RemoteRegion, Transport, TransportError};
use resc_rdma::shm::control::{self, Request, Response};
use resc_rdma::shm::{ShmMemory, ShmMemoryClient, ShmMemoryServer, ShmTransport};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CAPACITY: u64 = 64 << 20;
/// A bound against hanging, not a performance expectation.
const PATIENCE: Duration = Duration::from_secs(10);

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("resc-shm-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("memory.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An in-process memory node (node 1) and a transport that maps its regions.
fn local_rig() -> (Arc<ShmMemory>, ShmTransport) {
    let memory = Arc::new(ShmMemory::new(NodeId(1), CAPACITY));
    let transport = ShmTransport::new();
    transport.add_local_node(memory.clone());
    (memory, transport)
}

/// A memory node (node 2) served on a Unix socket, a client pool and a
/// transport that attach over it.
struct SocketRig {
    _dir: TempDir,
    server: Arc<ShmMemoryServer>,
    pool: ShmMemoryClient,
    transport: ShmTransport,
}

fn socket_rig() -> SocketRig {
    socket_rig_with(ShmMemory::new(NodeId(2), CAPACITY))
}

fn socket_rig_with(memory: ShmMemory) -> SocketRig {
    let dir = TempDir::new();
    let node = memory.node();
    let server = ShmMemoryServer::bind(dir.socket(), Arc::new(memory)).expect("bind the memory node's socket");
    let pool = ShmMemoryClient::new(node, dir.socket());
    let transport = ShmTransport::new();
    transport.add_remote_node(node, dir.socket());
    SocketRig { _dir: dir, server, pool, transport }
}

#[test]
fn in_process_passes_the_transport_suite() {
    let (memory, transport) = local_rig();
    testkit::transport::transport_suite(memory.as_ref(), &transport);
}

#[test]
fn in_process_passes_the_memory_pool_suite() {
    let (memory, transport) = local_rig();
    testkit::pool::memory_pool_suite(memory.as_ref(), &transport);
}

#[test]
fn over_a_socket_passes_the_transport_suite() {
    let rig = socket_rig();
    testkit::transport::transport_suite(&rig.pool, &rig.transport);
}

#[test]
fn over_a_socket_passes_the_memory_pool_suite() {
    let rig = socket_rig();
    testkit::pool::memory_pool_suite(&rig.pool, &rig.transport);
}

/// Set in the child process that plays the memory node.
const CHILD_SOCKET: &str = "RESC_SHM_TEST_MEMORY_NODE_SOCKET";

/// The memory node's process of `across_processes_*`: serves until its
/// standard input closes. Ignored, and a no-op, unless run as that child.
#[test]
#[ignore = "runs only as the child process of across_processes_the_suites_pass_and_free_revokes"]
fn memory_node_process() {
    let Ok(path) = std::env::var(CHILD_SOCKET) else { return };
    let memory = Arc::new(ShmMemory::new(NodeId(9), CAPACITY));
    let server = ShmMemoryServer::bind(&path, memory).expect("bind in the child");
    // The parent holds the other end of stdin; its close (or death) ends us.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.shutdown();
}

/// Ends the child when the test ends, whichever way.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(path: &Path) {
    for _ in 0..200 {
        if UnixStream::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the memory node's process did not listen at {} in time", path.display());
}

#[test]
fn across_processes_the_suites_pass_and_free_revokes() {
    let dir = TempDir::new();
    let socket = dir.socket();
    let exe = std::env::current_exe().expect("the test binary");
    let child = Command::new(exe)
        .args(["--exact", "memory_node_process", "--ignored", "--test-threads=1"])
        .env(CHILD_SOCKET, &socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the memory node's process");
    let _child = ChildGuard(child);
    wait_for_socket(&socket);

    let pool = ShmMemoryClient::new(NodeId(9), &socket);
    let transport = ShmTransport::new();
    transport.add_remote_node(NodeId(9), &socket);
    testkit::transport::transport_suite(&pool, &transport);
    testkit::pool::memory_pool_suite(&pool, &transport);

    // Memory that another process controls, mapped here, revoked from there.
    let region = pool.allocate(1 << 20).expect("allocate");
    transport.write(&region, 4096, b"from the compute process").expect("write");
    let other = ShmTransport::new();
    other.add_remote_node(NodeId(9), &socket);
    let mut back = [0u8; 24];
    other.read(&region, 4096, &mut back).expect("read through a second attachment");
    assert_eq!(&back, b"from the compute process");
    pool.free(&region).expect("free");
    for t in [&transport, &other] {
        let read = t.read(&region, 0, &mut back);
        assert!(matches!(read, Err(TransportError::UnknownRegion { .. })), "{read:?}");
    }
}

#[test]
fn a_forged_key_at_attach_is_denied_and_maps_nothing() {
    let (memory, transport) = local_rig();
    let region = memory.allocate(4096).expect("allocate");
    let forged = RemoteRegion { key: AccessKey(region.key.0 ^ 0x8000_0000_0000_0001), ..region };
    for _ in 0..3 {
        let read = transport.read(&forged, 0, &mut [0u8; 8]);
        assert!(matches!(read, Err(TransportError::AccessDenied { .. })), "{read:?}");
        let lent = transport.with_bytes(&forged, 0, 8, |_| ());
        assert!(matches!(lent, Err(TransportError::AccessDenied { .. })), "{lent:?}");
    }
    assert_eq!(transport.attached_regions(), 0, "a forged key got a mapping");
    assert!(matches!(memory.attach(&forged), Err(TransportError::AccessDenied { .. })));
    // A forged key to a region that is already mapped is still denied.
    transport.write(&region, 0, b"secret").expect("write with the right key");
    let read = transport.read(&forged, 0, &mut [0u8; 6]);
    assert!(matches!(read, Err(TransportError::AccessDenied { .. })), "{read:?}");

    let rig = socket_rig();
    let region = rig.pool.allocate(4096).expect("allocate");
    let forged = RemoteRegion { key: AccessKey(region.key.0 ^ 1), ..region };
    let attach = rig.pool.attach(&forged);
    assert!(matches!(attach, Err(TransportError::AccessDenied { .. })), "{attach:?}");
    let read = rig.transport.read(&forged, 0, &mut [0u8; 8]);
    assert!(matches!(read, Err(TransportError::AccessDenied { .. })), "{read:?}");
    assert_eq!(rig.transport.attached_regions(), 0, "a forged key got a mapping over the socket");
    // An unknown region is that, whatever the key.
    let unknown = RemoteRegion { region: RegionId(region.region.0 ^ 0xffff), ..forged };
    assert!(matches!(rig.pool.attach(&unknown), Err(TransportError::UnknownRegion { .. })));
}

fn assert_gone<T: std::fmt::Debug>(result: &Result<T, TransportError>, what: &str) {
    assert!(matches!(result, Err(TransportError::UnknownRegion { .. })), "{what} after free: {result:?}");
}

#[test]
fn after_free_every_operation_is_unknown_region_and_nothing_crashes() {
    for rig in [Rigs::local(), Rigs::socket()] {
        let region = rig.pool().allocate(3 * 4096).expect("allocate");
        let second = ShmTransport::new();
        rig.connect(&second);
        rig.transport().write(&region, 0, &[7u8; 3 * 4096]).expect("write");
        second.read(&region, 0, &mut [0u8; 16]).expect("a second transport maps it too");
        assert_eq!(rig.transport().attached_regions(), 1);
        rig.pool().free(&region).expect("free");
        for t in [rig.transport(), &second] {
            let mut buf = [0xEEu8; 16];
            assert_gone(&t.read(&region, 0, &mut buf), "read");
            assert_eq!(buf, [0xEE; 16], "a read after free wrote into the buffer");
            assert_gone(&t.write(&region, 0, b"late"), "write");
            assert_gone(&t.with_bytes(&region, 0, 16, |b| b.to_vec()), "with_bytes");
            let mut ops = [RemoteOp::Write { region, offset: 0, data: b"x" }];
            let batch = t.execute(&mut ops).expect_err("a batch after free");
            assert_eq!(batch.index, 0);
            assert!(matches!(batch.error, TransportError::UnknownRegion { .. }));
            assert_eq!(t.attached_regions(), 0, "the revoked mapping was kept");
        }
        // A new region does not see the old one's bytes.
        let fresh = rig.pool().allocate(3 * 4096).expect("allocate again");
        let all = rig.transport().with_bytes(&fresh, 0, 3 * 4096, |b| b.iter().all(|&x| x == 0)).expect("lend");
        assert!(all, "a new region shows a freed region's bytes");
        rig.pool().free(&fresh).expect("free");
    }
}

/// The two assemblies, for tests that run on both.
enum Rigs {
    Local(Arc<ShmMemory>, ShmTransport),
    Socket(SocketRig),
}

impl Rigs {
    fn local() -> Rigs {
        let (memory, transport) = local_rig();
        Rigs::Local(memory, transport)
    }

    fn socket() -> Rigs {
        Rigs::Socket(socket_rig())
    }

    fn pool(&self) -> &dyn MemoryPool {
        match self {
            Rigs::Local(memory, _) => memory.as_ref(),
            Rigs::Socket(rig) => &rig.pool,
        }
    }

    fn transport(&self) -> &ShmTransport {
        match self {
            Rigs::Local(_, transport) => transport,
            Rigs::Socket(rig) => &rig.transport,
        }
    }

    /// Makes the memory node reachable by another transport.
    fn connect(&self, transport: &ShmTransport) {
        match self {
            Rigs::Local(memory, _) => transport.add_local_node(memory.clone()),
            Rigs::Socket(rig) => transport.add_remote_node(rig.server.node(), rig.server.path()),
        }
    }
}

#[test]
fn operations_racing_a_free_either_complete_before_it_or_fail_after_it() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 20;
    let (memory, transport) = local_rig();
    for _ in 0..ROUNDS {
        let region = memory.allocate(64 * 1024).expect("allocate");
        transport.preattach(&region).expect("preattach");
        let freed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (transport, freed) = (&transport, &freed);
                s.spawn(move || {
                    let mut buf = vec![0u8; 4096];
                    for i in 0..10_000u64 {
                        let was_freed = freed.load(Ordering::SeqCst);
                        let offset = (i * 4096 + t as u64 * 97) % (60 * 1024);
                        let result = if i % 2 == 0 {
                            transport.write(&region, offset, &buf)
                        } else {
                            transport.read(&region, offset, &mut buf)
                        };
                        match result {
                            Ok(()) => assert!(!was_freed, "an operation started after free returned succeeded"),
                            Err(TransportError::UnknownRegion { .. }) => return,
                            Err(e) => panic!("an operation racing free failed with {e}"),
                        }
                    }
                });
            }
            s.spawn(|| {
                std::thread::yield_now();
                memory.free(&region).expect("free");
                freed.store(true, Ordering::SeqCst);
            });
        });
        assert_gone(&transport.read(&region, 0, &mut [0u8; 1]), "read");
    }
    assert_eq!(memory.allocated_bytes(), 0);
    assert_eq!(memory.live_regions(), 0);
}

#[test]
fn free_waits_for_a_lent_slice_to_be_returned() {
    let memory = Arc::new(ShmMemory::new(NodeId(3), CAPACITY).with_grace(Duration::from_secs(60)));
    let transport = ShmTransport::new();
    transport.add_local_node(memory.clone());
    let region = memory.allocate(4096).expect("allocate");
    transport.write(&region, 0, b"lent").expect("write");
    let returned = AtomicBool::new(false);
    let (lent_tx, lent_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::scope(|s| {
        s.spawn(|| {
            transport
                .with_bytes(&region, 0, 4, |bytes| {
                    lent_tx.send(()).expect("signal");
                    // Give `free` every chance to run ahead if it would.
                    for _ in 0..20 {
                        std::thread::yield_now();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    assert_eq!(bytes, b"lent", "the bytes changed while lent");
                    returned.store(true, Ordering::SeqCst);
                })
                .expect("lend");
        });
        lent_rx.recv_timeout(PATIENCE).expect("the slice was lent");
        memory.free(&region).expect("free");
        assert!(returned.load(Ordering::SeqCst), "free returned while the region's bytes were still lent");
    });
    assert_gone(&transport.read(&region, 0, &mut [0u8; 4]), "read");
}

#[test]
fn past_the_grace_period_free_proceeds_and_a_straggler_sees_zeros_not_a_crash() {
    let memory = Arc::new(ShmMemory::new(NodeId(4), CAPACITY).with_grace(Duration::from_millis(20)));
    let transport = ShmTransport::new();
    transport.add_local_node(memory.clone());
    let region = memory.allocate(8192).expect("allocate");
    transport.write(&region, 0, &[0xAB; 8192]).expect("write");
    let (lent_tx, lent_rx) = crossbeam_channel::bounded::<()>(1);
    let (freed_tx, freed_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::scope(|s| {
        let straggler = s.spawn(|| {
            transport
                .with_bytes(&region, 0, 8192, |bytes| {
                    lent_tx.send(()).expect("signal");
                    freed_rx.recv_timeout(PATIENCE).expect("free returned");
                    bytes.iter().all(|&b| b == 0)
                })
                .expect("lend")
        });
        lent_rx.recv_timeout(PATIENCE).expect("the slice was lent");
        memory.free(&region).expect("free gives up waiting after the grace period");
        freed_tx.send(()).expect("signal");
        assert!(straggler.join().expect("the straggler"), "the freed region's bytes were not returned to the system");
    });
    assert_gone(&transport.read(&region, 0, &mut [0u8; 4]), "read");
    assert_eq!(memory.allocated_bytes(), 0);
}

#[test]
fn two_transports_see_the_same_memory() {
    for rig in [Rigs::local(), Rigs::socket()] {
        let region = rig.pool().allocate(1 << 20).expect("allocate");
        let other = ShmTransport::new();
        rig.connect(&other);
        let message = b"written through one mapping, read through another";
        rig.transport().write(&region, 12345, message).expect("write through the first");
        let seen = other.with_bytes(&region, 12345, message.len(), |b| b.to_vec()).expect("lend from the second");
        assert_eq!(seen, message);
        other.write(&region, 0, b"and back").expect("write through the second");
        let mut back = [0u8; 8];
        rig.transport().read(&region, 0, &mut back).expect("read through the first");
        assert_eq!(&back, b"and back");
        assert_eq!(rig.transport().attached_regions(), 1);
        assert_eq!(other.attached_regions(), 1);
        rig.pool().free(&region).expect("free");
    }
}

#[test]
fn an_allocation_carries_its_descriptor_and_a_transport_can_adopt_it() {
    let rig = socket_rig();
    let descriptor = rig.pool.allocate_with_descriptor(4096).expect("allocate with a descriptor");
    let region = descriptor.remote();
    assert_eq!(region.len, 4096);
    rig.transport.adopt(&descriptor).expect("adopt");
    drop(descriptor);
    assert_eq!(rig.transport.attached_regions(), 1);
    rig.transport.write(&region, 4090, b"edge!!").expect("write at the end");
    let past = rig.transport.write(&region, 4091, b"edge!!");
    assert!(matches!(past, Err(TransportError::OutOfBounds { region_len: 4096, .. })), "{past:?}");
    rig.pool.free(&region).expect("free");
    assert_gone(&rig.transport.read(&region, 0, &mut [0u8; 1]), "read");
}

#[test]
fn with_bytes_checks_bounds_and_lends_without_copying() {
    let (memory, transport) = local_rig();
    let region = memory.allocate(10_000).expect("allocate");
    transport.write(&region, 9990, b"0123456789").expect("write");
    let first = transport.with_bytes(&region, 9990, 10, |b| (b.to_vec(), b.as_ptr() as usize)).expect("lend");
    assert_eq!(first.0, b"0123456789");
    let again = transport.with_bytes(&region, 9990, 10, |b| b.as_ptr() as usize).expect("lend again");
    assert_eq!(first.1, again, "the same mapped bytes are lent each time, not a copy");
    assert!(transport.with_bytes(&region, 10_000, 0, |b| b.is_empty()).expect("an empty range at the end"));
    for (offset, len) in [(9991, 10), (10_001, 0), (u64::MAX, 1)] {
        let out = transport.with_bytes(&region, offset, len, |_| ());
        assert!(matches!(out, Err(TransportError::OutOfBounds { .. })), "{offset}+{len}: {out:?}");
    }
    // The same through the trait, for code that holds a `dyn Transport`.
    let dynamic: &dyn Transport = &transport;
    let mut seen = Vec::new();
    assert_eq!(dynamic.lend(&region, 9995, 5, &mut |b| seen.extend_from_slice(b)), Ok(true));
    assert_eq!(seen, b"56789");
    let denied = dynamic.lend(&RemoteRegion { key: AccessKey(region.key.0 ^ 1), ..region }, 0, 1, &mut |_| {});
    assert!(matches!(denied, Err(TransportError::AccessDenied { .. })), "{denied:?}");
    // Reading from inside a lent slice is fine.
    let nested = transport.with_bytes(&region, 0, 8, |outer| {
        let mut inner = [0xEEu8; 8];
        transport.read(&region, 0, &mut inner).map(|()| inner == *outer)
    });
    assert_eq!(nested, Ok(Ok(true)));
}

#[test]
fn an_unknown_node_is_unknown_node() {
    let transport = ShmTransport::new();
    let region = RemoteRegion { node: NodeId(77), region: RegionId(1), key: AccessKey(1), len: 8 };
    assert_eq!(transport.read(&region, 0, &mut [0u8; 1]), Err(TransportError::UnknownNode(NodeId(77))));
}

#[test]
fn a_server_that_is_gone_is_a_disconnection() {
    let rig = socket_rig();
    rig.server.shutdown();
    let region = RemoteRegion { node: NodeId(2), region: RegionId(1), key: AccessKey(1), len: 8 };
    let read = rig.transport.read(&region, 0, &mut [0u8; 1]);
    assert!(matches!(read, Err(TransportError::Disconnected(_))), "{read:?}");
}

/// One frame to the server and its answer, on a stream of the caller's.
fn exchange(stream: &mut UnixStream, frame: &[u8]) -> Option<Response> {
    stream.write_all(frame).ok()?;
    let mut prefix = [0u8; control::PREFIX];
    stream.read_exact(&mut prefix).ok()?;
    let len = control::body_len(prefix).expect("the server sends sound lengths");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("the whole body");
    Some(control::decode_response(&body).expect("the server sends decodable responses"))
}

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

fn stats_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    control::encode_request(&mut frame, &Request::Stats);
    frame
}

#[test]
fn malformed_control_frames_get_an_error_and_the_server_goes_on() {
    let rig = socket_rig();
    let path = rig.server.path().to_path_buf();

    // A bad length: answered, then the connection closes (no frame boundary).
    for prefix in [[0u8, 0, 0, 0], [255, 255, 255, 255], [0, 16, 0, 0]] {
        let mut stream = connect(&path);
        let response = exchange(&mut stream, &prefix);
        assert!(matches!(response, Some(Response::Malformed(_))), "{prefix:?}: {response:?}");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "the server went on reading after a bad length");
    }

    // A sound length with a bad body: answered, and the connection goes on.
    let mut stream = connect(&path);
    for body in [&[0x99u8][..], &[0x01, 1, 2][..], &[0x04, 0][..], &[0x81, 0, 0, 0, 0, 0, 0, 0, 0][..]] {
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body);
        let response = exchange(&mut stream, &frame);
        assert!(matches!(response, Some(Response::Malformed(_))), "{body:?}: {response:?}");
    }
    let stats = exchange(&mut stream, &stats_frame());
    assert!(matches!(stats, Some(Response::Stats { capacity: CAPACITY, .. })), "{stats:?}");

    // Random bodies of sound lengths, on one connection (bounded, seeded).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let len = 1 + (next() % 40) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut frame = (len as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        assert!(exchange(&mut stream, &frame).is_some(), "no answer to {body:?}");
    }

    // A frame cut short, then the peer leaves: nothing to answer, no harm.
    {
        let mut stream = connect(&path);
        stream.write_all(&[17, 0, 0, 0, 0x02, 1, 2]).expect("send");
        stream.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }

    // The server still serves well-formed requests.
    let region = rig.pool.allocate(4096).expect("the server survived");
    rig.transport.write(&region, 0, b"alive").expect("write");
    rig.pool.free(&region).expect("free");
    assert_eq!(rig.pool.allocated_bytes(), 0);
}

/// A fake memory node that answers every attach with `len` and a
/// descriptor of the test's choosing.
fn fake_node(dir: &TempDir, len: u64, file: std::fs::File) -> std::thread::JoinHandle<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    let listener = std::os::unix::net::UnixListener::bind(dir.socket()).expect("bind the fake node");
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut request = [0u8; 4 + 17];
        if stream.read_exact(&mut request).is_err() {
            return;
        }
        let mut frame = Vec::new();
        control::encode_response(&mut frame, &Response::Attached { len });
        let fds = [file.as_raw_fd()];
        let _ = sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &[std::io::IoSlice::new(&frame)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    })
}

#[test]
fn a_descriptor_that_could_fault_is_refused_never_mapped() {
    let region = RemoteRegion { node: NodeId(5), region: RegionId(1), key: AccessKey(1), len: 1 << 20 };
    // An unsealed memfd (its owner could shrink it under the mapping), and a
    // sealed one shorter than the region it claims to be.
    let unsealed = memfd::MemfdOptions::new().create("unsealed").expect("memfd");
    unsealed.as_file().set_len(resc_rdma::shm::HEADER as u64 + (1 << 20)).expect("size");
    let short = memfd::MemfdOptions::new().allow_sealing(true).create("short").expect("memfd");
    short.as_file().set_len(4096).expect("size");
    short.add_seal(memfd::FileSeal::SealShrink).expect("seal");
    for file in [unsealed.into_file(), short.into_file()] {
        let dir = TempDir::new();
        let node = fake_node(&dir, 1 << 20, file);
        let transport = ShmTransport::new();
        transport.add_remote_node(NodeId(5), dir.socket());
        let read = transport.read(&region, (1 << 20) - 8, &mut [0u8; 8]);
        assert!(matches!(read, Err(TransportError::Disconnected(_))), "{read:?}");
        assert_eq!(transport.attached_regions(), 0);
        drop(transport);
        node.join().expect("the fake node");
    }
}

#[test]
fn messages_travel_within_the_transport() {
    use resc_core::ids::{ComputeId, Endpoint, InvocationId};
    let transport = ShmTransport::new();
    let a = Endpoint { invocation: InvocationId(1), component: ComputeId(0), instance: 0 };
    let b = Endpoint { invocation: InvocationId(1), component: ComputeId(1), instance: 0 };
    transport.open_endpoint(&b).expect("open");
    transport.send(&a, &b, b"hello").expect("send");
    let message = transport.recv(&b, PATIENCE).expect("recv");
    assert_eq!((message.from, message.payload), (a.clone(), b"hello".to_vec()));
    assert!(matches!(transport.send(&b, &a, b"x"), Err(TransportError::UnknownEndpoint(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Decoding never panics, and what decodes re-encodes to the same bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..=control::MAX_BODY)) {
        if let Ok(request) = control::decode_request(&body) {
            let mut frame = Vec::new();
            control::encode_request(&mut frame, &request);
            prop_assert_eq!(&frame[control::PREFIX..], &body[..]);
        }
        if let Ok(response) = control::decode_response(&body) {
            let mut frame = Vec::new();
            control::encode_response(&mut frame, &response);
            prop_assert_eq!(&frame[control::PREFIX..], &body[..]);
        }
        let prefix = [body.first().copied().unwrap_or(0), 1, 0, 0];
        let _ = control::body_len(prefix);
    }

    /// Bodies that start with a valid code are mostly near misses: they
    /// exercise the field decoding rather than the code check.
    #[test]
    fn decoding_near_misses_never_panics(
        code in prop::sample::select(vec![0x01u8, 0x02, 0x03, 0x04, 0x81, 0x82, 0x83, 0x84, 0xa0, 0xa4, 0xa5]),
        rest in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut body = vec![code];
        body.extend_from_slice(&rest);
        let _ = control::decode_request(&body);
        let _ = control::decode_response(&body);
    }
}

/// How a second attachment of a region comes about in one process.
#[derive(Debug, Clone, Copy)]
enum SecondAttachment {
    AnotherTransport,
    DetachThenAttachAgain,
}

#[test]
fn a_write_waits_for_a_live_lend_through_any_attachment_in_the_process() {
    use std::sync::mpsc;
    for how in [SecondAttachment::AnotherTransport, SecondAttachment::DetachThenAttachAgain] {
        for rig in [Rigs::local(), Rigs::socket()] {
            let region = rig.pool().allocate(4096).expect("allocate");
            let other = ShmTransport::new();
            rig.connect(&other);
            rig.transport().write(&region, 0, &[1]).expect("write");
            let writer_side = match how {
                SecondAttachment::AnotherTransport => &other,
                SecondAttachment::DetachThenAttachAgain => rig.transport(),
            };
            let written = &AtomicBool::new(false);
            let (lending, lend_started) = mpsc::channel();
            let (writing, write_started) = mpsc::channel();
            std::thread::scope(|scope| {
                let writer = scope.spawn(move || {
                    lend_started.recv_timeout(PATIENCE).expect("the lend starts");
                    if let SecondAttachment::DetachThenAttachAgain = how {
                        // The lend still holds the old attachment.
                        writer_side.detach(&region);
                    }
                    writer_side.preattach(&region).expect("a second attachment");
                    writing.send(()).expect("signal the lender");
                    writer_side.write(&region, 0, &[2]).expect("write through the second attachment");
                    written.store(true, Ordering::SeqCst);
                });
                let seen = rig
                    .transport()
                    .with_bytes(&region, 0, 1, |bytes| {
                        lending.send(()).expect("signal the writer");
                        write_started.recv_timeout(PATIENCE).expect("the writer starts");
                        // Give the writer every chance to run into the lent
                        // bytes: it must wait for this closure to return.
                        for _ in 0..20 {
                            std::thread::yield_now();
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        (written.load(Ordering::SeqCst), std::hint::black_box(bytes)[0])
                    })
                    .expect("lend");
                assert_eq!(seen, (false, 1), "{how:?}: a write went through while a lend was live");
                writer.join().expect("the writer");
            });
            assert!(written.load(Ordering::SeqCst));
            let mut after = [0u8; 1];
            rig.transport().read(&region, 0, &mut after).expect("read");
            assert_eq!(after, [2], "{how:?}");
            rig.pool().free(&region).expect("free");
        }
    }
}

#[test]
fn clients_that_vanish_mid_allocate_do_not_exhaust_the_node() {
    let rig = socket_rig();
    let path = rig.server.path().to_path_buf();
    let memory = rig.server.memory().clone();
    let mut frame = Vec::new();
    control::encode_request(&mut frame, &Request::Allocate { bytes: CAPACITY / 4 });
    for round in 0..16 {
        let mut stream = connect(&path);
        if round % 2 == 0 {
            // Gone before the answer.
            stream.write_all(&frame).expect("send the request");
        } else {
            // Takes the answer, never confirms it.
            let response = exchange(&mut stream, &frame);
            assert!(
                matches!(response, Some(Response::Allocated { .. } | Response::OutOfMemory { .. })),
                "{response:?}"
            );
        }
        drop(stream);
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while memory.live_regions() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(memory.live_regions(), 0, "unconfirmed allocations outlived their connections");
    assert_eq!(memory.allocated_bytes(), 0);
    // A confirmed allocation outlives the connection it was made on.
    let region = {
        let client = ShmMemoryClient::new(rig.server.node(), &path);
        client.allocate(CAPACITY).expect("the whole node is free again")
    };
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(memory.live_regions(), 1, "a confirmed region was freed with its connection");
    }
    rig.pool.free(&region).expect("free");
}

#[test]
fn descriptors_beyond_what_a_frame_carries_are_closed_not_leaked() {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    const ROUNDS: usize = 8;
    let dir = TempDir::new();
    let marker = dir.0.join("marker");
    std::fs::write(&marker, b"descriptor").expect("write the marker");
    let marker = marker.canonicalize().expect("canonical path");
    // Descriptors of this process open on the marker file: the fake node's
    // are closed by the time it ends, so any left are the client's leaks
    // (counting only these keeps tests running alongside out of the count).
    let open_on_marker = || {
        std::fs::read_dir("/proc/self/fd")
            .expect("list /proc/self/fd")
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| *target == marker)
            .count()
    };
    let listener = std::os::unix::net::UnixListener::bind(dir.socket()).expect("bind the fake node");
    let node = std::thread::spawn({
        let marker = marker.clone();
        move || {
            for _ in 0..ROUNDS {
                let Ok((mut stream, _)) = listener.accept() else { return };
                stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
                let mut request = [0u8; 4 + 17];
                if stream.read_exact(&mut request).is_err() {
                    continue;
                }
                let mut frame = Vec::new();
                control::encode_response(&mut frame, &Response::Attached { len: 4096 });
                let file = std::fs::File::open(&marker).expect("open the marker");
                let fds = [file.as_raw_fd(); 8];
                let _ = sendmsg::<UnixAddr>(
                    stream.as_raw_fd(),
                    &[std::io::IoSlice::new(&frame)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                );
                drop(file);
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
        }
    });
    let client = ShmMemoryClient::new(NodeId(6), dir.socket());
    let region = RemoteRegion { node: NodeId(6), region: RegionId(1), key: AccessKey(1), len: 4096 };
    for _ in 0..ROUNDS {
        let attached = client.attach(&region);
        assert!(matches!(attached, Err(TransportError::Disconnected(_))), "{attached:?}");
    }
    drop(client);
    node.join().expect("the fake node");
    assert_eq!(open_on_marker(), 0, "descriptors the kernel installed were leaked");
}
