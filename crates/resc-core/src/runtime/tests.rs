//! Tests of the runtime API: channels on memory components (remote, through a
//! fabric and a local cache, and local, in the sandbox) and on compute
//! components (messages).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::graph::{ComponentKind, ResourceGraph};
use crate::ids::{AccessKey, ComputeId, Endpoint, InvocationId, MemoryId, RegionId};
use crate::inproc::{InProcessFabric, InProcessMemory};
use crate::memory::{CacheConfig, ProvisionError, Provisioner};
use crate::pool::MemoryPool;
use crate::resources::{KIB, MIB};
use crate::size_class::SizeClasses;
use crate::transport::{RemoteRegion, Transport, TransportError};
use parking_lot::Mutex;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// `m`: 1 MiB physical components; `n`: a 3 MiB initial size (rounded up to
/// a 4 MiB class) and 1 MiB increments. `d` is connected to nothing.
const TEMPLATE: &str = r#"{
  "app": "rt",
  "budget_mib": 64,
  "compute": [
    { "name": "a", "code": "t.a" },
    { "name": "b", "code": "t.b" },
    { "name": "c", "code": "t.c" },
    { "name": "d", "code": "t.d", "parallelism": 2 }
  ],
  "memory": [
    { "name": "m", "initial_mib": 1, "increment_mib": 1 },
    { "name": "n", "initial_mib": 3, "increment_mib": 1 }
  ],
  "edges": [
    { "kind": "access", "from": "a", "to": "m" },
    { "kind": "access", "from": "a", "to": "n" },
    { "kind": "access", "from": "b", "to": "m" },
    { "kind": "access", "from": "c", "to": "n" },
    { "kind": "message", "from": "a", "to": "b" },
    { "kind": "message", "from": "c", "to": "a" }
  ]
}"#;

const M: MemoryId = MemoryId(0);
const N: MemoryId = MemoryId(1);

/// What the test provisioner was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Provision { component: MemoryId, requested: u64, got: u64 },
    Refused { component: MemoryId, requested: u64 },
    Reclaim { component: MemoryId, region: RegionId },
    Len { component: MemoryId, len: u64 },
}

/// Allocates from an in-process memory node, rounding up to size classes,
/// within a cap on the sum of live regions; records every call.
struct TestProvisioner {
    memory: Arc<InProcessMemory>,
    classes: SizeClasses,
    cap: u64,
    live: Mutex<Vec<RemoteRegion>>,
    events: Mutex<Vec<Event>>,
}

impl TestProvisioner {
    fn held(&self) -> u64 {
        self.live.lock().iter().map(|r| r.len).sum()
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// Provision, refusal and reclaim events (without length reports).
    fn allocations(&self) -> Vec<Event> {
        self.events().into_iter().filter(|e| !matches!(e, Event::Len { .. })).collect()
    }

    fn last_len(&self, component: MemoryId) -> Option<u64> {
        self.events().iter().rev().find_map(|e| match e {
            Event::Len { component: c, len } if *c == component => Some(*len),
            _ => None,
        })
    }

    fn clear_events(&self) {
        self.events.lock().clear();
    }
}

impl Provisioner for TestProvisioner {
    fn provision(&self, component: MemoryId, bytes: u64) -> Result<RemoteRegion, ProvisionError> {
        let size = self.classes.round_up(bytes).max(bytes);
        let mut live = self.live.lock();
        let held: u64 = live.iter().map(|r| r.len).sum();
        if held + size > self.cap {
            self.events.lock().push(Event::Refused { component, requested: size });
            return Err(ProvisionError::BudgetExceeded { requested: size, held, cap: self.cap });
        }
        let region = self.memory.allocate(size)?;
        live.push(region);
        self.events.lock().push(Event::Provision { component, requested: bytes, got: size });
        Ok(region)
    }

    fn reclaim(&self, component: MemoryId, region: &RemoteRegion) {
        let mut live = self.live.lock();
        let before = live.len();
        live.retain(|r| r.region != region.region);
        assert_eq!(live.len() + 1, before, "reclaim of {} which is not live", region.region);
        self.memory.free(region).unwrap();
        self.events.lock().push(Event::Reclaim { component, region: region.region });
    }

    fn observe_len(&self, component: MemoryId, len: u64) {
        self.events.lock().push(Event::Len { component, len });
    }
}

/// Remote bindings over an in-process memory node, with everything a test inspects.
struct Rig {
    memory: Arc<InProcessMemory>,
    fabric: Arc<InProcessFabric>,
    provisioner: Arc<TestProvisioner>,
    bindings: Arc<Bindings>,
}

/// A cache of `lines` lines of 256 bytes.
fn tiny_cache(lines: u64) -> CacheConfig {
    CacheConfig::new(lines * 256, 256)
}

fn graph() -> Arc<ResourceGraph> {
    Arc::new(crate::template::parse(TEMPLATE).unwrap())
}

fn rig(cap: u64, cache: CacheConfig) -> Rig {
    rig_over(cap, cache, |fabric| fabric)
}

/// A rig whose compute side reaches memory through a transport that copies
/// (as TCP and RDMA do) rather than one that maps it: read-ahead is on.
fn copying_rig(cap: u64, cache: CacheConfig) -> Rig {
    rig_over(cap, cache, |fabric| Arc::new(crate::testkit::faults::FaultyTransport::new(fabric)))
}

fn rig_over(cap: u64, cache: CacheConfig, transport: impl FnOnce(Arc<dyn Transport>) -> Arc<dyn Transport>) -> Rig {
    let memory = Arc::new(InProcessMemory::new(crate::ids::NodeId(1), 64 * MIB));
    let fabric = Arc::new(InProcessFabric::new());
    fabric.attach(memory.clone());
    let classes = SizeClasses::new([64 * KIB, 256 * KIB, MIB, 2 * MIB, 4 * MIB], MIB).unwrap();
    let provisioner = Arc::new(TestProvisioner {
        memory: memory.clone(),
        classes,
        cap,
        live: Mutex::new(Vec::new()),
        events: Mutex::new(Vec::new()),
    });
    let bindings = Bindings::remote(graph(), InvocationId(7), transport(fabric.clone()), provisioner.clone(), cache);
    Rig { memory, fabric, provisioner, bindings }
}

fn local() -> Arc<Bindings> {
    Bindings::local(graph(), InvocationId(8))
}

fn ctx(bindings: &Arc<Bindings>, name: &str) -> Context {
    let id = (0..bindings.graph().compute_components().len() as u32)
        .map(ComputeId)
        .find(|&c| bindings.graph().compute(c).name == name)
        .unwrap();
    Context::new(bindings.clone(), id, 0, Vec::new())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u64 * 131 + u64::from(seed) * 17) % 251) as u8 + 1).collect()
}

fn read(ch: &mut Channel, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    ch.read(addr, &mut buf).unwrap();
    buf
}

