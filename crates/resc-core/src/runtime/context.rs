//! The handle a code piece runs with.

use super::channel::{CacheHost, ChannelKind, PeerState};
use super::{Bindings, Channel, ChannelError};
use crate::graph::ComponentRef;
use crate::ids::{ComputeId, Endpoint};
use crate::memory::{CacheStats, LineCache};
use crate::runtime::MemoryHandle;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// What a running code piece instance knows and can reach.
pub struct Context {
    bindings: Arc<Bindings>,
    component: ComputeId,
    instance: u32,
    inputs: Vec<Vec<u8>>,
    cache: Option<Arc<Mutex<CacheHost>>>,
    peers: Arc<Mutex<PeerState>>,
    recv_timeout: Arc<Mutex<Duration>>,
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
        let me = Endpoint { invocation: bindings.invocation(), component, instance };
        // The cache itself allocates its lines lazily, on the code piece's own
        // thread, so its memory is accounted to the code piece.
        let cache = bindings
            .cache_config()
            .map(|config| Arc::new(Mutex::new(CacheHost::new(LineCache::new(config), bindings.transport().clone()))));
        Context {
            bindings,
            component,
            instance,
            inputs,
            cache,
            peers: Arc::new(Mutex::new(PeerState::new(me))),
            recv_timeout: Arc::new(Mutex::new(DEFAULT_RECV_TIMEOUT)),
        }
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
                MemoryHandle::Remote(memory) => {
                    let transport = self.bindings.transport().clone();
                    let cache = self
                        .cache
                        .get_or_insert_with(|| {
                            Arc::new(Mutex::new(CacheHost::new(LineCache::new(Default::default()), transport.clone())))
                        })
                        .clone();
                    cache.lock().register(memory.clone());
                    ChannelKind::remote(memory, cache, transport)
                }
                MemoryHandle::Local(memory) => ChannelKind::Local(memory),
            },
            ComponentRef::Compute(peer) => ChannelKind::Peer {
                peer,
                parallelism: self.bindings.graph().compute(peer).parallelism,
                transport: self.bindings.transport().clone(),
                state: self.peers.clone(),
                timeout: self.recv_timeout.clone(),
            },
        };
        Ok(Channel::new(name.to_owned(), self.bindings.kind_of(target), kind))
    }

    /// Writes back every buffered write of every channel.
    pub fn sync_all(&mut self) -> Result<(), ChannelError> {
        match &self.cache {
            Some(cache) => cache.lock().flush_all(),
            None => Ok(()),
        }
    }
}
