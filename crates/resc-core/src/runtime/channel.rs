//! Channels: the runtime's data operations on one target component.

use super::ChannelError;
use crate::graph::ComponentKind;
use crate::ids::{ComputeId, Endpoint, MemoryId};
use crate::memory::{AddressMap, CacheStats, LineCache, LocalMemory, VirtualMemory};
use crate::memory::{ProvisionError, StateError};
use crate::transport::{Message, RemoteOp, Transport, TransportError};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cache of one compute instance, with what it needs to write lines back.
pub(crate) struct CacheHost {
    cache: LineCache,
    transport: Arc<dyn Transport>,
    memories: HashMap<MemoryId, Arc<VirtualMemory>>,
}

impl CacheHost {
    pub(crate) fn new(cache: LineCache, transport: Arc<dyn Transport>) -> Self {
        CacheHost { cache, transport, memories: HashMap::new() }
    }

    pub(crate) fn register(&mut self, memory: Arc<VirtualMemory>) {
        self.memories.insert(memory.id(), memory);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Writes a line back to the component it belongs to. A line of a released
    /// component is dropped: its data has no home any more.
    fn write_line(&self, memory: MemoryId, line: u64, data: &[u8]) -> Result<(), ChannelError> {
        let Some(vm) = self.memories.get(&memory) else { return Ok(()) };
        let mut snapshot = (u64::MAX, AddressMap::new());
        if vm.refresh(&mut snapshot).is_err() {
            return Ok(());
        }
        let map = snapshot.1;
        let start = line * self.cache.line_bytes() as u64;
        // Only bytes within the logical length carry data.
        let len = (vm.len().saturating_sub(start) as usize).min(data.len());
        let Some(pieces) = map.split(start, len) else { return Ok(()) };
        for piece in pieces {
            self.transport
                .write(&piece.region, piece.offset, &data[piece.buf_range()])
                .map_err(|source| ChannelError::Transport { component: vm.name().to_owned(), source })?;
        }
        Ok(())
    }

    /// Writes back the dirty lines of `memory` (all when `None`).
    fn flush(&mut self, memory: Option<MemoryId>) -> Result<(), ChannelError> {
        let dirty: Vec<(_, Box<[u8]>)> =
            self.cache.take_dirty(memory, 0..u64::MAX).into_iter().map(|(k, d)| (k, d.into())).collect();
        for (i, &((m, line), ref data)) in dirty.iter().enumerate() {
            if let Err(e) = self.write_line(m, line, data) {
                // What did not reach memory stays buffered, for a later sync.
                for &(key, _) in &dirty[i..] {
                    self.cache.mark_dirty(key);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    pub(crate) fn flush_all(&mut self) -> Result<(), ChannelError> {
        self.flush(None)
    }
}

/// Message state of one compute instance: its endpoint and messages that
/// arrived from a peer other than the one being received from.
pub(crate) struct PeerState {
    me: Endpoint,
    stash: HashMap<ComputeId, VecDeque<Message>>,
}

impl PeerState {
    pub(crate) fn new(me: Endpoint) -> Self {
        PeerState { me, stash: HashMap::new() }
    }
}

pub(crate) enum ChannelKind {
    Remote(Box<RemoteChannel>),
    Local(Arc<LocalMemory>),
    Peer {
        peer: ComputeId,
        parallelism: u32,
        transport: Arc<dyn Transport>,
        state: Arc<Mutex<PeerState>>,
        /// The context's receive timeout, shared so that a later
        /// `set_recv_timeout` applies to channels already open.
        timeout: Arc<Mutex<Duration>>,
    },
}

pub(crate) struct RemoteChannel {
    memory: Arc<VirtualMemory>,
    cache: Arc<Mutex<CacheHost>>,
    transport: Arc<dyn Transport>,
    snapshot: (u64, AddressMap),
}

impl ChannelKind {
    pub(crate) fn remote(
        memory: Arc<VirtualMemory>,
        cache: Arc<Mutex<CacheHost>>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        ChannelKind::Remote(Box::new(RemoteChannel {
            memory,
            cache,
            transport,
            snapshot: (u64::MAX, AddressMap::new()),
        }))
    }
}

/// An asynchronous read: its buffer is filled once [`Channel::sync`] returns it.
#[derive(Debug)]
#[must_use = "sync the read to get its bytes"]
pub struct PendingRead {
    buf: Vec<u8>,
}

/// An asynchronous write: buffered until [`Channel::sync`] (or eviction) writes it back.
#[derive(Debug)]
#[must_use = "sync the write to make it reach memory"]
pub struct PendingWrite {
    _private: (),
}

/// An operation [`Channel::sync`] can complete.
pub trait PendingOp {
    /// What completing it yields.
    type Output;
    #[doc(hidden)]
    fn complete(self, channel: &mut Channel) -> Result<Self::Output, ChannelError>;
}

impl PendingOp for PendingRead {
    type Output = Vec<u8>;
    fn complete(self, _: &mut Channel) -> Result<Vec<u8>, ChannelError> {
        Ok(self.buf)
    }
}

impl PendingOp for PendingWrite {
    type Output = ();
    fn complete(self, channel: &mut Channel) -> Result<(), ChannelError> {
        channel.flush()
    }
}

/// A connection from a code piece to one component, opened by name with
/// [`Context::channel`](super::Context::channel).
///
/// On a memory component: `read`, `write`, `read_async`, `write_async`,
/// `sync`, `resize`, `release`, `len`. On a compute component: `send`,
/// `send_to`, `recv`. The other operations fail with
/// [`ChannelError::WrongKind`].
///
/// Parallel instances sharing a memory component each have their own cache;
/// the runtime does not keep them coherent (as in the paper): share
/// read-only or sharded data, or `sync` and coordinate by messages.
pub struct Channel {
    name: String,
    kind_of_target: ComponentKind,
    kind: ChannelKind,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("target", &self.name).field("kind", &self.kind_of_target).finish()
    }
}

fn state_error(name: &str, e: StateError, wanted: u64) -> ChannelError {
    let component = name.to_owned();
    match e {
        StateError::Released => ChannelError::Released { component },
        StateError::Provision(source @ ProvisionError::BudgetExceeded { .. }) => {
            ChannelError::BudgetExceeded { component, wanted, source }
        }
        StateError::Provision(source) => ChannelError::GrowthFailed { component, wanted, source },
    }
}

fn out_of_range(name: &str, addr: u64, len: usize, size: u64) -> ChannelError {
    ChannelError::OutOfRange { component: name.to_owned(), addr, len: len as u64, size }
}

impl Channel {
    pub(crate) fn new(name: String, kind_of_target: ComponentKind, kind: ChannelKind) -> Self {
        Channel { name, kind_of_target, kind }
    }

    /// The target component's name.
    pub fn target(&self) -> &str {
        &self.name
    }

    fn wrong(&self, operation: &'static str) -> ChannelError {
        ChannelError::WrongKind { component: self.name.clone(), operation, kind: self.kind_of_target }
    }

    fn transport_error(&self, source: TransportError) -> ChannelError {
        ChannelError::Transport { component: self.name.clone(), source }
    }

    /// Bytes in use in the memory component (0 for a message channel).
    pub fn len(&self) -> u64 {
        match &self.kind {
            ChannelKind::Remote(r) => r.memory.len(),
            ChannelKind::Local(m) => m.len(),
            ChannelKind::Peer { .. } => 0,
        }
    }

    /// Whether the memory component holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `buf.len()` bytes at `addr`. Small reads go through the local
    /// cache; reads of a quarter of the cache or more go straight to memory
    /// (and still see this instance's buffered writes).
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ChannelError> {
        match &mut self.kind {
            ChannelKind::Local(m) => {
                if m.is_released() {
                    return Err(ChannelError::Released { component: self.name.clone() });
                }
                if m.read(addr, buf) {
                    Ok(())
                } else {
                    Err(out_of_range(&self.name, addr, buf.len(), m.len()))
                }
            }
            ChannelKind::Remote(r) => {
                let name = self.name.clone();
                r.memory.refresh(&mut r.snapshot).map_err(|_| ChannelError::Released { component: name.clone() })?;
                let size = r.memory.len();
                if addr.checked_add(buf.len() as u64).is_none_or(|end| end > size) {
                    return Err(out_of_range(&name, addr, buf.len(), size));
                }
                r.read(addr, buf).map_err(|source| ChannelError::Transport { component: name, source })
            }
            ChannelKind::Peer { .. } => Err(self.wrong("read")),
        }
    }

    /// Writes `data` at `addr` and returns once it is in memory. A write past
    /// the end first grows the component (initial size, then increments)
    /// within the application's budget; if growth fails nothing is written.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), ChannelError> {
        self.write_inner(addr, data, false)
    }

    /// Starts a read of `len` bytes at `addr` into a buffer of its own; `sync`
    /// returns the bytes. (The in-process transport completes it at once;
    /// network transports overlap it with the code piece's work.)
    pub fn read_async(&mut self, addr: u64, len: usize) -> Result<PendingRead, ChannelError> {
        self.read_async_into(addr, vec![0; len])
    }

    /// Like [`read_async`](Self::read_async), reusing `buf` (its length is the read's length).
    pub fn read_async_into(&mut self, addr: u64, mut buf: Vec<u8>) -> Result<PendingRead, ChannelError> {
        self.read(addr, &mut buf)?;
        Ok(PendingRead { buf })
    }

    /// Buffers a write in the local cache; it reaches memory on `sync` or
    /// eviction. Growth happens now, so a budget error is reported here.
    pub fn write_async(&mut self, addr: u64, data: &[u8]) -> Result<PendingWrite, ChannelError> {
        self.write_inner(addr, data, true)?;
        Ok(PendingWrite { _private: () })
    }

    /// Completes an asynchronous operation: a read yields its bytes; a write
    /// (and every write buffered before it on this component) reaches memory.
    pub fn sync<P: PendingOp>(&mut self, op: P) -> Result<P::Output, ChannelError> {
        op.complete(self)
    }

    /// Writes back every buffered write to this component.
    pub fn flush(&mut self) -> Result<(), ChannelError> {
        match &self.kind {
            ChannelKind::Remote(r) => r.cache.lock().flush(Some(r.memory.id())),
            ChannelKind::Local(_) => Ok(()),
            ChannelKind::Peer { .. } => Err(self.wrong("sync")),
        }
    }

    fn write_inner(&mut self, addr: u64, data: &[u8], buffered: bool) -> Result<(), ChannelError> {
        let end = addr
            .checked_add(data.len() as u64)
            .ok_or_else(|| out_of_range(&self.name, addr, data.len(), self.len()))?;
        match &mut self.kind {
            ChannelKind::Local(m) => {
                if m.is_released() {
                    return Err(ChannelError::Released { component: self.name.clone() });
                }
                m.write(addr, data).map_err(|e| state_error(&self.name, StateError::Provision(e), end))
            }
            ChannelKind::Remote(r) => {
                let name = &self.name;
                let old_len = r.memory.len();
                r.memory
                    .ensure(end)
                    .and_then(|()| r.memory.refresh(&mut r.snapshot))
                    .map_err(|e| state_error(name, e, end))?;
                r.write(addr, data, old_len, buffered)
                    .map_err(|source| ChannelError::Transport { component: name.clone(), source })
            }
            ChannelKind::Peer { .. } => Err(self.wrong("write")),
        }
    }

    /// Sets the component's size: growing provisions physical components,
    /// shrinking frees those wholly past the new end. Buffered writes are
    /// written back first. Bytes between the old and the new end read as
    /// zeros when the component grows again, as if never written.
    pub fn resize(&mut self, len: u64) -> Result<(), ChannelError> {
        match &mut self.kind {
            ChannelKind::Local(m) => {
                if m.is_released() {
                    return Err(ChannelError::Released { component: self.name.clone() });
                }
                m.resize(len).map_err(|e| state_error(&self.name, StateError::Provision(e), len))
            }
            ChannelKind::Remote(r) => {
                let old_len = r.memory.len();
                {
                    let mut host = r.cache.lock();
                    host.flush(Some(r.memory.id()))?;
                    let line = host.cache.line_bytes() as u64;
                    host.cache.invalidate(r.memory.id(), len / line);
                }
                r.memory.resize(len).map_err(|e| state_error(&self.name, e, len))?;
                // The physical component that now holds the end keeps the cut
                // bytes: clear them, so that growing again reads zeros.
                r.memory.refresh(&mut r.snapshot).map_err(|e| state_error(&self.name, e, len))?;
                r.zero(len, old_len.min(r.snapshot.1.capacity()))
                    .map_err(|source| ChannelError::Transport { component: self.name.clone(), source })
            }
            ChannelKind::Peer { .. } => Err(self.wrong("resize")),
        }
    }

    /// Frees the component now, before its span would end. Buffered writes
    /// are discarded. Any later access by any instance fails with `Released`.
    pub fn release(self) -> Result<(), ChannelError> {
        match &self.kind {
            ChannelKind::Local(m) => m.release(),
            ChannelKind::Remote(r) => {
                r.cache.lock().cache.invalidate(r.memory.id(), 0);
                r.memory.release();
            }
            ChannelKind::Peer { .. } => return Err(self.wrong("release")),
        }
        Ok(())
    }

    /// Sends a message to the peer instance with this instance's index
    /// (modulo the peer's parallelism).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        let ChannelKind::Peer { parallelism, state, .. } = &self.kind else { return Err(self.wrong("send")) };
        let instance = state.lock().me.instance % parallelism;
        self.send_to(instance, payload)
    }

    /// Sends a message to one instance of the peer.
    pub fn send_to(&mut self, instance: u32, payload: &[u8]) -> Result<(), ChannelError> {
        let ChannelKind::Peer { peer, parallelism, transport, state, .. } = &self.kind else {
            return Err(self.wrong("send"));
        };
        if instance >= *parallelism {
            return Err(ChannelError::NoSuchInstance {
                component: self.name.clone(),
                instance,
                parallelism: *parallelism,
            });
        }
        let me = state.lock().me.clone();
        let to = Endpoint { invocation: me.invocation, component: *peer, instance };
        transport.send(&me, &to, payload).map_err(|e| self.transport_error(e))
    }

    /// Receives the next message from any instance of the peer, waiting at
    /// most the context's receive timeout.
    pub fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        self.recv_message().map(|m| m.payload)
    }

    /// Like [`recv`](Self::recv), also telling which instance sent it.
    pub fn recv_message(&mut self) -> Result<Message, ChannelError> {
        let ChannelKind::Peer { peer, transport, state, timeout, .. } = &self.kind else {
            return Err(self.wrong("recv"));
        };
        let timeout = *timeout.lock();
        let deadline = Instant::now() + timeout;
        let mut state = state.lock();
        if let Some(message) = state.stash.get_mut(peer).and_then(VecDeque::pop_front) {
            return Ok(message);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match transport.recv(&state.me, left) {
                Ok(m) => m,
                Err(TransportError::Timeout(_)) => {
                    return Err(ChannelError::Timeout {
                        component: self.name.clone(),
                        timeout_ms: timeout.as_millis() as u64,
                    })
                }
                Err(e) => return Err(self.transport_error(e)),
            };
            if message.from.component == *peer {
                return Ok(message);
            }
            state.stash.entry(message.from.component).or_default().push_back(message);
        }
    }
}

impl RemoteChannel {
    /// Reads straight from memory into `buf`.
    fn read_direct(&self, addr: u64, buf: &mut [u8]) -> Result<(), TransportError> {
        let map = &self.snapshot.1;
        let Some(mut pieces) = map.split(addr, buf.len()) else {
            return Ok(());
        };
        // Most accesses fall in one physical component: no batch to build.
        if let Some(first) = pieces.next().filter(|p| p.len == buf.len()) {
            return self.transport.read(&first.region, first.offset, buf);
        }
        let Some(pieces) = map.split(addr, buf.len()) else {
            return Ok(());
        };
        let mut ops: Vec<RemoteOp<'_>> = Vec::with_capacity(map.len());
        let mut rest = buf;
        let mut consumed = 0;
        for piece in pieces {
            let (head, tail) = rest.split_at_mut(piece.buf_start - consumed + piece.len);
            let head_len = head.len();
            let buf = &mut head[piece.buf_start - consumed..];
            ops.push(RemoteOp::Read { region: piece.region, offset: piece.offset, buf });
            consumed += head_len;
            rest = tail;
        }
        self.transport.execute(&mut ops).map_err(|e| e.error)
    }