impl Rig {
    /// The physical components of a memory component, in address order.
    fn regions(&self, id: MemoryId) -> Vec<RemoteRegion> {
        match self.bindings.existing_memory(id) {
            Some(MemoryHandle::Remote(vm)) => vm.address_map().regions().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Reads `[addr, addr + len)` of a memory component straight from its
    /// physical components, bypassing every cache.
    fn in_memory(&self, id: MemoryId, addr: u64, len: usize) -> Vec<u8> {
        let handle = self.bindings.existing_memory(id).unwrap();
        let MemoryHandle::Remote(vm) = handle else { panic!("not remote") };
        let map = vm.address_map();
        let mut buf = vec![0u8; len];
        for piece in map.split(addr, len).unwrap() {
            self.fabric.read(&piece.region, piece.offset, &mut buf[piece.buf_range()]).unwrap();
        }
        buf
    }
}

#[test]
fn reads_and_writes_cross_physical_components() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();

    // 3000 bytes straddling the first boundary.
    let small = pattern(3000, 1);
    m.write(MIB - 1000, &small).unwrap();
    assert_eq!(rig.regions(M).len(), 2);
    assert_eq!(m.len(), MIB + 2000);
    assert_eq!(read(&mut m, MIB - 1000, 3000), small);
    // Split: the first 1000 bytes at the end of region 0, the rest at the start of region 1.
    let regions = rig.regions(M);
    let mut tail = vec![0u8; 1000];
    rig.fabric.read(&regions[0], MIB - 1000, &mut tail).unwrap();
    assert_eq!(tail, small[..1000]);
    let mut head = vec![0u8; 2000];
    rig.fabric.read(&regions[1], 0, &mut head).unwrap();
    assert_eq!(head, small[1000..]);

    // 2.5 MiB over three components; small cached reads across each boundary.
    let big = pattern((5 * MIB / 2) as usize, 2);
    m.write(100, &big).unwrap();
    assert_eq!(rig.regions(M).len(), 3);
    assert!(read(&mut m, 100, big.len()) == big);
    for boundary in [MIB, 2 * MIB] {
        let at = boundary - 7;
        let start = (at - 100) as usize;
        assert_eq!(read(&mut m, at, 20), big[start..start + 20]);
        let pending = m.read_async(at, 300).unwrap();
        assert_eq!(m.sync(pending).unwrap(), big[start..start + 300]);
    }
    assert!(rig.in_memory(M, 100, big.len()) == big);
}

#[test]
fn growth_provisions_initial_then_increments() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut n = a.channel("n").unwrap();
    assert!(rig.provisioner.events().is_empty(), "opening a channel provisions nothing");
    assert_eq!(n.len(), 0);

    n.write(10, b"first").unwrap();
    assert_eq!(
        rig.provisioner.allocations(),
        [Event::Provision { component: N, requested: 3 * MIB, got: 4 * MIB }],
        "the first write provisions the initial size, rounded up to a class"
    );
    assert_eq!(rig.provisioner.last_len(N), Some(15));
    // Within capacity: no growth.
    n.write(4 * MIB - 5, b"12345").unwrap();
    assert_eq!(rig.provisioner.allocations().len(), 1);
    assert_eq!(n.len(), 4 * MIB);
    // Past capacity: increments, as many as needed.
    n.write(5 * MIB + 10, b"far").unwrap();
    assert_eq!(
        rig.provisioner.allocations()[1..],
        [
            Event::Provision { component: N, requested: MIB, got: MIB },
            Event::Provision { component: N, requested: MIB, got: MIB }
        ]
    );
    assert_eq!(rig.regions(N).iter().map(|r| r.len).collect::<Vec<_>>(), [4 * MIB, MIB, MIB]);
    assert_eq!(n.len(), 5 * MIB + 13);
    assert_eq!(rig.provisioner.last_len(N), Some(5 * MIB + 13));
    assert_eq!(read(&mut n, 10, 5), b"first");
    assert_eq!(read(&mut n, 4 * MIB - 5, 5), b"12345");
    assert_eq!(read(&mut n, 5 * MIB + 10, 3), b"far");
    // The gap was never written.
    assert!(read(&mut n, 4 * MIB, MIB as usize).iter().all(|&b| b == 0));
    assert_eq!(rig.memory.allocated_bytes(), 6 * MIB);
}

#[test]
fn over_budget_keeps_data_and_applies_nothing() {
    let rig = rig(4 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    let data = pattern((5 * MIB / 2) as usize, 3);
    m.write(0, &data).unwrap();
    assert_eq!(rig.provisioner.held(), 3 * MIB);
    rig.provisioner.clear_events();

    // Needs two more components; the cap allows one: nothing may remain of the attempt.
    let attempt = vec![0xAB; (MIB + MIB / 2) as usize];
    let err = m.write(3 * MIB - MIB / 10, &attempt).unwrap_err();
    let wanted = 3 * MIB - MIB / 10 + attempt.len() as u64;
    assert_eq!(
        err,
        ChannelError::BudgetExceeded {
            component: "m".into(),
            wanted,
            source: ProvisionError::BudgetExceeded { requested: MIB, held: 4 * MIB, cap: 4 * MIB },
        }
    );
    let fourth = match rig.provisioner.allocations().as_slice() {
        [Event::Provision { .. }, Event::Refused { .. }, Event::Reclaim { region, .. }] => *region,
        other => panic!("expected provision, refusal, reclaim of the provisioned one; got {other:?}"),
    };
    assert!(rig.regions(M).iter().all(|r| r.region != fourth));
    assert_eq!(rig.provisioner.held(), 3 * MIB);
    assert_eq!(m.len(), data.len() as u64, "a failed write changed the length");
    assert!(read(&mut m, 0, data.len()) == data, "a failed write changed data written before");
    // Not even the part within existing capacity was written.
    assert!(rig.in_memory(M, data.len() as u64, (MIB / 2) as usize).iter().all(|&b| b == 0));

    // Buffered writes and resizes are refused the same way, up front.
    assert!(matches!(m.write_async(5 * MIB, b"x"), Err(ChannelError::BudgetExceeded { .. })));
    assert!(matches!(m.resize(5 * MIB), Err(ChannelError::BudgetExceeded { .. })));
    m.flush().unwrap();
    assert_eq!(m.len(), data.len() as u64);
    assert!(rig.in_memory(M, 0, data.len()) == data);
    assert_eq!(rig.provisioner.held(), 3 * MIB);

    // The budget freed by the rollback is usable.
    m.write(3 * MIB + 10, b"fits").unwrap();
    assert_eq!(read(&mut m, 3 * MIB + 10, 4), b"fits");
    assert_eq!(rig.provisioner.held(), 4 * MIB);
}

#[test]
fn aggregated_components_share_the_budget_cap() {
    let graph = crate::template::parse(
        r#"{
          "app": "small", "budget_mib": 2,
          "compute": [{ "name": "a", "code": "t.a" }],
          "memory": [
            { "name": "m", "initial_mib": 1, "increment_mib": 1 },
            { "name": "n", "initial_mib": 1, "increment_mib": 1 }
          ],
          "edges": [
            { "kind": "access", "from": "a", "to": "m" },
            { "kind": "access", "from": "a", "to": "n" }
          ]
        }"#,
    )
    .unwrap();
    let bindings = Bindings::local(Arc::new(graph), InvocationId(9));
    let mut a = ctx(&bindings, "a");
    let (mut m, mut n) = (a.channel("m").unwrap(), a.channel("n").unwrap());
    let data = pattern((3 * MIB / 2) as usize, 9);
    m.write(0, &data).unwrap();

    let err = m.write(2 * MIB - 10, &[1u8; 20]).unwrap_err();
    assert_eq!(
        err,
        ChannelError::BudgetExceeded {
            component: "m".into(),
            wanted: 2 * MIB + 10,
            source: ProvisionError::BudgetExceeded { requested: MIB / 2 + 10, held: 3 * MIB / 2, cap: 2 * MIB },
        }
    );
    assert_eq!(m.len(), 3 * MIB / 2, "a refused write changed the length");
    assert!(read(&mut m, 0, data.len()) == data, "a refused write changed the data");
    // Far past the cap: an error, not an attempt to allocate.
    assert!(matches!(m.write(1 << 50, b"x"), Err(ChannelError::BudgetExceeded { .. })));
    assert!(matches!(m.resize(1 << 50), Err(ChannelError::BudgetExceeded { .. })));
    // The cap is shared: `n` gets what `m` leaves.
    assert!(matches!(n.write(0, &[2u8; (MIB / 2 + 1) as usize]), Err(ChannelError::BudgetExceeded { .. })));
    n.write(0, &[2u8; (MIB / 2) as usize]).unwrap();
    m.resize(MIB).unwrap();
    n.write(MIB / 2, &[3u8; (MIB / 2) as usize]).unwrap();
    m.release().unwrap();
    n.write(MIB, &[4u8; MIB as usize]).unwrap();
    assert_eq!(n.len(), 2 * MIB);
}

