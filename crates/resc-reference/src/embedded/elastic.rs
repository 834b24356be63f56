//! Elastic compute memory (paper §5.2.2): a compute instance's memory has no
//! limit while its slot stays fixed. Every instance runs with a far heap
//! ([`resc_swap`]) whose [`PressureGate`] keeps it closed while the instance
//! fits its slot; the first large allocation that would not fit turns swap
//! on, and from then on large allocations live in a far region whose
//! overflow goes to swap space: physical memory components placed in the
//! memory pool through the platform's scheduler and metered like any other.
//!
//! Creating a region costs tens to hundreds of µs (its page tables grow with
//! its virtual size), so a background thread keeps a few ready and an
//! instance takes one at start; a heap that never engaged goes back to the
//! ready set afterwards. A heap that engaged is dropped when its instance
//! ends, which frees its swap space within the invocation.
//!
//! Far heaps only receive allocations when the process's global allocator
//! is [`PlatformAllocator`](crate::alloc_meter::PlatformAllocator); with the
//! plain counting allocator, instances simply run over their slot (and are
//! flagged so by metering), as they did without swap.

use super::placer::Placer;
use crate::alloc_meter::{self, AllocationAccount};
use crate::metering::{InvocationMeter, PhysicalTicket};
use parking_lot::{Condvar, Mutex};
use resc_core::ids::{NodeId, RegionId};
use resc_core::inproc::InProcessMemory;
use resc_core::pool::{MemoryPool, PoolError};
use resc_core::resources::{Resources, GIB};
use resc_core::sandbox::ThreadAccount;
use resc_core::scheduler::{Placement, PlacementRequest, Pool};
use resc_core::transport::{RemoteRegion, Transport};
use resc_swap::{FarHeap, FarRegion, PressureGate, SwapConfig, SwapError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

/// How compute instances swap (part of
/// [`PlatformConfig`](super::PlatformConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SwapSettings {
    /// Virtual size of each instance's far region: the most an instance can
    /// hold beyond its slot. Reserving it costs no memory, but the region's
    /// tables grow with it (about 30 µs to create per GiB here).
    pub capacity_bytes: u64,
    /// Far heaps kept ready for starting instances.
    pub ready: usize,
}

impl Default for SwapSettings {
    /// 4 GiB per instance, two heaps ready.
    fn default() -> Self {
        SwapSettings { capacity_bytes: 4 * GIB, ready: 2 }
    }
}

/// Who a far heap's swap space is for while an instance holds it.
struct Owner {
    app: String,
    /// The metered name of the swap space: `<component>#swap`.
    name: String,
    /// Weak: the meter holds the heap while the instance runs, and the heap
    /// (through its region) this space.
    meter: Weak<InvocationMeter>,
    /// Where the instance runs: swap space is placed near it.
    node: NodeId,
}

/// A far region's swap space: physical memory components of the memory
/// pool, placed by the platform's scheduler and metered to the instance
/// holding the region.
pub(crate) struct SwapSpace {
    placer: Arc<Placer>,
    memory: Arc<BTreeMap<NodeId, Arc<InProcessMemory>>>,
    owner: Mutex<Option<Owner>>,
    held: Mutex<HashMap<(NodeId, RegionId), Held>>,
}

struct Held {
    placement: Placement,
    /// The meter and record of the invocation it was allocated in, while
    /// that invocation is metered.
    metered: Option<(Weak<InvocationMeter>, PhysicalTicket)>,
}

impl SwapSpace {
    fn bind(&self, owner: Owner) {
        *self.owner.lock() = Some(owner);
    }

    fn unbind(&self) {
        *self.owner.lock() = None;
    }
}

