//! The handle a code piece runs with.

use super::channel::ChannelKind;
use super::peer::{PeerChannel, Stash};
use super::remote::{CacheHost, RemoteChannel};
use super::{Bindings, Channel, ChannelError};
use crate::graph::ComponentRef;
use crate::ids::{ComputeId, Endpoint};
use crate::memory::{CacheStats, LineCache};
use crate::runtime::MemoryHandle;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a running code piece instance knows and can reach.
pub struct Context {
    bindings: Arc<Bindings>,
    component: ComputeId,
    instance: u32,
    inputs: Vec<Vec<u8>>,
    cache: Option<Arc<Mutex<CacheHost>>>,
    /// The data path to memory components: the bindings' unless replaced
    /// with [`with_transport`](Context::with_transport).
    transport: Arc<dyn crate::transport::Transport>,
    stash: Stash,
    recv_timeout: Arc<Mutex<Duration>>,
    /// Bytes moved per target component, over every channel opened to it.
    traffic: BTreeMap<String, Arc<AtomicU64>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("component", &self.name())
            .field("instance", &self.instance)
            .field("inputs", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

/// How long `recv` waits by default.
const DEFAULT_RECV_TIMEOUT: Duration = Duration::from_secs(30);

impl Context {
    /// The context of instance `instance` of `component`, with the outputs of
    /// the instances that triggered it (or the invocation's input) as inputs.
    pub fn new(bindings: Arc<Bindings>, component: ComputeId, instance: u32, inputs: Vec<Vec<u8>>) -> Self {
        Context {
            transport: bindings.transport().clone(),
            bindings,
            component,
            instance,
            inputs,
            // Created at the first remote channel; its lines are allocated on
            // the code piece's own thread, so its memory is charged to the piece.
            cache: None,
            stash: Stash::default(),
            recv_timeout: Arc::new(Mutex::new(DEFAULT_RECV_TIMEOUT)),
            traffic: BTreeMap::new(),
        }
    }

    /// Uses `transport` to reach memory components: a data path of this
    /// instance's own (its own connections, set up while its code loads).
    /// Messages still go through the bindings' transport.
    pub fn with_transport(mut self, transport: Arc<dyn crate::transport::Transport>) -> Self {
        self.transport = transport;
        self
    }

    /// The compute component this instance belongs to.
    pub fn component(&self) -> ComputeId {
        self.component
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.bindings.graph().compute(self.component).name
    }

    /// This instance's index, from 0.
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// How many instances of this component run.
    pub fn parallelism(&self) -> u32 {
        self.bindings.graph().compute(self.component).parallelism
    }

    /// The outputs of every instance that triggered this one, in trigger-edge
    /// and instance order; for an entry point, the invocation's input alone.
    pub fn inputs(&self) -> &[Vec<u8>] {
        &self.inputs
    }

    /// The first input, or nothing.
    pub fn input(&self) -> &[u8] {
        self.inputs.first().map_or(&[], Vec::as_slice)
    }

    /// Sets how long `recv` waits before it fails with a timeout, on every
    /// channel of this context, open or not.
    pub fn set_recv_timeout(&mut self, timeout: Duration) {
        *self.recv_timeout.lock() = timeout;
    }

    /// The local cache's counters (zero when aggregated).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.as_ref().map(|c| c.lock().stats()).unwrap_or_default()
    }

    /// Opens a channel to a memory component this component accesses, or to
    /// a compute component it exchanges messages with.
    pub fn channel(&mut self, name: &str) -> Result<Channel, ChannelError> {
        let target = self.bindings.resolve(self.component, name)?;
        let kind = match target {
            ComponentRef::Memory(id) => match self.bindings.memory(id) {
                Some(MemoryHandle::Remote(memory)) => {
                    let transport = self.transport.clone();
                    // Bindings with remote memory always configure a cache.
                    let config = self.bindings.cache_config().unwrap_or_default();
                    let cache = self
                        .cache
                        .get_or_insert_with(|| {
                            Arc::new(Mutex::new(CacheHost::new(LineCache::new(config), transport.clone())))
                        })
                        .clone();
                    cache.lock().register(memory.clone());
                    ChannelKind::Remote(Box::new(RemoteChannel::new(memory, cache, transport)))
                }
                Some(MemoryHandle::Local(memory)) => ChannelKind::Local(memory),
                None => return Err(ChannelError::Released { component: name.to_owned() }),
            },
            ComponentRef::Compute(peer) => ChannelKind::Peer(PeerChannel {
                me: Endpoint {
                    invocation: self.bindings.invocation(),
                    component: self.component,
                    instance: self.instance,
                },
                peer,
                parallelism: self.bindings.graph().compute(peer).parallelism,
                transport: self.bindings.transport().clone(),
                stash: self.stash.clone(),
                timeout: self.recv_timeout.clone(),
            }),
        };
        let traffic = self.traffic.entry(name.to_owned()).or_default().clone();
        Ok(Channel::new(name.to_owned(), self.bindings.kind_of(target), kind, traffic))
    }

    /// Bytes this instance moved per component it reached: read from and
    /// written to each memory component, sent to each compute peer (what
    /// crosses the network when they run apart, and what aggregating them
    /// saves). Counted the same way aggregated or not, whatever the cache
    /// served.
    pub fn traffic(&self) -> BTreeMap<String, u64> {
        self.traffic.iter().map(|(name, bytes)| (name.clone(), bytes.load(Ordering::Relaxed))).collect()
    }

    /// Writes back every buffered write of every channel.
    pub fn sync_all(&mut self) -> Result<(), ChannelError> {
        match &self.cache {
            Some(cache) => cache.lock().flush(None),
            None => Ok(()),
        }
    }
}