#[test]
fn reads_past_the_end_are_out_of_range() {
    let rig = rig(16 * MIB, tiny_cache(8));
    for bindings in [rig.bindings.clone(), local()] {
        let mut a = ctx(&bindings, "a");
        let mut m = a.channel("m").unwrap();
        assert_eq!(
            m.read(0, &mut [0u8; 1]),
            Err(ChannelError::OutOfRange { component: "m".into(), addr: 0, len: 1, size: 0 })
        );
        m.write(0, &[1u8; 100]).unwrap();
        assert_eq!(
            m.read(50, &mut [0u8; 51]),
            Err(ChannelError::OutOfRange { component: "m".into(), addr: 50, len: 51, size: 100 })
        );
        assert!(matches!(m.read(u64::MAX, &mut [0u8; 2]), Err(ChannelError::OutOfRange { .. })));
        assert!(matches!(m.read(101, &mut []), Err(ChannelError::OutOfRange { .. })));
        assert!(matches!(m.read_async(99, 2), Err(ChannelError::OutOfRange { .. })));
        m.read(100, &mut []).unwrap();
        assert_eq!(read(&mut m, 50, 50), [1u8; 50]);
        assert!(matches!(m.write(u64::MAX, &[1, 2]), Err(ChannelError::OutOfRange { .. })));
    }
}

#[test]
fn buffered_writes_reach_memory_on_sync_and_are_visible_before() {
    // 64 lines of 256 bytes: reads of 4 KiB or more bypass the cache.
    let rig = rig(16 * MIB, tiny_cache(64));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &[0u8; 8192]).unwrap();

    let data = pattern(100, 4);
    let pending = m.write_async(1000, &data).unwrap();
    assert_eq!(rig.in_memory(M, 1000, 100), [0u8; 100], "a buffered write reached memory before sync");
    assert_eq!(read(&mut m, 1000, 100), data, "a buffered write is not visible to its own channel");
    let bypasses = a.cache_stats().bypasses;
    let whole = read(&mut m, 0, 8192);
    assert_eq!(a.cache_stats().bypasses, bypasses + 1, "an 8 KiB read should bypass the cache");
    assert_eq!(whole[1000..1100], data, "a read that bypasses the cache misses a buffered write");
    assert!(whole[..1000].iter().chain(&whole[1100..]).all(|&b| b == 0));
    let pending_read = m.read_async(0, 8192).unwrap();
    assert_eq!(m.sync(pending_read).unwrap()[1000..1100], data);
    assert_eq!(rig.in_memory(M, 1000, 100), [0u8; 100], "reads wrote back a buffered write");

    m.sync(pending).unwrap();
    assert_eq!(rig.in_memory(M, 1000, 100), data, "sync did not write the buffered write back");

    // A buffered write that grows the component: the length changes at once,
    // the bytes reach memory on `sync_all`.
    let _pending = m.write_async(MIB + 10, b"grown").unwrap();
    assert_eq!(m.len(), MIB + 15);
    assert_eq!(rig.in_memory(M, MIB + 10, 5), [0u8; 5]);
    assert_eq!(read(&mut m, MIB + 10, 5), b"grown");
    a.sync_all().unwrap();
    assert_eq!(rig.in_memory(M, MIB + 10, 5), b"grown");

    // Another instance sees synced data.
    let mut b = ctx(&rig.bindings, "b");
    let mut from_b = b.channel("m").unwrap();
    assert_eq!(read(&mut from_b, 1000, 100), data);
}

#[test]
fn synchronous_writes_reach_memory_at_once() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &[0u8; 1024]).unwrap();
    assert_eq!(read(&mut m, 0, 16), [0u8; 16]); // line 0 is now cached
    m.write(5, b"now").unwrap();
    assert_eq!(rig.in_memory(M, 5, 3), b"now");
    assert_eq!(read(&mut m, 4, 5), b"\0now\0", "a write did not update the cached copy");
}

#[test]
fn cache_counts_hits_misses_and_write_backs() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &pattern(64 * 1024, 5)).unwrap();
    let start = a.cache_stats();

    let _ = read(&mut m, 0, 16);
    let s = a.cache_stats();
    assert_eq!((s.hits - start.hits, s.misses - start.misses), (0, 1), "a first read misses");
    let _ = read(&mut m, 0, 16);
    let s2 = a.cache_stats();
    assert_eq!((s2.hits - s.hits, s2.misses - s.misses), (1, 0), "reading the same range again hits");
    let _ = read(&mut m, 250, 10); // line 0 (cached) and line 1 (not)
    let s3 = a.cache_stats();
    assert_eq!((s3.hits - s2.hits, s3.misses - s2.misses), (1, 1));

    // 16 distinct lines through an 8-line cache: line 0 is evicted.
    for line in 0..16u64 {
        let _ = read(&mut m, line * 256, 1);
    }
    let s4 = a.cache_stats();
    let _ = read(&mut m, 0, 1);
    assert_eq!(a.cache_stats().misses, s4.misses + 1, "line 0 should have been evicted");
    assert_eq!(a.cache_stats().writebacks, 0, "clean lines are not written back");

    // Buffered writes to more lines than fit: evictions write dirty lines back before sync.
    let mut pending = Vec::new();
    for line in 0..12u64 {
        pending.push(m.write_async(line * 256, &[line as u8 + 100; 4]).unwrap());
    }
    assert!(a.cache_stats().writebacks >= 4, "evicted dirty lines must be written back");
    assert_eq!(rig.in_memory(M, 0, 4), [100; 4], "the first dirty line was evicted and written back");
    for p in pending {
        m.sync(p).unwrap();
    }
    for line in 0..12u64 {
        assert_eq!(rig.in_memory(M, line * 256, 4), [line as u8 + 100; 4]);
        assert_eq!(read(&mut m, line * 256, 4), [line as u8 + 100; 4]);
    }
    assert_eq!(ctx(&local(), "a").cache_stats(), Default::default(), "aggregated components have no cache");
}

