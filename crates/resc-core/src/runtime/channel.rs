//! Channels: the runtime's data operations on one target component.

use super::peer::PeerChannel;
use super::remote::RemoteChannel;
use super::ChannelError;
use crate::graph::ComponentKind;
use crate::memory::{LocalError, LocalMemory, ProvisionError, StateError};
use crate::transport::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) enum ChannelKind {
    Remote(Box<RemoteChannel>),
    Local(Arc<LocalMemory>),
    Peer(PeerChannel),
}

/// An asynchronous read: [`Channel::sync`] waits for it and returns its bytes.
#[derive(Debug)]
#[must_use = "sync the read to get its bytes"]
pub struct PendingRead {
    state: ReadState,
}

#[derive(Debug)]
enum ReadState {
    /// Done when posted (served from the cache or the sandbox).
    Ready(Vec<u8>),
    /// Running on the instance's I/O thread.
    InFlight(crossbeam_channel::Receiver<Result<Vec<u8>, ChannelError>>),
}

impl PendingRead {
    pub(crate) fn ready(buf: Vec<u8>) -> Self {
        PendingRead { state: ReadState::Ready(buf) }
    }

    pub(crate) fn in_flight(done: crossbeam_channel::Receiver<Result<Vec<u8>, ChannelError>>) -> Self {
        PendingRead { state: ReadState::InFlight(done) }
    }
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
    fn complete(self, channel: &mut Channel) -> Result<Vec<u8>, ChannelError> {
        match self.state {
            ReadState::Ready(buf) => Ok(buf),
            ReadState::InFlight(done) => done.recv().unwrap_or_else(|_| {
                Err(ChannelError::Transport {
                    component: channel.name.clone(),
                    source: crate::transport::TransportError::Disconnected("the I/O thread ended".into()),
                })
            }),
        }
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
/// `sync`, `flush`, `resize`, `release`, `len`. On a compute component:
/// `send`, `send_to`, `recv`, `recv_message`. The other operations fail with
/// [`ChannelError::WrongKind`].
///
/// Parallel instances sharing a memory component each have their own cache,
/// and the runtime does not keep caches coherent (as in the paper): share
/// read-only or sharded data, or `sync` and coordinate by messages. Buffered
/// writes are written back byte for byte, so instances that write disjoint
/// bytes (even within one cache line) never overwrite each other.
pub struct Channel {
    name: String,
    kind_of_target: ComponentKind,
    kind: ChannelKind,
    /// Bytes this instance moved over the channel: read and written on a
    /// memory component, sent on a message channel.
    traffic: Arc<AtomicU64>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("target", &self.name).field("kind", &self.kind_of_target).finish()
    }
}

pub(crate) fn state_error(name: &str, e: StateError, wanted: u64) -> ChannelError {
    let component = name.to_owned();
    match e {
        StateError::Released => ChannelError::Released { component },
        StateError::Provision(source @ ProvisionError::BudgetExceeded { .. }) => {
            ChannelError::BudgetExceeded { component, wanted, source }
        }
        StateError::Provision(source) => ChannelError::GrowthFailed { component, wanted, source },
    }
}

fn local_error(name: &str, e: LocalError, addr: u64, len: usize) -> ChannelError {
    match e {
        LocalError::Released => ChannelError::Released { component: name.to_owned() },
        LocalError::OutOfRange { size } => {
            ChannelError::OutOfRange { component: name.to_owned(), addr, len: len as u64, size }
        }
        LocalError::Provision(e) => state_error(name, StateError::Provision(e), addr.saturating_add(len as u64)),
    }
}

impl Channel {
    pub(crate) fn new(name: String, kind_of_target: ComponentKind, kind: ChannelKind, traffic: Arc<AtomicU64>) -> Self {
        Channel { name, kind_of_target, kind, traffic }
    }

