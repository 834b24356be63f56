//! What a name resolves to within one invocation.

use super::ChannelError;
use crate::graph::{ComponentKind, ComponentRef, ResourceGraph};
use crate::ids::{ComputeId, InvocationId, MemoryId};
use crate::memory::{CacheConfig, LocalBudget, LocalMemory, Provisioner, VirtualMemory};
use crate::transport::Transport;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A memory component of one invocation, wherever it lives.
#[derive(Debug, Clone)]
pub enum MemoryHandle {
    /// Disaggregated: physical components in the memory pool.
    Remote(Arc<VirtualMemory>),
    /// Aggregated: inside the sandbox.
    Local(Arc<LocalMemory>),
}

impl MemoryHandle {
    /// Bytes in use.
    pub fn len(&self) -> u64 {
        match self {
            MemoryHandle::Remote(m) => m.len(),
            MemoryHandle::Local(m) => m.len(),
        }
    }

    /// Whether nothing is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frees the component.
    pub fn release(&self) {
        match self {
            MemoryHandle::Remote(m) => m.release(),
            MemoryHandle::Local(m) => m.release(),
        }
    }
}

enum Placement {
    Remote {
        provisioner: Arc<dyn Provisioner>,
        cache: CacheConfig,
    },
    /// In the sandbox, within the application's budget cap.
    Local(Arc<LocalBudget>),
}

/// Which memory components live now, and which have lived.
#[derive(Default)]
struct Spans {
    open: HashMap<MemoryId, MemoryHandle>,
    ended: HashSet<MemoryId>,
    closed: bool,
}

/// The components of one invocation as its code pieces see them: the graph,
/// the transport, and each memory component, created at its first access.
pub struct Bindings {
    graph: Arc<ResourceGraph>,
    invocation: InvocationId,
    transport: Arc<dyn Transport>,
    placement: Placement,
    spans: Mutex<Spans>,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings")
            .field("app", &self.graph.app())
            .field("invocation", &self.invocation)
            .field("open_spans", &self.spans.lock().open.len())
            .finish_non_exhaustive()
    }
}

impl Bindings {
    /// Disaggregated bindings: memory components grow through `provisioner`
    /// and are reached through `transport`, each compute instance with a local cache.
    pub fn remote(
        graph: Arc<ResourceGraph>,
        invocation: InvocationId,
        transport: Arc<dyn Transport>,
        provisioner: Arc<dyn Provisioner>,
        cache: CacheConfig,
    ) -> Arc<Self> {
        Arc::new(Bindings {
            graph,
            invocation,
            transport,
            placement: Placement::Remote { provisioner, cache },
            spans: Mutex::new(Spans::default()),
        })
    }

    /// Aggregated bindings: memory components live in the sandbox's own
    /// memory, their lengths together within the graph's budget cap;
    /// messages still travel over an in-process fabric.
    pub fn local(graph: Arc<ResourceGraph>, invocation: InvocationId) -> Arc<Self> {
        Self::local_with_transport(graph, invocation, Arc::new(crate::inproc::InProcessFabric::new()))
    }

    /// Aggregated bindings whose messages use `transport`.
    pub fn local_with_transport(
        graph: Arc<ResourceGraph>,
        invocation: InvocationId,
        transport: Arc<dyn Transport>,
    ) -> Arc<Self> {
        let budget = Arc::new(LocalBudget::new(graph.budget_bytes()));
        Arc::new(Bindings {
            graph,
            invocation,
            transport,
            placement: Placement::Local(budget),
            spans: Mutex::new(Spans::default()),
        })
    }

    /// The graph.
    pub fn graph(&self) -> &Arc<ResourceGraph> {
        &self.graph
    }

    /// The invocation.
    pub fn invocation(&self) -> InvocationId {
        self.invocation
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The cache each compute instance gets, or `None` when aggregated.
    pub fn cache_config(&self) -> Option<CacheConfig> {
        match &self.placement {
            Placement::Remote { cache, .. } => Some(*cache),
            Placement::Local(_) => None,
        }
    }

    /// Resolves `name` for `caller`, checking that the graph connects them.
    pub(crate) fn resolve(&self, caller: ComputeId, name: &str) -> Result<ComponentRef, ChannelError> {
        let target = self.graph.find(name).ok_or_else(|| ChannelError::UnknownComponent { name: name.to_owned() })?;
        let connected = match target {
            ComponentRef::Memory(m) => self.graph.accesses(caller).contains(&m),
            ComponentRef::Compute(c) => self.graph.peers(caller).contains(&c),
        };
        if !connected {
            return Err(ChannelError::NotConnected {
                from: self.graph.compute(caller).name.clone(),
                to: name.to_owned(),
            });
        }
        Ok(target)
    }

    /// The memory component, created on its first access (the start of its
    /// span); `None` once its span has ended (or every span has).
    pub fn memory(&self, id: MemoryId) -> Option<MemoryHandle> {
        let mut spans = self.spans.lock();
        if spans.closed || spans.ended.contains(&id) {
            return None;
        }
        let handle = spans.open.entry(id).or_insert_with(|| match &self.placement {
            Placement::Remote { provisioner, .. } => {
                let spec = self.graph.memory(id);
                MemoryHandle::Remote(Arc::new(VirtualMemory::new(
                    id,
                    spec.name.clone(),
                    spec.initial_bytes,
                    spec.increment_bytes,
                    provisioner.clone(),
                )))
            }
            Placement::Local(budget) => MemoryHandle::Local(Arc::new(LocalMemory::with_budget(budget.clone()))),
        });
        Some(handle.clone())
    }

    /// The memory component if its span has started and not ended.
    pub fn existing_memory(&self, id: MemoryId) -> Option<MemoryHandle> {
        self.spans.lock().open.get(&id).cloned()
    }

    /// Ends a memory component's span: frees it. Called by the platform when
    /// the last accessing compute component ends.
    pub fn end_span(&self, id: MemoryId) {
        let handle = {
            let mut spans = self.spans.lock();
            spans.ended.insert(id);
            spans.open.remove(&id)
        };
        if let Some(handle) = handle {
            handle.release();
        }
    }

    /// Discards a memory component that was lost: frees what is left of its
    /// physical components and forgets it, so that its next access starts it
    /// again, empty, even after its span ended. Channels opened on the old
    /// component fail with `Released`.
    pub fn reset(&self, id: MemoryId) {
        let handle = {
            let mut spans = self.spans.lock();
            spans.ended.remove(&id);
            spans.open.remove(&id)
        };
        if let Some(handle) = handle {
            handle.release();
        }
    }

    /// Ends every span, open or not yet started (the invocation is over or failed).
    pub fn end_all(&self) {
        let handles: Vec<MemoryHandle> = {
            let mut spans = self.spans.lock();
            spans.closed = true;
            spans.open.drain().map(|(_, h)| h).collect()
        };
        for handle in handles {
            handle.release();
        }
    }

    pub(crate) fn kind_of(&self, target: ComponentRef) -> ComponentKind {
        match target {
            ComponentRef::Compute(_) => ComponentKind::Compute,
            ComponentRef::Memory(_) => ComponentKind::Memory,
        }
    }
}