#[test]
fn one_cache_serves_several_components() {
    // Two lines for two components: buffered writes to one evict the other's.
    let rig = rig(16 * MIB, tiny_cache(2));
    let mut a = ctx(&rig.bindings, "a");
    let (mut m, mut n) = (a.channel("m").unwrap(), a.channel("n").unwrap());
    let mut pending = Vec::new();
    for i in 0..4u64 {
        pending.push(m.write_async(i * 256, &[i as u8 + 1; 8]).unwrap());
        pending.push(n.write_async(i * 256, &[i as u8 + 101; 8]).unwrap());
    }
    assert!(a.cache_stats().writebacks > 0);
    for i in 0..4u64 {
        assert_eq!(read(&mut m, i * 256, 8), [i as u8 + 1; 8]);
        assert_eq!(read(&mut n, i * 256, 8), [i as u8 + 101; 8]);
    }
    drop(pending);
    a.sync_all().unwrap();
    for i in 0..4u64 {
        assert_eq!(rig.in_memory(M, i * 256, 8), [i as u8 + 1; 8], "m's line {i} was lost or written elsewhere");
        assert_eq!(rig.in_memory(N, i * 256, 8), [i as u8 + 101; 8], "n's line {i} was lost or written elsewhere");
    }
}

#[test]
fn resize_shrinks_frees_and_regrows_zeroed() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    let data = pattern((5 * MIB / 2) as usize, 6);
    m.write(0, &data).unwrap();
    let _pending = m.write_async(100, b"buffered").unwrap();
    let regions = rig.regions(M);
    assert_eq!(regions.len(), 3);
    rig.provisioner.clear_events();

    m.resize(MIB / 2).unwrap();
    assert_eq!(m.len(), MIB / 2);
    assert_eq!(rig.provisioner.last_len(M), Some(MIB / 2));
    assert_eq!(
        rig.provisioner.allocations(),
        [
            Event::Reclaim { component: M, region: regions[2].region },
            Event::Reclaim { component: M, region: regions[1].region }
        ],
        "shrinking frees the trailing physical components, last first"
    );
    assert_eq!(rig.regions(M), regions[..1]);
    assert_eq!(rig.memory.allocated_bytes(), MIB);
    assert!(matches!(rig.fabric.read(&regions[1], 0, &mut [0u8; 1]), Err(TransportError::UnknownRegion { .. })));
    assert!(matches!(m.read(MIB / 2, &mut [0u8; 1]), Err(ChannelError::OutOfRange { .. })));
    let mut expected = data[..(MIB / 2) as usize].to_vec();
    expected[100..108].copy_from_slice(b"buffered");
    assert!(read(&mut m, 0, expected.len()) == expected, "shrinking lost data before the new end");
    assert!(rig.in_memory(M, 0, expected.len()) == expected, "resize did not write buffered writes back");

    // Growing again: the cut bytes read as zeros, as if never written.
    m.resize(MIB).unwrap();
    assert_eq!(rig.provisioner.allocations().len(), 2, "growing within capacity provisions nothing");
    assert!(read(&mut m, MIB / 2, (MIB / 2) as usize).iter().all(|&b| b == 0), "cut bytes came back");
    m.write(2 * MIB, b"end").unwrap();
    assert!(read(&mut m, MIB, MIB as usize).iter().all(|&b| b == 0));
    assert_eq!(m.len(), 2 * MIB + 3);

    // To zero: every component goes; the next write starts from the initial size.
    m.resize(0).unwrap();
    assert!(rig.regions(M).is_empty());
    assert_eq!(rig.memory.allocated_bytes(), 0);
    m.write(3, b"again").unwrap();
    assert_eq!(read(&mut m, 0, 8), b"\0\0\0again");
    assert_eq!(rig.regions(M).len(), 1);
}

#[test]
fn local_resize_matches_remote() {
    let bindings = local();
    let mut a = ctx(&bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &pattern(5000, 7)).unwrap();
    m.resize(1000).unwrap();
    assert_eq!(m.len(), 1000);
    assert!(matches!(m.read(1000, &mut [0u8; 1]), Err(ChannelError::OutOfRange { .. })));
    m.resize(3000).unwrap();
    assert_eq!(read(&mut m, 0, 1000), pattern(5000, 7)[..1000]);
    assert!(read(&mut m, 1000, 2000).iter().all(|&b| b == 0));
}

#[test]
fn release_frees_everything_and_later_access_fails() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &pattern((5 * MIB / 2) as usize, 8)).unwrap();
    let _pending = m.write_async(10, b"discarded").unwrap();
    let mut other = a.channel("m").unwrap();
    let regions = rig.regions(M);
    rig.provisioner.clear_events();

    m.release().unwrap();
    let reclaimed: Vec<RegionId> = rig
        .provisioner
        .allocations()
        .iter()
        .map(|e| match e {
            Event::Reclaim { region, .. } => *region,
            other => panic!("release did more than reclaim: {other:?}"),
        })
        .collect();
    assert_eq!(reclaimed.len(), 3);
    assert!(regions.iter().all(|r| reclaimed.contains(&r.region)));
    assert_eq!(rig.provisioner.held(), 0);
    assert_eq!(rig.memory.allocated_bytes(), 0);
    assert_eq!(rig.provisioner.last_len(M), Some(0));

    let released = ChannelError::Released { component: "m".into() };
    assert_eq!(other.len(), 0);
    assert_eq!(other.read(0, &mut [0u8; 1]), Err(released.clone()));
    assert_eq!(other.write(0, b"x"), Err(released.clone()));
    assert_eq!(other.write_async(0, b"x").map(|_| ()), Err(released.clone()));
    assert_eq!(other.resize(10), Err(released.clone()));
    other.flush().unwrap(); // nothing left to write back
    let mut reopened = a.channel("m").unwrap();
    assert_eq!(reopened.read(0, &mut [0u8; 1]), Err(released.clone()));
    let mut b = ctx(&rig.bindings, "b");
    assert_eq!(b.channel("m").unwrap().write(0, b"x"), Err(released.clone()));
    a.sync_all().unwrap();
    rig.bindings.end_all(); // idempotent: nothing is freed twice
    assert_eq!(rig.provisioner.held(), 0);
    assert!(rig.provisioner.allocations().iter().filter(|e| matches!(e, Event::Reclaim { .. })).count() == 3);

    // Aggregated: the same.
    let bindings = local();
    let mut a = ctx(&bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, b"data").unwrap();
    let mut other = a.channel("m").unwrap();
    m.release().unwrap();
    assert_eq!(other.read(0, &mut [0u8; 1]), Err(released.clone()));
    assert_eq!(other.write(0, b"x"), Err(released.clone()));
    assert_eq!(other.resize(10), Err(released.clone()));
    assert_eq!(other.len(), 0);
}