impl MemoryPool for SwapSpace {
    /// The compute node whose instance the swap space serves.
    fn node(&self) -> NodeId {
        self.owner.lock().as_ref().map_or(NodeId(0), |o| o.node)
    }

    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
        let owner = self.owner.lock();
        let Some(owner) = owner.as_ref() else {
            return Err(PoolError::System { bytes, reason: "the far region serves no instance".into() });
        };
        let refused = |free: u64| PoolError::OutOfMemory { node: owner.node, requested: bytes, free };
        let placement = self
            .placer
            .place(&PlacementRequest {
                app: owner.app.clone(),
                component: owner.name.clone(),
                pool: Pool::Memory,
                demand: Resources::memory(bytes),
                first_in_graph: false,
                triggered_from: None,
                peers_on: vec![owner.node],
            })
            .map_err(|_| refused(0))?;
        let allocated = match self.memory.get(&placement.node) {
            Some(node) => node.allocate(bytes),
            None => Err(refused(0)),
        };
        let region = match allocated {
            Ok(region) => region,
            Err(e) => {
                self.placer.release(&placement);
                return Err(e);
            }
        };
        let metered =
            owner.meter.upgrade().map(|meter| (owner.meter.clone(), meter.physical_allocated(&owner.name, bytes)));
        let held = Held { placement, metered };
        self.held.lock().insert((region.node, region.region), held);
        Ok(region)
    }

    fn free(&self, region: &RemoteRegion) -> Result<(), PoolError> {
        let held = self.held.lock().remove(&(region.node, region.region));
        let Some(held) = held else {
            return Err(PoolError::UnknownRegion { node: region.node, region: region.region });
        };
        let freed = match self.memory.get(&region.node) {
            Some(node) => node.free(region),
            None => Ok(()),
        };
        self.placer.release(&held.placement);
        if let Some((meter, ticket)) = held.metered {
            if let Some(meter) = meter.upgrade() {
                meter.physical_freed(ticket);
            }
        }
        freed
    }

    fn capacity_bytes(&self) -> u64 {
        self.memory.values().map(|m| m.capacity_bytes()).sum()
    }

    fn allocated_bytes(&self) -> u64 {
        self.held.lock().values().map(|h| h.placement.demand.memory_bytes).sum()
    }
}

/// One instance's far heap and its swap space.
pub(crate) struct Elastic {
    heap: FarHeap,
    space: Arc<SwapSpace>,
    /// The local memory its gate allows.
    slot: u64,
}

impl Elastic {
    /// The heap (cloned handles share it).
    pub(crate) fn heap(&self) -> &FarHeap {
        &self.heap
    }
}

/// The platform's far heaps: a few kept ready, one per running instance.
pub(crate) struct ElasticHeaps {
    settings: SwapSettings,
    slot: u64,
    segment: u64,
    placer: Arc<Placer>,
    memory: Arc<BTreeMap<NodeId, Arc<InProcessMemory>>>,
    transport: Arc<dyn Transport>,
    ready: Mutex<Vec<Elastic>>,
    /// Wakes the filler thread when a heap was taken.
    taken: Condvar,
    /// Why instances cannot swap here, once that is known.
    unavailable: Mutex<Option<String>>,
}

impl ElasticHeaps {
    /// Heaps of `settings.capacity_bytes` over a `slot`, with swap space in
    /// segments of `segment` bytes; starts the thread that keeps
    /// `settings.ready` of them ready.
    pub(crate) fn start(
        settings: SwapSettings,
        slot: u64,
        segment: u64,
        placer: Arc<Placer>,
        memory: Arc<BTreeMap<NodeId, Arc<InProcessMemory>>>,
        transport: Arc<dyn Transport>,
    ) -> Arc<ElasticHeaps> {
        let heaps = Arc::new(ElasticHeaps {
            settings,
            slot,
            segment,
            placer,
            memory,
            transport,
            ready: Mutex::new(Vec::new()),
            taken: Condvar::new(),
            unavailable: Mutex::new(None),
        });
        let unavailable = if !resc_swap::allocator_installed() {
            Some("the global allocator is not the PlatformAllocator, so no allocation can go far".to_owned())
        } else {
            FarRegion::probe().err().map(|e| e.to_string())
        };
        if let Some(reason) = unavailable {
            tracing::info!(%reason, "compute instances run without swap");
            *heaps.unavailable.lock() = Some(reason);
            return heaps;
        }
        // The first set is made now, so that it does not compete with the
        // platform's first invocations for the CPU; the filler keeps it up.
        for _ in 0..settings.ready {
            match heaps.create(slot) {
                Ok(elastic) => heaps.ready.lock().push(elastic),
                Err(_) => break,
            }
        }
        let weak = Arc::downgrade(&heaps);
        let _ = std::thread::Builder::new().name("resc-swap-ready".into()).spawn(move || fill(&weak));
        heaps
    }

    /// Why swap is off on this platform, if it is.
    pub(crate) fn unavailable(&self) -> Option<String> {
        self.unavailable.lock().clone()
    }

    fn create(&self, slot: u64) -> Result<Elastic, SwapError> {
        alloc_meter::uncharged(|| {
            let space = Arc::new(SwapSpace {
                placer: self.placer.clone(),
                memory: self.memory.clone(),
                owner: Mutex::new(None),
                held: Mutex::new(HashMap::new()),
            });
            let mut config = SwapConfig::new(self.settings.capacity_bytes, slot);
            config.segment_size = self.segment;
            let region = FarRegion::new(config, space.clone(), self.transport.clone())?;
            // A sixteenth of the slot stays for small allocations after swap is on.
            let gate =
                PressureGate { local_bytes: alloc_meter::current_thread_bytes, local_limit: slot, headroom: slot / 16 };
            Ok(Elastic { heap: FarHeap::with_pressure_gate(region, gate)?, space, slot })
        })
    }