    /// Writes zeros straight to memory over `[from, to)` (nothing if empty).
    fn zero(&self, from: u64, to: u64) -> Result<(), TransportError> {
        const CHUNK: u64 = 64 * 1024;
        if from >= to {
            return Ok(());
        }
        let zeros = vec![0u8; (to - from).min(CHUNK) as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK);
            self.write_direct(at, &zeros[..n as usize])?;
            at += n;
        }
        Ok(())
    }

    /// Writes straight to memory.
    fn write_direct(&self, addr: u64, data: &[u8]) -> Result<(), TransportError> {
        let Some(mut pieces) = self.snapshot.1.split(addr, data.len()) else {
            return Ok(());
        };
        if let Some(first) = pieces.next().filter(|p| p.len == data.len()) {
            return self.transport.write(&first.region, first.offset, data);
        }
        let Some(pieces) = self.snapshot.1.split(addr, data.len()) else {
            return Ok(());
        };
        let mut ops: Vec<RemoteOp<'_>> = pieces
            .map(|p| RemoteOp::Write { region: p.region, offset: p.offset, data: &data[p.buf_range()] })
            .collect();
        self.transport.execute(&mut ops).map_err(|e| e.error)
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), TransportError> {
        let mut host = self.cache.lock();
        let id = self.memory.id();
        let line = host.cache.line_bytes() as u64;
        if buf.len() >= host.cache.config().bypass_bytes() {
            host.cache.count_bypass();
            self.read_direct(addr, buf)?;
            // The caller must see its own buffered writes.
            let end = addr + buf.len() as u64;
            for (index, data) in host.cache.dirty_overlay(id, addr / line..end.div_ceil(line)) {
                copy_overlap(index * line, data, addr, buf);
            }
            return Ok(());
        }
        let end = addr + buf.len() as u64;
        for index in addr / line..end.div_ceil(line) {
            let line_start = index * line;
            if let Some(data) = host.cache.lookup((id, index)) {
                copy_overlap(line_start, data, addr, buf);
                continue;
            }
            let (data, evicted) = host.cache.install((id, index));
            let fetched = self.fetch_line(line_start, data);
            if fetched.is_ok() {
                copy_overlap(line_start, data, addr, buf);
            } else {
                host.cache.forget((id, index));
            }
            if let Some(evicted) = evicted {
                host.write_line(evicted.key.0, evicted.key.1, &evicted.data).map_err(transport_of)?;
            }
            fetched?;
        }
        Ok(())
    }