#[test]
fn names_resolve_only_along_edges() {
    let rig = rig(16 * MIB, tiny_cache(8));
    for bindings in [rig.bindings.clone(), local()] {
        let err = |ctx: &mut Context, name: &str| ctx.channel(name).unwrap_err();
        let (mut a, mut b, mut d) = (ctx(&bindings, "a"), ctx(&bindings, "b"), ctx(&bindings, "d"));
        assert_eq!(err(&mut a, "nope"), ChannelError::UnknownComponent { name: "nope".into() });
        assert_eq!(err(&mut d, "m"), ChannelError::NotConnected { from: "d".into(), to: "m".into() });
        assert_eq!(err(&mut b, "n"), ChannelError::NotConnected { from: "b".into(), to: "n".into() });
        assert_eq!(err(&mut a, "d"), ChannelError::NotConnected { from: "a".into(), to: "d".into() });
        assert_eq!(err(&mut b, "c"), ChannelError::NotConnected { from: "b".into(), to: "c".into() });
        // Message edges work both ways.
        assert!(b.channel("a").is_ok() && a.channel("b").is_ok() && a.channel("c").is_ok());
    }
    assert!(rig.provisioner.events().is_empty(), "failed opens provisioned memory");
}

fn open(fabric: &InProcessFabric, ctx: &Context) {
    let me = Endpoint { invocation: InvocationId(7), component: ctx.component(), instance: ctx.instance() };
    fabric.open_endpoint(&me).unwrap();
}

#[test]
fn messages_reach_the_right_channel() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let (mut a, mut b, mut c) = (ctx(&rig.bindings, "a"), ctx(&rig.bindings, "b"), ctx(&rig.bindings, "c"));
    for x in [&a, &b, &c] {
        open(&rig.fabric, x);
    }
    let mut a_to_b = a.channel("b").unwrap();
    let mut a_to_c = a.channel("c").unwrap();
    let mut b_to_a = b.channel("a").unwrap();
    let mut c_to_a = c.channel("a").unwrap();

    b_to_a.send(b"b1").unwrap();
    c_to_a.send(b"c1").unwrap();
    c_to_a.send(b"c2").unwrap();
    b_to_a.send(b"b2").unwrap();
    assert_eq!(a_to_b.recv().unwrap(), b"b1");
    // c's messages arrive first and are kept for a's channel to c.
    assert_eq!(a_to_b.recv().unwrap(), b"b2");
    let first = a_to_c.recv_message().unwrap();
    assert_eq!((first.from.component, first.payload.as_slice()), (c.component(), &b"c1"[..]));
    assert_eq!(a_to_c.recv().unwrap(), b"c2");

    a_to_b.send_to(0, b"reply").unwrap();
    assert_eq!(b_to_a.recv().unwrap(), b"reply");
    assert_eq!(
        a_to_b.send_to(1, b"x"),
        Err(ChannelError::NoSuchInstance { component: "b".into(), instance: 1, parallelism: 1 })
    );

    let mut quick = ctx(&rig.bindings, "a");
    quick.set_recv_timeout(Duration::from_millis(50));
    let mut quick_to_b = quick.channel("b").unwrap();
    assert_eq!(quick_to_b.recv(), Err(ChannelError::Timeout { component: "b".into(), timeout_ms: 50 }));
    // The timeout applies to channels already open too.
    a.set_recv_timeout(Duration::from_millis(20));
    assert_eq!(a_to_b.recv(), Err(ChannelError::Timeout { component: "b".into(), timeout_ms: 20 }));

    // Aggregated bindings carry messages over the fabric they are given.
    let fabric = Arc::new(InProcessFabric::new());
    let bindings = Bindings::local_with_transport(graph(), InvocationId(7), fabric.clone());
    let (mut a, mut b) = (ctx(&bindings, "a"), ctx(&bindings, "b"));
    open(&fabric, &a);
    open(&fabric, &b);
    b.channel("a").unwrap().send(b"local").unwrap();
    assert_eq!(a.channel("b").unwrap().recv().unwrap(), b"local");
}

#[test]
fn operations_of_the_other_kind_fail() {
    let rig = rig(16 * MIB, tiny_cache(8));
    for bindings in [rig.bindings.clone(), local()] {
        let mut a = ctx(&bindings, "a");
        let wrong = |component: &str, operation: &'static str, kind| ChannelError::WrongKind {
            component: component.into(),
            operation,
            kind,
        };
        let mut m = a.channel("m").unwrap();
        assert_eq!(m.send(b"x"), Err(wrong("m", "send", ComponentKind::Memory)));
        assert_eq!(m.send_to(0, b"x"), Err(wrong("m", "send", ComponentKind::Memory)));
        assert_eq!(m.recv(), Err(wrong("m", "recv", ComponentKind::Memory)));
        assert_eq!(m.recv_message().map(|_| ()), Err(wrong("m", "recv", ComponentKind::Memory)));

        let mut b = a.channel("b").unwrap();
        let compute = ComponentKind::Compute;
        assert_eq!(b.read(0, &mut [0u8; 1]), Err(wrong("b", "read", compute)));
        assert_eq!(b.read_async(0, 1).map(|_| ()), Err(wrong("b", "read", compute)));
        assert_eq!(b.write(0, b"x"), Err(wrong("b", "write", compute)));
        assert_eq!(b.write_async(0, b"x").map(|_| ()), Err(wrong("b", "write", compute)));
        assert_eq!(b.resize(1), Err(wrong("b", "resize", compute)));
        assert_eq!(b.flush(), Err(wrong("b", "sync", compute)));
        assert_eq!(b.len(), 0);
        assert_eq!(b.release(), Err(wrong("b", "release", compute)));
    }
    assert!(rig.provisioner.events().is_empty(), "wrong-kind operations provisioned memory");
}

#[test]
fn forged_keys_are_denied() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, b"secret").unwrap();
    let region = rig.regions(M)[0];
    let forged = RemoteRegion { key: AccessKey(region.key.0 ^ 1), ..region };
    let mut buf = [0u8; 6];
    assert_eq!(
        rig.fabric.read(&forged, 0, &mut buf),
        Err(TransportError::AccessDenied { node: region.node, region: region.region })
    );
    assert_eq!(buf, [0u8; 6]);
    assert!(matches!(rig.fabric.write(&forged, 0, b"XXXXXX"), Err(TransportError::AccessDenied { .. })));
    assert_eq!(read(&mut m, 0, 6), b"secret");
    assert_eq!(rig.in_memory(M, 0, 6), b"secret");
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Op {
    Write {
        addr: u64,
        len: usize,
        seed: u8,
    },
    WriteAsync {
        addr: u64,
        len: usize,
        seed: u8,
    },
    Sync,
    Read {
        addr: u64,
        len: usize,
    },
    /// `count` reads of `len` bytes, each continuing the one before (read-ahead).
    ReadRun {
        addr: u64,
        len: usize,
        count: usize,
    },
    ReadAsync {
        addr: u64,
        len: usize,
    },
    Resize {
        len: u64,
    },
}

