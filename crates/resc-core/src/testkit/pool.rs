//! Conformance checks for [`MemoryPool`]: see the contract in [`crate::pool`].
//!
//! Run them on a pool that nothing else uses meanwhile, with a small capacity
//! (a few MiB, at least 64 KiB): several checks allocate the pool's whole free
//! capacity to see that it is enforced. A transport that reaches the pool
//! reads the regions back. Every check frees what it allocated.

use super::pattern;
use crate::ids::AccessKey;
use crate::pool::{MemoryPool, PoolError};
use crate::transport::{RemoteRegion, Transport, TransportError};
use std::collections::HashSet;

/// Runs every memory pool check.
pub fn memory_pool_suite(pool: &dyn MemoryPool, transport: &dyn Transport) {
    check_exact_length(pool, transport);
    check_zero_filled(pool, transport);
    check_zero_length_refused(pool);
    check_capacity_enforced(pool);
    check_free_requires_key(pool, transport);
    check_free_restores_capacity(pool);
    check_allocated_bytes_accounting(pool);
    check_keys_differ(pool, transport);
    check_concurrent_allocations_never_overcommit(pool);
}

/// Regions freed when the check ends, whichever way it ends.
struct Held<'a> {
    pool: &'a dyn MemoryPool,
    regions: Vec<RemoteRegion>,
}

impl<'a> Held<'a> {
    fn new(pool: &'a dyn MemoryPool) -> Self {
        Held { pool, regions: Vec::new() }
    }

    fn allocate(&mut self, bytes: u64, check: &str) -> RemoteRegion {
        let region =
            self.pool.allocate(bytes).unwrap_or_else(|e| panic!("{check}: allocating {bytes} bytes failed: {e}"));
        self.regions.push(region);
        region
    }

    fn free(&mut self, region: &RemoteRegion, check: &str) {
        self.pool
            .free(region)
            .unwrap_or_else(|e| panic!("{check}: freeing {} with its key failed: {e}", region.region));
        self.regions.retain(|r| r.region != region.region);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        for region in &self.regions {
            let _ = self.pool.free(region);
        }
    }
}

fn free_bytes(pool: &dyn MemoryPool, check: &str) -> u64 {
    let (capacity, allocated) = (pool.capacity_bytes(), pool.allocated_bytes());
    assert!(
        allocated <= capacity,
        "{check}: the pool reports {allocated} bytes allocated of a {capacity}-byte capacity"
    );
    capacity - allocated
}

fn read_all(transport: &dyn Transport, region: &RemoteRegion, check: &str) -> Vec<u8> {
    let mut buf = vec![0xEEu8; region.len as usize];
    transport
        .read(region, 0, &mut buf)
        .unwrap_or_else(|e| panic!("{check}: reading all of {} through the transport failed: {e}", region.region));
    buf
}

/// A region has exactly the asked length, on the pool's node: its last byte
/// is addressable and the byte after it is out of bounds.
pub fn check_exact_length(pool: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "pool/exact_length";
    let mut held = Held::new(pool);
    for bytes in [1u64, 1000, 4096, 3 * 4096 + 1] {
        let region = held.allocate(bytes, CHECK);
        assert_eq!(region.len, bytes, "{CHECK}: asked for {bytes} bytes, the region says it has {}", region.len);
        assert_eq!(region.node, pool.node(), "{CHECK}: the region names another node than the pool's");
        transport
            .write(&region, bytes - 1, &[7])
            .unwrap_or_else(|e| panic!("{CHECK}: the last byte of a {bytes}-byte region is not writable: {e}"));
        let past = transport.read(&region, bytes, &mut [0u8; 1]);
        assert!(
            matches!(past, Err(TransportError::OutOfBounds { .. })),
            "{CHECK}: reading the byte after a {bytes}-byte region returned {past:?}, expected OutOfBounds (is it larger than asked?)"
        );
    }
}

/// A new region reads as zeros, also when it reuses freed memory.
pub fn check_zero_filled(pool: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "pool/zero_filled";
    let mut held = Held::new(pool);
    for round in 0..4u8 {
        let region = held.allocate(8192, CHECK);
        assert!(
            read_all(transport, &region, CHECK).iter().all(|&b| b == 0),
            "{CHECK}: a new region (round {round}) does not read as zeros: memory of a freed region leaked into it?"
        );
        transport
            .write(&region, 0, &pattern(8192, round))
            .unwrap_or_else(|e| panic!("{CHECK}: writing the region failed: {e}"));
        held.free(&region, CHECK);
    }
}