    /// Fills a line buffer from memory; bytes past the address space are zero.
    fn fetch_line(&self, line_start: u64, data: &mut [u8]) -> Result<(), TransportError> {
        let capacity = self.snapshot.1.capacity();
        let len = (capacity.saturating_sub(line_start) as usize).min(data.len());
        data[len..].fill(0);
        self.read_direct(line_start, &mut data[..len])
    }

    fn write(&mut self, addr: u64, data: &[u8], old_len: u64, buffered: bool) -> Result<(), TransportError> {
        let mut host = self.cache.lock();
        let id = self.memory.id();
        let line = host.cache.line_bytes() as u64;
        let end = addr + data.len() as u64;
        if !buffered || data.len() >= host.cache.config().bypass_bytes() {
            if buffered {
                host.cache.count_bypass();
            }
            self.write_direct(addr, data)?;
            // Keep cached copies current; their dirty state is unchanged.
            for index in addr / line..end.div_ceil(line) {
                if let Some(cached) = host.cache.peek_mut((id, index)) {
                    copy_into(index * line, cached, addr, data);
                }
            }
            return Ok(());
        }
        for index in addr / line..end.div_ceil(line) {
            let line_start = index * line;
            if let Some(cached) = host.cache.lookup((id, index)) {
                copy_into(line_start, cached, addr, data);
                host.cache.mark_dirty((id, index));
                continue;
            }
            let covers_line = addr <= line_start && end >= line_start + line;
            let (slot, evicted) = host.cache.install((id, index));
            let filled = if covers_line {
                Ok(())
            } else if line_start < old_len {
                self.fetch_line(line_start, slot)
            } else {
                slot.fill(0);
                Ok(())
            };
            if filled.is_ok() {
                copy_into(line_start, slot, addr, data);
                host.cache.mark_dirty((id, index));
            } else {
                host.cache.forget((id, index));
            }
            if let Some(evicted) = evicted {
                host.write_line(evicted.key.0, evicted.key.1, &evicted.data).map_err(transport_of)?;
            }
            filled?;
        }
        Ok(())
    }
}

fn transport_of(e: ChannelError) -> TransportError {
    match e {
        ChannelError::Transport { source, .. } => source,
        other => TransportError::Disconnected(other.to_string()),
    }
}

/// Copies the part of a line (starting at virtual `line_start`) that overlaps
/// the access `[addr, addr + buf.len())` into `buf`.
fn copy_overlap(line_start: u64, line: &[u8], addr: u64, buf: &mut [u8]) {
    let start = line_start.max(addr);
    let end = (line_start + line.len() as u64).min(addr + buf.len() as u64);
    if start < end {
        let n = (end - start) as usize;
        let from = (start - line_start) as usize;
        let to = (start - addr) as usize;
        buf[to..to + n].copy_from_slice(&line[from..from + n]);
    }
}

/// Copies the part of `data` (written at `addr`) that overlaps a line into it.
fn copy_into(line_start: u64, line: &mut [u8], addr: u64, data: &[u8]) {
    let start = line_start.max(addr);
    let end = (line_start + line.len() as u64).min(addr + data.len() as u64);
    if start < end {
        let n = (end - start) as usize;
        let to = (start - line_start) as usize;
        let from = (start - addr) as usize;
        line[to..to + n].copy_from_slice(&data[from..from + n]);
    }
}