/// Addresses near the 1 MiB boundaries of `m`'s physical components.
fn near_boundary() -> impl Strategy<Value = u64> {
    (0u64..4, -3000i64..3000).prop_map(|(k, delta)| (k as i64 * MIB as i64 + delta).max(0) as u64)
}

/// Mostly cached lengths (under 512 bytes with the tiny cache), some that bypass it.
fn access_len() -> impl Strategy<Value = usize> {
    prop_oneof![5 => 0usize..300, 2 => 300usize..1200, 1 => 1200usize..6000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (near_boundary(), access_len(), any::<u8>()).prop_map(|(addr, len, seed)| Op::Write { addr, len, seed }),
        3 => (near_boundary(), access_len(), any::<u8>()).prop_map(|(addr, len, seed)| Op::WriteAsync { addr, len, seed }),
        1 => Just(Op::Sync),
        3 => (near_boundary(), access_len()).prop_map(|(addr, len)| Op::Read { addr, len }),
        2 => (near_boundary(), access_len(), 2usize..6).prop_map(|(addr, len, count)| Op::ReadRun { addr, len, count }),
        2 => (near_boundary(), access_len()).prop_map(|(addr, len)| Op::ReadAsync { addr, len }),
        1 => near_boundary().prop_map(|len| Op::Resize { len }),
    ]
}

/// Truncates or zero-extends (with a fresh zeroed allocation: `Vec::resize`
/// fills byte by byte in unoptimized test builds).
fn set_len(model: &mut Vec<u8>, len: usize) {
    if len <= model.len() {
        model.truncate(len);
    } else {
        let mut grown = vec![0u8; len];
        grown[..model.len()].copy_from_slice(model);
        *model = grown;
    }
}

/// Runs `ops` on `m`, checking every result against a plain byte vector.
fn run_against_model(m: &mut Channel, ops: &[Op]) -> Result<Vec<u8>, TestCaseError> {
    let mut model: Vec<u8> = Vec::new();
    let mut pending = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Write { addr, len, seed } | Op::WriteAsync { addr, len, seed } => {
                let data = pattern(len, seed);
                if matches!(op, Op::Write { .. }) {
                    m.write(addr, &data).unwrap();
                } else {
                    pending.push(m.write_async(addr, &data).unwrap());
                }
                let end = addr as usize + len;
                let new_len = end.max(model.len());
                set_len(&mut model, new_len);
                model[addr as usize..end].copy_from_slice(&data);
            }
            Op::Sync => {
                if let Some(p) = pending.pop() {
                    m.sync(p).unwrap();
                }
            }
            Op::Read { addr, len } | Op::ReadAsync { addr, len } => {
                let got = if matches!(op, Op::Read { .. }) {
                    let mut buf = vec![0u8; len];
                    m.read(addr, &mut buf).map(|()| buf)
                } else {
                    m.read_async(addr, len).and_then(|p| m.sync(p))
                };
                let end = addr as usize + len;
                if end > model.len() {
                    prop_assert!(
                        matches!(got, Err(ChannelError::OutOfRange { .. })),
                        "op {i} {op:?}: expected OutOfRange, got {got:?}"
                    );
                } else {
                    let got = got.map_err(|e| TestCaseError::fail(format!("op {i} {op:?}: {e}")))?;
                    prop_assert!(got == model[addr as usize..end], "op {i} {op:?}: read differs from the model");
                }
            }
            Op::ReadRun { addr, len, count } => {
                for k in 0..count {
                    let at = addr + (k * len) as u64;
                    let mut buf = vec![0u8; len];
                    let got = m.read(at, &mut buf);
                    let end = at as usize + len;
                    if end > model.len() {
                        prop_assert!(matches!(got, Err(ChannelError::OutOfRange { .. })), "op {i} read {k}: {got:?}");
                        break;
                    }
                    prop_assert!(got.is_ok(), "op {i} read {k}: {got:?}");
                    prop_assert!(buf == model[at as usize..end], "op {i} {op:?}: read {k} differs from the model");
                }
            }
            Op::Resize { len } => {
                m.resize(len).unwrap();
                set_len(&mut model, len as usize);
            }
        }
        prop_assert_eq!(m.len(), model.len() as u64, "op {} {:?}: length differs from the model", i, op);
    }
    for p in pending {
        m.sync(p).unwrap();
    }
    let mut all = vec![0u8; model.len()];
    m.read(0, &mut all).unwrap();
    prop_assert!(all == model, "the final contents differ from the model");
    Ok(model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Remote (through a 8-line cache, so lines are evicted and written back)
    /// and local memory components give the same results as a byte vector.
    #[test]
    fn random_accesses_match_a_byte_vector(ops in proptest::collection::vec(op(), 1..60)) {
        let mut remote = None;
        // Mapped memory, then a copying transport (with read-ahead).
        for rig in [rig(8 * MIB, tiny_cache(8)), copying_rig(8 * MIB, tiny_cache(8))] {
            let mut a = ctx(&rig.bindings, "a");
            let mut m = a.channel("m").unwrap();
            let model = run_against_model(&mut m, &ops)?;
            // Synced: memory itself holds the model.
            prop_assert!(rig.in_memory(M, 0, model.len()) == model, "memory differs from the model after sync");
            let held: u64 = rig.regions(M).iter().map(|r| r.len).sum();
            prop_assert_eq!(held, rig.provisioner.held(), "the address map and the provisioner disagree");
            prop_assert!(held >= model.len() as u64);
            rig.bindings.end_all();
            prop_assert_eq!(rig.memory.allocated_bytes(), 0);
            prop_assert!(remote.as_ref().is_none_or(|r| *r == model));
            remote = Some(model);
        }
        let model = remote.unwrap_or_default();

        let bindings = local();
        let mut a = ctx(&bindings, "a");
        let mut m = a.channel("m").unwrap();
        let local_model = run_against_model(&mut m, &ops)?;
        prop_assert!(local_model == model);
    }
}