    /// A far heap for an instance of `component` of `app` starting on
    /// `node` with `slot` bytes of local memory, its swap space metered by
    /// `meter`; `None` when swap is off here (no userfaultfd, or too many
    /// heaps at once). Heaps kept ready are for the platform's slot; another
    /// slot gets a heap made now.
    pub(crate) fn take(
        &self,
        app: &str,
        component: &str,
        slot: u64,
        node: NodeId,
        meter: &Arc<InvocationMeter>,
    ) -> Option<Elastic> {
        if self.unavailable.lock().is_some() {
            return None;
        }
        let ready = if slot == self.slot {
            let mut ready = self.ready.lock();
            let taken = ready.pop();
            // Wake the filler only when the set runs low: a wake-up costs
            // the starting instance a core on a small machine.
            if ready.len() < self.settings.ready {
                self.taken.notify_one();
            }
            taken
        } else {
            None
        };
        let elastic = match ready {
            Some(elastic) => elastic,
            None => match self.create(slot) {
                Ok(elastic) => elastic,
                Err(e) => {
                    tracing::warn!(error = %e, component, "instance runs without swap");
                    return None;
                }
            },
        };
        elastic.space.bind(Owner {
            app: app.to_owned(),
            name: format!("{component}#swap"),
            meter: Arc::downgrade(meter),
            node,
        });
        Some(elastic)
    }

    /// Takes a heap back when its instance ended: one that never engaged is
    /// kept ready; one that did is dropped (its swap space freed now, or
    /// once the last block it holds, a code piece's output say, is freed).
    pub(crate) fn give_back(&self, elastic: Elastic) {
        // Nothing more is metered to the finished instance, even if a block
        // it leaked keeps its heap alive.
        elastic.space.unbind();
        let reusable = elastic.slot == self.slot && !elastic.heap.is_engaged() && elastic.heap.allocated_bytes() == 0;
        if !reusable || elastic.heap.check().is_err() {
            return;
        }
        // Taken back even when the filler has topped the set up meanwhile:
        // reusing a heap costs nothing, making one and dropping another
        // costs a region's set-up and tear-down. Twice the set is kept.
        let mut ready = self.ready.lock();
        if ready.len() < 2 * self.settings.ready.max(1) {
            ready.push(elastic);
            return;
        }
        drop(ready);
        drop(elastic);
    }
}

/// Keeps `settings.ready` heaps ready while the platform lives.
fn fill(heaps: &Weak<ElasticHeaps>) {
    loop {
        let Some(heaps) = heaps.upgrade() else { return };
        if heaps.ready.lock().len() < heaps.settings.ready {
            match heaps.create(heaps.slot) {
                Ok(elastic) => heaps.ready.lock().push(elastic),
                // Too many heaps alive at once: try again later.
                Err(e @ SwapError::TooManyHeaps(_)) => {
                    tracing::debug!(error = %e, "no far heap made ready");
                    let mut ready = heaps.ready.lock();
                    heaps.taken.wait_for(&mut ready, std::time::Duration::from_millis(200));
                }
                // Anything else (no userfaultfd, a configuration the region
                // refuses) would fail again.
                Err(e) => {
                    tracing::warn!(error = %e, "compute instances run without swap");
                    *heaps.unavailable.lock() = Some(e.to_string());
                    return;
                }
            }
            continue;
        }
        let mut ready = heaps.ready.lock();
        if ready.len() >= heaps.settings.ready {
            // Wakes up now and then to notice that the platform is gone.
            heaps.taken.wait_for(&mut ready, std::time::Duration::from_millis(200));
        }
    }
}

/// A compute instance's account: its allocations are counted for metering
/// and, under memory pressure, its large ones go to its far heap.
pub(crate) struct InstanceAccount {
    pub(crate) allocations: Arc<AllocationAccount>,
    pub(crate) heap: Option<FarHeap>,
}

impl ThreadAccount for InstanceAccount {
    fn enter(&self) {
        self.allocations.enter();
        if let Some(heap) = &self.heap {
            ThreadAccount::enter(heap);
        }
    }

    fn leave(&self) {
        if let Some(heap) = &self.heap {
            ThreadAccount::leave(heap);
        }
        self.allocations.leave();
    }
}
