//! Disaggregated memory access: the cache of one compute instance, and a
//! channel's operations on one remote memory component through it.

use super::io_worker::{IoWorker, Job};
use super::read_ahead::{Fetch, ReadAhead};
use super::write_behind::{OwnedWrite, WriteBatch, WriteBehind};
use super::{ChannelError, PendingRead};
use crate::ids::MemoryId;
use crate::memory::{AddressMap, CacheStats, DirtyRange, LineCache, LineKey, Snapshot, StateError, VirtualMemory};
use crate::transport::{RemoteOp, Transport, TransportError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Why an access to the physical components failed.
enum AccessError {
    /// The transport refused.
    Transport(TransportError),
    /// The range is not covered by the address map.
    Unmapped,
}

impl From<TransportError> for AccessError {
    fn from(e: TransportError) -> Self {
        AccessError::Transport(e)
    }
}

/// Reads `[addr, addr + buf.len())` of a component through `map`, one
/// operation per physical component touched (no batch is built for one).
fn read_pieces(transport: &dyn Transport, map: &AddressMap, addr: u64, buf: &mut [u8]) -> Result<(), AccessError> {
    let mut pieces = map.split(addr, buf.len()).ok_or(AccessError::Unmapped)?;
    let Some(first) = pieces.next() else { return Ok(()) };
    if first.len == buf.len() {
        return Ok(transport.read(&first.region, first.offset, buf)?);
    }
    let mut ops: Vec<RemoteOp<'_>> = Vec::with_capacity(map.len());
    // The pieces tile the access in order: each takes the next `len` bytes.
    let mut rest = buf;
    for piece in std::iter::once(first).chain(pieces) {
        let (head, tail) = rest.split_at_mut(piece.len);
        ops.push(RemoteOp::Read { region: piece.region, offset: piece.offset, buf: head });
        rest = tail;
    }
    transport.execute(&mut ops).map_err(|e| AccessError::Transport(e.error))
}

/// Writes `data` at `addr` of a component through `map`.
fn write_pieces(transport: &dyn Transport, map: &AddressMap, addr: u64, data: &[u8]) -> Result<(), AccessError> {
    let mut pieces = map.split(addr, data.len()).ok_or(AccessError::Unmapped)?;
    let Some(first) = pieces.next() else { return Ok(()) };
    if first.len == data.len() {
        return Ok(transport.write(&first.region, first.offset, data)?);
    }
    let mut ops: Vec<RemoteOp<'_>> = std::iter::once(first)
        .chain(pieces)
        .map(|p| RemoteOp::Write { region: p.region, offset: p.offset, data: &data[p.buf_range()] })
        .collect();
    transport.execute(&mut ops).map_err(|e| AccessError::Transport(e.error))
}

/// Fills a line buffer starting at virtual `line_start`; bytes past the
/// address space read as zeros.
fn fetch_line(
    transport: &dyn Transport,
    map: &AddressMap,
    line_start: u64,
    data: &mut [u8],
) -> Result<(), AccessError> {
    let len = (map.capacity().saturating_sub(line_start) as usize).min(data.len());
    data[len..].fill(0);
    read_pieces(transport, map, line_start, &mut data[..len])
}

/// The cache of one compute instance, with what it needs to write back.
pub(crate) struct CacheHost {
    cache: LineCache,
    transport: Arc<dyn Transport>,
    memories: HashMap<MemoryId, Arc<VirtualMemory>>,
    /// Runs asynchronous reads, read-ahead and write-behind; started at first use.
    io: Option<IoWorker>,
    /// Per component, a count that moves whenever this instance writes it:
    /// bytes fetched ahead under an older count may be stale.
    epochs: HashMap<MemoryId, u64>,
    behind: WriteBehind,
}

impl CacheHost {
    pub(crate) fn new(cache: LineCache, transport: Arc<dyn Transport>) -> Self {
        CacheHost {
            cache,
            transport,
            memories: HashMap::new(),
            io: None,
            epochs: HashMap::new(),
            behind: WriteBehind::default(),
        }
    }

    pub(crate) fn register(&mut self, memory: Arc<VirtualMemory>) {
        self.memories.insert(memory.id(), memory);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn epoch(&self, memory: MemoryId) -> u64 {
        self.epochs.get(&memory).copied().unwrap_or(0)
    }

    /// Notes that this instance changed, or is about to change, `memory`.
    fn touched(&mut self, memory: MemoryId) {
        *self.epochs.entry(memory).or_insert(0) += 1;
    }

    /// Runs `job` on the I/O thread, or here if there is none.
    fn run_io(&mut self, job: Job) {
        if self.io.is_none() {
            self.io = IoWorker::spawn();
        }
        let refused = match &self.io {
            Some(io) => io.submit(job).err(),
            None => Some(job),
        };
        if let Some(job) = refused {
            self.io = None;
            job();
        }
    }

    /// Waits until every write-behind batch is in memory; call before
    /// touching memory from this thread. See [`WriteBehind`].
    fn settle(&mut self) -> Result<(), ChannelError> {
        if self.behind.is_idle() {
            return Ok(());
        }
        let settled = self.behind.settle(&*self.transport);
        match settled {
            Ok((behind, here)) => {
                self.cache.count_moved(0, behind + here);
                self.cache.count_write_behind(behind);
                Ok(())
            }
            Err(e) => Err(ChannelError::Transport { component: e.component, source: e.source }),
        }
    }

    /// Groups dirty ranges (sorted by line) into one batch per component,
    /// with the lines each batch cleans.
    fn batches(&self, dirty: Vec<DirtyRange>) -> Vec<(WriteBatch, Vec<LineKey>)> {
        let line = self.cache.line_bytes() as u64;
        let mut batches: Vec<(WriteBatch, Vec<LineKey>)> = Vec::new();
        for range in dirty {
            let Some(memory) = self.memories.get(&range.key.0) else { continue };
            let write = OwnedWrite { addr: range.key.1 * line + range.offset as u64, bytes: range.bytes };
            match batches.last_mut() {
                Some((batch, keys)) if batch.memory.id() == range.key.0 => {
                    batch.writes.push(write);
                    keys.push(range.key);
                }
                _ => batches.push((WriteBatch { memory: memory.clone(), writes: vec![write] }, vec![range.key])),
            }
        }
        batches
    }

    /// Writes dirty ranges back now and marks their lines clean.
    fn write_back_now(&mut self, dirty: Vec<DirtyRange>) -> Result<(), ChannelError> {
        self.settle()?;
        for (batch, keys) in self.batches(dirty) {
            let written = batch
                .write(&*self.transport)
                .map_err(|source| ChannelError::Transport { component: batch.memory.name().to_owned(), source })?;
            self.cache.count_moved(0, written);
            self.touched(batch.memory.id());
            for key in keys {
                self.cache.mark_clean(key);
            }
        }
        Ok(())
    }

    /// Posts a batch to the I/O thread; [`settle`](Self::settle) learns its fate.
    fn write_behind(&mut self, batch: WriteBatch) {
        let (done, outcome) = crossbeam_channel::bounded(1);
        let transport = self.transport.clone();
        let component = batch.memory.name().to_owned();
        self.touched(batch.memory.id());
        self.run_io(Box::new(move || {
            let written = batch.write(&*transport).map_err(|e| (e, batch));
            let _ = done.send(written);
        }));
        self.behind.posted(component, outcome);
    }

    /// When buffered writes fill a quarter of the cache, sends them to
    /// memory in the background: their lines turn clean now, so later
    /// evictions find clean victims instead of writing back in the way.
    fn write_behind_if_due(&mut self) {
        if self.cache.dirty_line_bytes() < self.cache.config().bypass_bytes() {
            return;
        }
        let dirty = self.cache.dirty(None);
        for (batch, keys) in self.batches(dirty) {
            for key in keys {
                self.cache.mark_clean(key);
            }
            self.write_behind(batch);
        }
    }

    /// Makes room for one more line, writing back dirty victims first.
    fn make_room(&mut self) -> Result<(), ChannelError> {
        while let Some(victim) = self.cache.victim_to_write_back() {
            self.write_back_now(vec![victim])?;
        }
        Ok(())
    }

    /// Records a buffered write to `range` of a cached line, writing back a
    /// disjoint older range of the same line first.
    fn mark_dirty(&mut self, key: LineKey, range: std::ops::Range<usize>) -> Result<(), ChannelError> {
        while let Err(older) = self.cache.mark_dirty(key, range.clone()) {
            self.write_back_now(vec![older])?;
        }
        self.touched(key.0);
        Ok(())
    }

    /// Writes back the buffered writes of `memory` (of all when `None`), one
    /// batch per component, after every write-behind batch. On a failure,
    /// what was not written stays buffered for a later sync (writing a range
    /// twice is harmless).
    pub(crate) fn flush(&mut self, memory: Option<MemoryId>) -> Result<(), ChannelError> {
        let dirty = self.cache.dirty(memory);
        self.write_back_now(dirty)
    }

    fn count_moved(&mut self, read: usize, written: usize) {
        self.cache.count_moved(read, written);
    }
}

/// A channel's state for one remote memory component.
pub(crate) struct RemoteChannel {
    memory: Arc<VirtualMemory>,
    cache: Arc<Mutex<CacheHost>>,
    transport: Arc<dyn Transport>,
    snapshot: Snapshot,
    /// Where `read_with` reads what it cannot lend in place; reused.
    scratch: Vec<u8>,
    read_ahead: ReadAhead,
}

/// Copies the part of a line (starting at virtual `line_start`) that overlaps
/// the access `[addr, addr + buf.len())` into `buf`.
fn copy_overlap(line_start: u64, line: &[u8], addr: u64, buf: &mut [u8]) {
    if let Some((from, to, n)) = overlap(line_start, line.len(), addr, buf.len()) {
        buf[to..to + n].copy_from_slice(&line[from..from + n]);
    }
}

/// Copies the part of `data` (written at `addr`) that overlaps a line into it;
/// returns the range of the line it wrote.
fn copy_into(line_start: u64, line: &mut [u8], addr: u64, data: &[u8]) -> std::ops::Range<usize> {
    match overlap(line_start, line.len(), addr, data.len()) {
        Some((to, from, n)) => {
            line[to..to + n].copy_from_slice(&data[from..from + n]);
            to..to + n
        }
        None => 0..0,
    }
}

/// Where a line `[line_start, +line_len)` and an access `[addr, +len)`
/// overlap: (offset in line, offset in access, length).
fn overlap(line_start: u64, line_len: usize, addr: u64, len: usize) -> Option<(usize, usize, usize)> {
    let start = line_start.max(addr);
    let end = (line_start + line_len as u64).min(addr + len as u64);
    (start < end).then(|| ((start - line_start) as usize, (start - addr) as usize, (end - start) as usize))
}

impl RemoteChannel {
    pub(crate) fn new(memory: Arc<VirtualMemory>, cache: Arc<Mutex<CacheHost>>, transport: Arc<dyn Transport>) -> Self {
        let budget = if transport.maps_memory() { 0 } else { cache.lock().cache.config().read_ahead_bytes };
        let read_ahead = ReadAhead::new(budget);
        RemoteChannel { memory, cache, transport, snapshot: Snapshot::default(), scratch: Vec::new(), read_ahead }
    }

    pub(crate) fn len(&self) -> u64 {
        self.memory.len()
    }

    fn name(&self) -> String {
        self.memory.name().to_owned()
    }

    fn access_error(&self, e: AccessError, addr: u64, len: usize) -> ChannelError {
        match e {
            AccessError::Transport(source) => ChannelError::Transport { component: self.name(), source },
            AccessError::Unmapped => {
                ChannelError::OutOfRange { component: self.name(), addr, len: len as u64, size: self.snapshot.len }
            }
        }
    }

    fn refresh(&mut self) -> Result<(), ChannelError> {
        self.memory.refresh(&mut self.snapshot).map_err(|_| ChannelError::Released { component: self.name() })
    }

    pub(crate) fn state_error(&self, e: StateError, wanted: u64) -> ChannelError {
        super::channel::state_error(self.memory.name(), e, wanted)
    }

    /// Fails unless `[addr, addr + len)` lies within the component's length.
    pub(crate) fn check_range(&mut self, addr: u64, len: usize) -> Result<(), ChannelError> {
        self.refresh()?;
        if addr.checked_add(len as u64).is_none_or(|end| end > self.snapshot.len) {
            return Err(ChannelError::OutOfRange {
                component: self.name(),
                addr,
                len: len as u64,
                size: self.snapshot.len,
            });
        }
        Ok(())
    }

    /// Reads through the read-ahead windows, then the cache (or straight
    /// from memory when the read is long), then fetches ahead if the reads
    /// run in order.
    pub(crate) fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ChannelError> {
        self.check_range(addr, buf.len())?;
        let cache = self.cache.clone();
        let mut host = cache.lock();
        let id = self.memory.id();
        let line = host.cache.line_bytes() as u64;
        let served = self.read_ahead.serve(addr, buf, host.epoch(id));
        if served > 0 {
            host.cache.count_read_ahead(0, served);
            // The caller sees its own buffered writes.
            let (ahead, _) = buf.split_at_mut(served);
            for (index, offset, bytes) in
                host.cache.dirty_overlay(id, addr / line..(addr + served as u64).div_ceil(line))
            {
                copy_overlap(index * line + offset as u64, bytes, addr, ahead);
            }
        }
        if served < buf.len() {
            self.read_from_memory(&mut host, addr + served as u64, &mut buf[served..])?;
        }
        self.read_ahead.observe(addr, buf.len());
        self.fetch_ahead(&mut host, buf.len());
        Ok(())
    }

    /// Posts the read-ahead windows the run calls for to the I/O thread.
    fn fetch_ahead(&mut self, host: &mut CacheHost, read_len: usize) {
        if host.behind.has_failed() {
            return;
        }
        let line = host.cache.line_bytes();
        let epoch = host.epoch(self.memory.id());
        for Fetch { addr, mut buf } in self.read_ahead.plan(read_len, line, self.snapshot.len) {
            let len = buf.len();
            let (done, fetched) = crossbeam_channel::bounded(1);
            let (transport, map) = (self.transport.clone(), self.snapshot.map.clone());
            host.run_io(Box::new(move || {
                let outcome = match read_pieces(&*transport, &map, addr, &mut buf) {
                    Ok(()) => Ok(buf),
                    Err(_) => Err(buf),
                };
                let _ = done.send(outcome);
            }));
            host.count_moved(len, 0);
            host.cache.count_read_ahead(len, 0);
            self.read_ahead.posted(addr, len, epoch, fetched);
        }
    }

    /// Reads through the cache, or straight from memory when the read is long.
    fn read_from_memory(&self, host: &mut CacheHost, addr: u64, buf: &mut [u8]) -> Result<(), ChannelError> {
        let id = self.memory.id();
        let line = host.cache.line_bytes() as u64;
        let lines = addr / line..(addr + buf.len() as u64).div_ceil(line);
        if buf.len() >= host.cache.config().bypass_bytes() {
            host.settle()?;
            host.cache.count_bypass();
            read_pieces(&*self.transport, &self.snapshot.map, addr, buf)
                .map_err(|e| self.access_error(e, addr, buf.len()))?;
            host.count_moved(buf.len(), 0);
            // The caller sees its own buffered writes.
            for (index, offset, bytes) in host.cache.dirty_overlay(id, lines) {
                copy_overlap(index * line + offset as u64, bytes, addr, buf);
            }
            return Ok(());
        }
        for index in lines {
            let line_start = index * line;
            if let Some(data) = host.cache.lookup((id, index)) {
                copy_overlap(line_start, data, addr, buf);
                continue;
            }
            host.make_room()?;
            host.settle()?;
            let data = host.cache.install((id, index));
            if let Err(e) = fetch_line(&*self.transport, &self.snapshot.map, line_start, data) {
                host.cache.forget((id, index));
                return Err(self.access_error(e, line_start, line as usize));
            }
            copy_overlap(line_start, data, addr, buf);
            host.count_moved(line as usize, 0);
        }
        Ok(())
    }

    /// Lends `[addr, addr + len)` to `f`: the cache's bytes when one cached
    /// line holds them, the physical component's bytes when the transport
    /// can lend and no buffered write overlaps, else a copy in a reused buffer.
    pub(crate) fn read_with<T>(
        &mut self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ChannelError> {
        self.check_range(addr, len)?;
        let mut f = Some(f);
        {
            let mut host = self.cache.lock();
            let id = self.memory.id();
            let line = host.cache.line_bytes() as u64;
            let lines = addr / line..(addr + len as u64).div_ceil(line).max(addr / line + 1);
            if lines.end - lines.start == 1 {
                let offset = (addr - lines.start * line) as usize;
                let lent = host
                    .cache
                    .peek_mut((id, lines.start))
                    .and_then(|data| Some(f.take()?(&data[offset..offset + len])));
                if let Some(out) = lent {
                    host.cache.count_lent(len);
                    return Ok(out);
                }
            }
            let clean = host.cache.dirty_overlay(id, lines).next().is_none() && host.settle().is_ok();
            let single =
                self.snapshot.map.split(addr, len).and_then(|mut pieces| pieces.next()).filter(|p| p.len == len);
            if let (true, Some(piece)) = (clean, single) {
                let mut out = None;
                let lent = self.transport.lend(&piece.region, piece.offset, len, &mut |bytes| {
                    if let Some(f) = f.take() {
                        out = Some(f(bytes));
                    }
                });
                match lent {
                    Ok(true) => {
                        if let Some(out) = out {
                            host.cache.count_lent(len);
                            return Ok(out);
                        }
                    }
                    Ok(false) => {}
                    Err(source) => return Err(ChannelError::Transport { component: self.name(), source }),
                }
            }
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(len, 0);
        let read = self.read(addr, &mut scratch);
        let out = read.map(|()| f.take().map(|f| f(&scratch)));
        self.scratch = scratch;
        out?.ok_or_else(|| ChannelError::Transport {
            component: self.name(),
            source: TransportError::Disconnected(
                "the transport called a lent-bytes callback yet said it did not".into(),
            ),
        })
    }

    /// Posts a large read to the instance's I/O thread; a small one, or one
    /// that buffered writes overlap, is served at once.
    pub(crate) fn read_async(&mut self, addr: u64, mut buf: Vec<u8>) -> Result<PendingRead, ChannelError> {
        self.check_range(addr, buf.len())?;
        let len = buf.len();
        let mut host = self.cache.lock();
        let line = host.cache.line_bytes() as u64;
        let lines = addr / line..(addr + len as u64).div_ceil(line);
        let direct = len >= host.cache.config().bypass_bytes()
            && host.cache.dirty_overlay(self.memory.id(), lines).next().is_none();
        if direct {
            host.settle()?;
        }
        if direct {
            if host.io.is_none() {
                host.io = IoWorker::spawn();
            }
            if let Some(io) = &host.io {
                let (done, result) = crossbeam_channel::bounded(1);
                let (transport, map, component) = (self.transport.clone(), self.snapshot.map.clone(), self.name());
                let size = self.snapshot.len;
                let job = Box::new(move || {
                    let read = read_pieces(&*transport, &map, addr, &mut buf).map(|()| buf).map_err(|e| match e {
                        AccessError::Transport(source) => ChannelError::Transport { component, source },
                        AccessError::Unmapped => ChannelError::OutOfRange { component, addr, len: len as u64, size },
                    });
                    let _ = done.send(read);
                });
                if io.submit(job).is_ok() {
                    host.count_moved(len, 0);
                    return Ok(PendingRead::in_flight(result));
                }
                // The I/O thread is gone (and the buffer with the job): read here.
                host.io = None;
                drop(host);
                let mut buf = vec![0; len];
                self.read(addr, &mut buf)?;
                return Ok(PendingRead::ready(buf));
            }
        }
        drop(host);
        self.read(addr, &mut buf)?;
        Ok(PendingRead::ready(buf))
    }

    pub(crate) fn write(&mut self, addr: u64, data: &[u8], buffered: bool) -> Result<(), ChannelError> {
        // The channel checked that the end does not overflow.
        let end = addr.saturating_add(data.len() as u64);
        self.refresh()?;
        let old_len = self.snapshot.len;
        self.memory.ensure(end).map_err(|e| self.state_error(e, end))?;
        self.refresh()?;
        let mut host = self.cache.lock();
        let id = self.memory.id();
        let line = host.cache.line_bytes() as u64;
        let lines = addr / line..end.div_ceil(line);
        if !buffered || data.len() >= host.cache.config().bypass_bytes() {
            if buffered {
                // Long and asynchronous: a copy leaves on the I/O thread.
                host.cache.count_bypass();
                let batch =
                    WriteBatch { memory: self.memory.clone(), writes: vec![OwnedWrite { addr, bytes: data.into() }] };
                host.write_behind(batch);
            } else {
                host.settle()?;
                host.touched(id);
                write_pieces(&*self.transport, &self.snapshot.map, addr, data)
                    .map_err(|e| self.access_error(e, addr, data.len()))?;
                host.count_moved(0, data.len());
            }
            // Keep cached copies current; what is dirty stays dirty.
            for index in lines {
                if let Some(cached) = host.cache.peek_mut((id, index)) {
                    copy_into(index * line, cached, addr, data);
                }
            }
            return Ok(());
        }
        for index in lines {
            let key = (id, index);
            let line_start = index * line;
            if host.cache.lookup(key).is_none() {
                host.make_room()?;
                let covers_line = addr <= line_start && end >= line_start + line;
                // Bytes of the line this write does not cover must read right.
                let fetch = !covers_line && line_start < old_len;
                if fetch {
                    host.settle()?;
                }
                let slot = host.cache.install(key);
                let filled = if covers_line {
                    Ok(())
                } else if fetch {
                    fetch_line(&*self.transport, &self.snapshot.map, line_start, slot)
                } else {
                    slot.fill(0);
                    Ok(())
                };
                if let Err(e) = filled {
                    host.cache.forget(key);
                    return Err(self.access_error(e, line_start, line as usize));
                }
            }
            let written = match host.cache.peek_mut(key) {
                Some(slot) => copy_into(line_start, slot, addr, data),
                None => 0..0,
            };
            host.mark_dirty(key, written)?;
        }
        host.write_behind_if_due();
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<(), ChannelError> {
        self.cache.lock().flush(Some(self.memory.id()))
    }

    pub(crate) fn resize(&mut self, len: u64) -> Result<(), ChannelError> {
        self.refresh()?;
        let old_len = self.snapshot.len;
        {
            let mut host = self.cache.lock();
            host.flush(Some(self.memory.id()))?;
            host.touched(self.memory.id());
            let line = host.cache.line_bytes() as u64;
            host.cache.invalidate(self.memory.id(), len / line);
        }
        self.memory.resize(len).map_err(|e| self.state_error(e, len))?;
        self.refresh()?;
        // The physical component that now holds the end keeps the cut bytes:
        // clear them, so that growing again reads zeros.
        self.zero(len, old_len.min(self.snapshot.map.capacity()))
    }

    /// Writes zeros straight to memory over `[from, to)`.
    fn zero(&self, from: u64, to: u64) -> Result<(), ChannelError> {
        const CHUNK: u64 = 64 * 1024;
        if from >= to {
            return Ok(());
        }
        let zeros = vec![0u8; (to - from).min(CHUNK) as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK) as usize;
            write_pieces(&*self.transport, &self.snapshot.map, at, &zeros[..n])
                .map_err(|e| self.access_error(e, at, n))?;
            at += n as u64;
        }
        Ok(())
    }

    pub(crate) fn release(&self) {
        let mut host = self.cache.lock();
        host.touched(self.memory.id());
        host.cache.invalidate(self.memory.id(), 0);
        drop(host);
        self.memory.release();
    }
}