#[test]
fn buffered_writes_to_disjoint_bytes_of_one_line_do_not_overwrite_each_other() {
    // Two instances shard one 256-byte line: each writes back only its bytes.
    let rig = rig(16 * MIB, tiny_cache(8));
    let local = local();
    for bindings in [rig.bindings.clone(), local] {
        let (mut a, mut b) = (ctx(&bindings, "a"), ctx(&bindings, "b"));
        let (mut ma, mut mb) = (a.channel("m").unwrap(), b.channel("m").unwrap());
        let wa = ma.write_async(0, &[b'A'; 8]).unwrap();
        let wb = mb.write_async(8, &[b'B'; 8]).unwrap();
        ma.sync(wa).unwrap();
        mb.sync(wb).unwrap();
        let mut c = ctx(&bindings, "b");
        assert_eq!(read(&mut c.channel("m").unwrap(), 0, 16), b"AAAAAAAABBBBBBBB");
    }
}

#[test]
fn a_failed_write_back_keeps_the_bytes_buffered_until_a_later_sync() {
    let rig = rig(16 * MIB, tiny_cache(1));
    let flaky = Arc::new(crate::testkit::faults::FaultyTransport::new(rig.fabric.clone()));
    let bindings = Bindings::remote(graph(), InvocationId(9), flaky.clone(), rig.provisioner.clone(), tiny_cache(1));
    let mut a = ctx(&bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &[0u8; 1024]).unwrap();
    let pending = m.write_async(0, b"kept").unwrap();
    flaky.fail_writes(true);
    // The one-line cache must evict the dirty line to read another: that fails…
    assert!(matches!(m.read(512, &mut [0u8; 4]), Err(ChannelError::Transport { .. })));
    // …and so does an explicit sync, but nothing is dropped.
    assert!(matches!(m.sync(pending), Err(ChannelError::Transport { .. })));
    flaky.fail_writes(false);
    m.flush().unwrap();
    let handle = bindings.existing_memory(M).unwrap();
    let MemoryHandle::Remote(vm) = handle else { panic!("not remote") };
    let piece = vm.address_map().split(0, 4).unwrap().next().unwrap();
    let mut back = [0u8; 4];
    rig.fabric.read(&piece.region, piece.offset, &mut back).unwrap();
    assert_eq!(&back, b"kept");
}

#[test]
fn an_ended_span_is_not_brought_back() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    a.channel("m").unwrap().write(0, b"x").unwrap();
    rig.bindings.end_span(M);
    assert_eq!(a.channel("m").unwrap_err(), ChannelError::Released { component: "m".into() });
    assert_eq!(rig.provisioner.held(), 0);
    rig.bindings.end_all();
    assert_eq!(a.channel("n").unwrap_err(), ChannelError::Released { component: "n".into() });
}

#[test]
fn read_with_lends_the_bytes_and_sees_buffered_writes() {
    let rig = rig(16 * MIB, tiny_cache(8));
    for bindings in [rig.bindings.clone(), local()] {
        let mut a = ctx(&bindings, "a");
        let mut m = a.channel("m").unwrap();
        let data = pattern(3 * 256 * KIB as usize, 3);
        m.write(0, &data).unwrap();
        // Within one physical component: lent in place.
        let sum: u64 = m.read_with(1000, 5000, |b| b.iter().map(|&x| u64::from(x)).sum()).unwrap();
        assert_eq!(sum, data[1000..6000].iter().map(|&x| u64::from(x)).sum::<u64>());
        // A large range: still right.
        let across = m.read_with(100, 600_000, <[u8]>::to_vec).unwrap();
        assert_eq!(across, data[100..600_100]);
        // A buffered write is seen.
        let _pending = m.write_async(2000, b"mine").unwrap();
        assert_eq!(
            m.read_with(1998, 8, <[u8]>::to_vec).unwrap(),
            [&data[1998..2000], b"mine", &data[2004..2006]].concat()
        );
        assert!(matches!(m.read_with(data.len() as u64, 1, |_| ()), Err(ChannelError::OutOfRange { .. })));
    }
    let stats = ctx(&rig.bindings, "a").cache_stats();
    assert_eq!(stats.bytes_lent, 0, "a fresh context has lent nothing");
}

#[test]
fn the_in_process_transport_lends_without_moving_bytes() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &pattern(64 * KIB as usize, 1)).unwrap();
    let moved_before = a.cache_stats().bytes_read;
    let first = m.read_with(4096, 32 * KIB as usize, |b| b[0]).unwrap();
    assert_eq!(first, pattern(64 * KIB as usize, 1)[4096]);
    let stats = a.cache_stats();
    assert_eq!(stats.bytes_read, moved_before, "lent, not read");
    assert_eq!(stats.bytes_lent, 32 * KIB);
}

#[test]
fn a_transport_that_cannot_lend_gets_one_read_into_a_reused_buffer() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let faulty = Arc::new(crate::testkit::faults::FaultyTransport::new(rig.fabric.clone()));
    let bindings = Bindings::remote(graph(), InvocationId(11), faulty, rig.provisioner.clone(), tiny_cache(8));
    let mut a = ctx(&bindings, "a");
    let mut m = a.channel("m").unwrap();
    let data = pattern(64 * KIB as usize, 2);
    m.write(0, &data).unwrap();
    assert_eq!(m.read_with(100, 40_000, <[u8]>::to_vec).unwrap(), data[100..40_100]);
    let stats = a.cache_stats();
    assert_eq!(stats.bytes_lent, 0);
    assert!(stats.bytes_read >= 40_000);
}

#[test]
fn a_large_read_async_runs_on_the_io_thread_and_reports_its_failure_at_sync() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let faulty = Arc::new(crate::testkit::faults::FaultyTransport::new(rig.fabric.clone()));
    let bindings = Bindings::remote(graph(), InvocationId(12), faulty.clone(), rig.provisioner.clone(), tiny_cache(8));
    let mut a = ctx(&bindings, "a");
    let mut m = a.channel("m").unwrap();
    let data = pattern(256 * KIB as usize, 4);
    m.write(0, &data).unwrap();
    let pending: Vec<PendingRead> = (0..4).map(|i| m.read_async(i * 64 * KIB, 64 * KIB as usize).unwrap()).collect();
    let back: Vec<u8> = pending.into_iter().flat_map(|p| m.sync(p).unwrap()).collect();
    assert_eq!(back, data);
    faulty.fail_reads(true);
    let pending = m.read_async(0, 64 * KIB as usize).expect("posting does not touch the transport");
    assert!(matches!(m.sync(pending), Err(ChannelError::Transport { .. })));
}

/// Memory holds `data` from `addr` on, written behind the reader's back
/// (as another instance would).
fn write_directly(rig: &Rig, addr: u64, data: &[u8]) {
    let handle = rig.bindings.existing_memory(M).unwrap();
    let MemoryHandle::Remote(vm) = handle else { panic!("not remote") };
    for piece in vm.address_map().split(addr, data.len()).unwrap() {
        rig.fabric.write(&piece.region, piece.offset, &data[piece.buf_range()]).unwrap();
    }
}

#[test]
fn transports_that_map_memory_do_not_fetch_ahead() {
    let rig = rig(16 * MIB, CacheConfig::new(256 * KIB, 4096).with_read_ahead(MIB));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &pattern(MIB as usize, 4)).unwrap();
    for at in 0..16 {
        read(&mut m, at * 4096, 4096);
    }
    assert_eq!(a.cache_stats().read_ahead_bytes, 0);
}