/// A zero-byte region is refused, and the refusal holds nothing.
pub fn check_zero_length_refused(pool: &dyn MemoryPool) {
    const CHECK: &str = "pool/zero_length_refused";
    let before = pool.allocated_bytes();
    let mut held = Held::new(pool);
    match pool.allocate(0) {
        Err(PoolError::ZeroLength) => {}
        Ok(region) => {
            held.regions.push(region);
            panic!("{CHECK}: a zero-byte allocation succeeded, expected ZeroLength");
        }
        Err(e) => panic!("{CHECK}: a zero-byte allocation failed with {e:?}, expected ZeroLength"),
    }
    assert_eq!(pool.allocated_bytes(), before, "{CHECK}: a refused allocation changed allocated_bytes");
}

/// More than the free capacity is `OutOfMemory`; exactly the free capacity
/// fits, and then not one byte more (no over-commit).
pub fn check_capacity_enforced(pool: &dyn MemoryPool) {
    const CHECK: &str = "pool/capacity_enforced";
    let mut held = Held::new(pool);
    let free = free_bytes(pool, CHECK);
    assert!(free >= 4, "{CHECK}: the pool needs some free capacity for this check");
    match pool.allocate(free + 1) {
        Err(PoolError::OutOfMemory { node, requested, free: reported }) => {
            assert_eq!(node, pool.node(), "{CHECK}: OutOfMemory names the wrong node");
            assert_eq!(requested, free + 1, "{CHECK}: OutOfMemory reports the wrong request");
            assert_eq!(reported, free, "{CHECK}: OutOfMemory reports {reported} bytes free, the pool has {free}");
        }
        Ok(region) => {
            held.regions.push(region);
            panic!("{CHECK}: allocating {} bytes with {free} free succeeded: the pool over-commits", free + 1);
        }
        Err(e) => panic!("{CHECK}: allocating more than the free capacity returned {e:?}, expected OutOfMemory"),
    }
    // Fill in four parts: the last takes the remainder.
    let quarter = free / 4;
    for _ in 0..3 {
        held.allocate(quarter, CHECK);
    }
    held.allocate(free - 3 * quarter, CHECK);
    assert_eq!(
        pool.allocated_bytes(),
        pool.capacity_bytes(),
        "{CHECK}: a full pool does not report its capacity allocated"
    );
    match pool.allocate(1) {
        Err(PoolError::OutOfMemory { free: 0, requested: 1, .. }) => {}
        Ok(region) => {
            held.regions.push(region);
            panic!("{CHECK}: a full pool allocated one more byte: it over-commits");
        }
        Err(e) => panic!("{CHECK}: one byte from a full pool returned {e:?}, expected OutOfMemory with 0 free"),
    }
}

/// `free` needs the region's key: with a wrong key it is `AccessDenied` and the
/// region lives on unchanged; with the right one it goes, once.
pub fn check_free_requires_key(pool: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "pool/free_requires_key";
    let mut held = Held::new(pool);
    let region = held.allocate(4096, CHECK);
    let data = pattern(4096, 20);
    transport.write(&region, 0, &data).unwrap_or_else(|e| panic!("{CHECK}: writing the region failed: {e}"));
    let allocated = pool.allocated_bytes();

    let forged = RemoteRegion { key: AccessKey(region.key.0 ^ 0x0101), ..region };
    let result = pool.free(&forged);
    assert!(
        matches!(result, Err(PoolError::AccessDenied { region: r, .. }) if r == region.region),
        "{CHECK}: freeing with a wrong key returned {result:?}, expected AccessDenied"
    );
    assert_eq!(pool.allocated_bytes(), allocated, "{CHECK}: a denied free changed allocated_bytes");
    assert!(read_all(transport, &region, CHECK) == data, "{CHECK}: a denied free changed the region's bytes");

    held.free(&region, CHECK);
    let again = pool.free(&region);
    assert!(
        matches!(again, Err(PoolError::UnknownRegion { region: r, .. }) if r == region.region),
        "{CHECK}: freeing a region twice returned {again:?}, expected UnknownRegion"
    );
    let read = transport.read(&region, 0, &mut [0u8; 8]);
    assert!(
        matches!(read, Err(TransportError::UnknownRegion { .. })),
        "{CHECK}: reading a freed region returned {read:?}, expected UnknownRegion"
    );
}