    fn count(&self, bytes: usize) {
        self.traffic.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The target component's name.
    pub fn target(&self) -> &str {
        &self.name
    }

    fn wrong(&self, operation: &'static str) -> ChannelError {
        ChannelError::WrongKind { component: self.name.clone(), operation, kind: self.kind_of_target }
    }

    /// Bytes in use in the memory component (0 for a message channel).
    pub fn len(&self) -> u64 {
        match &self.kind {
            ChannelKind::Remote(r) => r.len(),
            ChannelKind::Local(m) => m.len(),
            ChannelKind::Peer(_) => 0,
        }
    }

    /// Whether the memory component holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `buf.len()` bytes at `addr`. Small reads go through the local
    /// cache; reads of a quarter of the cache or more go straight to memory
    /// (and still see this instance's buffered writes).
    ///
    /// Once two reads in a row continue each other, the channel fetches the
    /// bytes that follow on the instance's I/O thread, up to
    /// [`CacheConfig::read_ahead_bytes`](crate::memory::CacheConfig::read_ahead_bytes)
    /// in two windows, while the code piece computes; the next reads take
    /// their bytes from there. Only transports that copy (TCP, RDMA) fetch
    /// ahead; a write by this instance to the component drops what was
    /// fetched ahead of it.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ChannelError> {
        self.count(buf.len());
        match &mut self.kind {
            ChannelKind::Local(m) => m.read(addr, buf).map_err(|e| local_error(&self.name, e, addr, buf.len())),
            ChannelKind::Remote(r) => r.read(addr, buf),
            ChannelKind::Peer(_) => Err(self.wrong("read")),
        }
    }

    /// Lends `len` bytes at `addr` to `f` without copying them where the
    /// medium allows: from the local cache when one cached line holds them,
    /// from the memory component itself when the transport maps it (the
    /// in-process and shared-memory transports) or when the component lives
    /// in the sandbox; otherwise from a buffer the channel reuses, filled by
    /// one read. `f` sees this instance's buffered writes.
    pub fn read_with<T>(&mut self, addr: u64, len: usize, f: impl FnOnce(&[u8]) -> T) -> Result<T, ChannelError> {
        self.count(len);
        match &mut self.kind {
            ChannelKind::Local(m) => m.read_with(addr, len, f).map_err(|e| local_error(&self.name, e, addr, len)),
            ChannelKind::Remote(r) => r.read_with(addr, len, f),
            ChannelKind::Peer(_) => Err(self.wrong("read")),
        }
    }

    /// Writes `data` at `addr` and returns once it is in memory. A write past
    /// the end first grows the component (initial size, then increments)
    /// within the application's budget; if growth fails nothing is written.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), ChannelError> {
        self.write_inner(addr, data, false)
    }

    /// Starts a read of `len` bytes at `addr` into a buffer of its own; `sync`
    /// waits for it and returns the bytes. A read of a quarter of the cache
    /// or more runs on the instance's I/O thread, overlapping whatever the
    /// code piece does meanwhile; a smaller one is served through the cache
    /// at once. As with any asynchronous read, writing the same bytes before
    /// `sync` races with it; buffered writes to them are seen.
    pub fn read_async(&mut self, addr: u64, len: usize) -> Result<PendingRead, ChannelError> {
        // Check the range before allocating: a bad length must not abort the process.
        self.check_range(addr, len)?;
        self.read_async_into(addr, vec![0; len])
    }

    /// Like [`read_async`](Self::read_async), reusing `buf` (its length is the read's length).
    pub fn read_async_into(&mut self, addr: u64, mut buf: Vec<u8>) -> Result<PendingRead, ChannelError> {
        if let ChannelKind::Remote(r) = &mut self.kind {
            self.traffic.fetch_add(buf.len() as u64, Ordering::Relaxed);
            return r.read_async(addr, buf);
        }
        self.read(addr, &mut buf)?;
        Ok(PendingRead::ready(buf))
    }