#[test]
fn sequential_reads_are_served_from_windows_fetched_ahead() {
    for (read_ahead, len) in [(MIB, 4096usize), (MIB, 100_000), (0, 4096)] {
        let rig = copying_rig(16 * MIB, CacheConfig::new(256 * KIB, 4096).with_read_ahead(read_ahead));
        let mut a = ctx(&rig.bindings, "a");
        let mut m = a.channel("m").unwrap();
        // Three physical components of 1 MiB: the run crosses two boundaries.
        let data = pattern(3 * MIB as usize, 5);
        m.write(0, &data).unwrap();
        let before = a.cache_stats();
        let mut at = 0;
        while at + len <= data.len() {
            assert_eq!(read(&mut m, at as u64, len), data[at..at + len], "read at {at}");
            at += len;
        }
        let stats = a.cache_stats();
        let hits = stats.read_ahead_hits - before.read_ahead_hits;
        if read_ahead == 0 {
            assert_eq!(stats.read_ahead_bytes, 0, "read-ahead is off");
        } else {
            // All but the first two reads (which start the run) come from windows.
            assert!(hits as usize >= at - 2 * len, "{len}-byte reads: {hits} of {at} bytes fetched ahead");
            assert!(stats.read_ahead_bytes >= hits);
        }
    }
}

#[test]
fn fetched_ahead_bytes_never_hide_this_instances_writes() {
    let rig = copying_rig(16 * MIB, CacheConfig::new(256 * KIB, 4096).with_read_ahead(MIB));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    let mut data = pattern(MIB as usize, 6);
    m.write(0, &data).unwrap();
    let len = 4096;
    // Start a run: windows past 8 KiB are now in flight; the third read
    // waits for the first, which covers the writes below.
    for at in 0..3 {
        assert_eq!(read(&mut m, (at * len) as u64, len), data[at * len..(at + 1) * len]);
    }
    // A synchronous write, a buffered one and a buffered one written back, all ahead of the run.
    m.write(20_000, b"direct").unwrap();
    data[20_000..20_006].copy_from_slice(b"direct");
    let _pending = m.write_async(30_000, b"buffered").unwrap();
    data[30_000..30_008].copy_from_slice(b"buffered");
    let flushed = m.write_async(40_000, b"flushed").unwrap();
    m.sync(flushed).unwrap();
    data[40_000..40_007].copy_from_slice(b"flushed");
    for at in (3 * len..64 * len).step_by(len) {
        assert_eq!(read(&mut m, at as u64, len), data[at..at + len], "read at {at}");
    }
    assert!(a.cache_stats().read_ahead_hits > 0, "the run went on from fresh windows");
}

#[test]
fn a_jump_reads_memory_rather_than_old_windows() {
    // Caches are not coherent across instances; windows are no different,
    // but they never outlive the run: a jump re-reads memory.
    let rig = copying_rig(16 * MIB, CacheConfig::new(256 * KIB, 4096).with_read_ahead(MIB));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    m.write(0, &pattern(MIB as usize, 7)).unwrap();
    read(&mut m, 0, 4096);
    read(&mut m, 4096, 4096);
    write_directly(&rig, 500_000, b"elsewhere");
    assert_eq!(read(&mut m, 500_000, 9), b"elsewhere", "a jump reads memory, not the old windows");
}

#[test]
fn a_long_write_async_leaves_behind_and_a_failure_loses_nothing() {
    let rig = rig(16 * MIB, tiny_cache(8));
    let faulty = Arc::new(crate::testkit::faults::FaultyTransport::new(rig.fabric.clone()));
    let bindings = Bindings::remote(graph(), InvocationId(13), faulty.clone(), rig.provisioner.clone(), tiny_cache(8));
    let mut a = ctx(&bindings, "a");
    let mut m = a.channel("m").unwrap();
    let data = pattern(200 * KIB as usize, 8);
    let pending = m.write_async(0, &data).unwrap();
    m.sync(pending).unwrap();
    assert_eq!(a.cache_stats().write_behind_bytes, data.len() as u64);
    assert_eq!(read(&mut m, 1000, 2000), data[1000..3000]);

    let newer = pattern(200 * KIB as usize, 9);
    faulty.fail_writes(true);
    let pending = m.write_async(0, &newer).expect("posting does not wait for the transport");
    assert!(matches!(m.sync(pending), Err(ChannelError::Transport { .. })), "the failure surfaces at sync");
    assert!(matches!(m.read(0, &mut [0u8; 4]), Err(ChannelError::Transport { .. })), "…and before any fetch");
    faulty.fail_writes(false);
    m.flush().unwrap();
    let handle = bindings.existing_memory(M).unwrap();
    let MemoryHandle::Remote(vm) = handle else { panic!("not remote") };
    let mut back = vec![0u8; newer.len()];
    for piece in vm.address_map().split(0, newer.len()).unwrap() {
        rig.fabric.read(&piece.region, piece.offset, &mut back[piece.buf_range()]).unwrap();
    }
    assert!(back == newer, "the failed batch was written at the next sync");
}

#[test]
fn buffered_writes_past_the_watermark_leave_in_the_background() {
    let rig = rig(16 * MIB, CacheConfig::new(64 * KIB, 256));
    let mut a = ctx(&rig.bindings, "a");
    let mut m = a.channel("m").unwrap();
    let data = pattern(48 * KIB as usize, 10);
    // Small buffered writes: a quarter of the cache dirty triggers write-behind.
    for (i, chunk) in data.chunks(100).enumerate() {
        let _ = m.write_async((i * 100) as u64, chunk).unwrap();
    }
    assert!(a.cache_stats().write_behind_bytes == 0, "counted when known to be in memory");
    m.flush().unwrap();
    let stats = a.cache_stats();
    assert!(stats.write_behind_bytes >= 16 * KIB, "only {} bytes left behind", stats.write_behind_bytes);
    assert_eq!(rig.in_memory(M, 0, data.len()), data);
    assert_eq!(read(&mut m, 0, data.len()), data);
}

#[test]
fn traffic_counts_every_byte_moved_once_per_target_remote_or_local() {
    for bindings in [rig(16 * MIB, tiny_cache(8)).bindings, local()] {
        let mut a = ctx(&bindings, "a");
        let mut m = a.channel("m").unwrap();
        m.write(0, &[1u8; 3000]).unwrap();
        let _ = m.write_async(3000, &[2u8; 1000]).unwrap();
        let _ = read(&mut m, 0, 100); // a cache hit counts as much as a miss
        let pending = m.read_async(0, 400).unwrap();
        let _ = m.sync(pending).unwrap();
        m.read_with(0, 50, |_| ()).unwrap();
        // A second channel to the same component adds to the same count.
        let mut again = a.channel("m").unwrap();
        let _ = read(&mut again, 10, 50);
        assert_eq!(
            a.traffic(),
            std::collections::BTreeMap::from([("m".to_owned(), 3000 + 1000 + 100 + 400 + 50 + 50)])
        );
    }
}