/// Freeing makes the capacity available again.
pub fn check_free_restores_capacity(pool: &dyn MemoryPool) {
    const CHECK: &str = "pool/free_restores_capacity";
    let mut held = Held::new(pool);
    let free = free_bytes(pool, CHECK);
    for round in 0..3 {
        let all = held.allocate(free, CHECK);
        assert!(
            pool.allocate(1).map(|r| held.regions.push(r)).is_err(),
            "{CHECK}: round {round}: one byte more than the capacity was allocated"
        );
        held.free(&all, CHECK);
        assert_eq!(free_bytes(pool, CHECK), free, "{CHECK}: round {round}: freeing did not restore the capacity");
    }
}

/// `allocated_bytes` is the sum of the lengths of live regions: it moves by
/// exactly a region's length on allocate and free, and not on failures.
pub fn check_allocated_bytes_accounting(pool: &dyn MemoryPool) {
    const CHECK: &str = "pool/allocated_bytes_accounting";
    let mut held = Held::new(pool);
    let base = pool.allocated_bytes();
    let sizes = [4096u64, 1, 12_345, 8192];
    let mut expected = base;
    let mut regions = Vec::new();
    for bytes in sizes {
        regions.push(held.allocate(bytes, CHECK));
        expected += bytes;
        assert_eq!(pool.allocated_bytes(), expected, "{CHECK}: allocating {bytes} bytes moved allocated_bytes wrongly");
    }
    let too_much = pool.capacity_bytes() + 1;
    assert!(
        pool.allocate(too_much).map(|r| held.regions.push(r)).is_err(),
        "{CHECK}: more than the capacity was allocated"
    );
    assert_eq!(pool.allocated_bytes(), expected, "{CHECK}: a failed allocation changed allocated_bytes");
    for region in regions.iter().rev() {
        held.free(region, CHECK);
        expected -= region.len;
        assert_eq!(
            pool.allocated_bytes(),
            expected,
            "{CHECK}: freeing {} bytes moved allocated_bytes wrongly",
            region.len
        );
    }
    assert_eq!(pool.allocated_bytes(), base, "{CHECK}: allocated_bytes did not return to where it started");
}

/// Every allocation gets its own region id and its own key; one region's key
/// does not open another.
pub fn check_keys_differ(pool: &dyn MemoryPool, transport: &dyn Transport) {
    const CHECK: &str = "pool/keys_differ";
    let mut held = Held::new(pool);
    let regions: Vec<RemoteRegion> = (0..16).map(|_| held.allocate(64, CHECK)).collect();
    let ids: HashSet<_> = regions.iter().map(|r| r.region).collect();
    let keys: HashSet<_> = regions.iter().map(|r| r.key).collect();
    assert_eq!(ids.len(), regions.len(), "{CHECK}: live regions share a region id");
    assert_eq!(keys.len(), regions.len(), "{CHECK}: 16 allocations did not get 16 different keys");
    let crossed = RemoteRegion { key: regions[0].key, ..regions[1] };
    let read = transport.read(&crossed, 0, &mut [0u8; 8]);
    assert!(
        matches!(read, Err(TransportError::AccessDenied { .. })),
        "{CHECK}: one region's key opened another: {read:?}"
    );
}

/// Allocations racing from several threads never hold more than the capacity.
pub fn check_concurrent_allocations_never_overcommit(pool: &dyn MemoryPool) {
    const CHECK: &str = "pool/concurrent_allocations_never_overcommit";
    const THREADS: usize = 4;
    const EACH: usize = 8;
    let base = pool.allocated_bytes();
    let free = free_bytes(pool, CHECK);
    // Together the threads ask for twice the free capacity.
    let chunk = (free / (THREADS * EACH / 2) as u64).max(1);
    let won: Vec<RemoteRegion> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| s.spawn(move || (0..EACH).filter_map(|_| pool.allocate(chunk).ok()).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let held = Held { pool, regions: won };
    let total: u64 = held.regions.iter().map(|r| r.len).sum();
    assert!(total <= free, "{CHECK}: racing threads were given {total} bytes with {free} free: over-commit");
    assert_eq!(pool.allocated_bytes(), base + total, "{CHECK}: allocated_bytes disagrees with the regions handed out");
    assert!(
        total + chunk > free,
        "{CHECK}: only {total} of {free} bytes were handed out in {chunk}-byte chunks although more were asked for"
    );
    drop(held);
    assert_eq!(pool.allocated_bytes(), base, "{CHECK}: freeing the racing allocations did not restore allocated_bytes");
}