    fn check_range(&mut self, addr: u64, len: usize) -> Result<(), ChannelError> {
        match &mut self.kind {
            ChannelKind::Remote(r) => r.check_range(addr, len),
            ChannelKind::Local(m) => {
                let size = m.len();
                if m.is_released() {
                    Err(ChannelError::Released { component: self.name.clone() })
                } else if addr.checked_add(len as u64).is_none_or(|end| end > size) {
                    Err(ChannelError::OutOfRange { component: self.name.clone(), addr, len: len as u64, size })
                } else {
                    Ok(())
                }
            }
            ChannelKind::Peer(_) => Err(self.wrong("read")),
        }
    }

    /// Buffers a write; it reaches memory on `sync`, on eviction, or when
    /// the code piece returns, at the latest. Growth happens now, so a budget
    /// error is reported here.
    ///
    /// A write of a quarter of the cache or more, and buffered writes once
    /// they fill a quarter of the cache, leave for memory on the instance's
    /// I/O thread at once (write-behind), overlapping what the code piece
    /// does next. A write-behind that fails is written again at the next
    /// `sync` (or before this instance next reads from memory); its error is
    /// reported there, and its bytes are kept until they are written.
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
            ChannelKind::Remote(r) => r.flush(),
            ChannelKind::Local(_) => Ok(()),
            ChannelKind::Peer(_) => Err(self.wrong("sync")),
        }
    }

    fn write_inner(&mut self, addr: u64, data: &[u8], buffered: bool) -> Result<(), ChannelError> {
        if addr.checked_add(data.len() as u64).is_none() {
            let size = self.len();
            return Err(ChannelError::OutOfRange { component: self.name.clone(), addr, len: data.len() as u64, size });
        }
        self.count(data.len());
        match &mut self.kind {
            ChannelKind::Local(m) => m.write(addr, data).map_err(|e| local_error(&self.name, e, addr, data.len())),
            ChannelKind::Remote(r) => r.write(addr, data, buffered),
            ChannelKind::Peer(_) => Err(self.wrong("write")),
        }
    }

    /// Sets the component's size: growing provisions physical components,
    /// shrinking frees those wholly past the new end. Buffered writes are
    /// written back first. Bytes between the old and the new end read as
    /// zeros when the component grows again, as if never written.
    pub fn resize(&mut self, len: u64) -> Result<(), ChannelError> {
        match &mut self.kind {
            ChannelKind::Local(m) => m.resize(len).map_err(|e| local_error(&self.name, e, len, 0)),
            ChannelKind::Remote(r) => r.resize(len),
            ChannelKind::Peer(_) => Err(self.wrong("resize")),
        }
    }

    /// Frees the component now, before its span would end. Buffered writes
    /// are discarded. Any later access by any instance fails with `Released`.
    pub fn release(self) -> Result<(), ChannelError> {
        match &self.kind {
            ChannelKind::Local(m) => m.release(),
            ChannelKind::Remote(r) => r.release(),
            ChannelKind::Peer(_) => return Err(self.wrong("release")),
        }
        Ok(())
    }

    /// Sends a message to the peer instance with this instance's index
    /// (modulo the peer's parallelism).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        self.count(payload.len());
        match &self.kind {
            ChannelKind::Peer(p) => p.send_to(&self.name, p.default_instance(), payload),
            _ => Err(self.wrong("send")),
        }
    }

    /// Sends a message to one instance of the peer.
    pub fn send_to(&mut self, instance: u32, payload: &[u8]) -> Result<(), ChannelError> {
        self.count(payload.len());
        match &self.kind {
            ChannelKind::Peer(p) => p.send_to(&self.name, instance, payload),
            _ => Err(self.wrong("send")),
        }
    }

    /// Receives the next message from any instance of the peer, waiting at
    /// most the context's receive timeout.
    pub fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        self.recv_message().map(|m| m.payload)
    }

    /// Like [`recv`](Self::recv), also telling which instance sent it.
    pub fn recv_message(&mut self) -> Result<Message, ChannelError> {
        match &self.kind {
            ChannelKind::Peer(p) => p.recv(&self.name),
            _ => Err(self.wrong("recv")),
        }
    }
}
