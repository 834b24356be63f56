//! Growth of memory components on the embedded cluster: size classes,
//! budget cap, pool-aware placement, allocation and metering.

use super::placer::Placer;
use crate::alloc_meter;
use crate::metering::{InvocationMeter, PhysicalTicket};
use parking_lot::Mutex;
use resc_core::graph::ResourceGraph;
use resc_core::ids::{MemoryId, NodeId, RegionId};
use resc_core::inproc::InProcessMemory;
use resc_core::memory::{ProvisionError, Provisioner};
use resc_core::pool::MemoryPool;
use resc_core::resources::Resources;
use resc_core::scheduler::{Placement, PlacementRequest, Pool};
use resc_core::size_class::SizeClasses;
use resc_core::transport::RemoteRegion;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
struct Held {
    bytes: u64,
    regions: HashMap<(NodeId, RegionId), (Placement, PhysicalTicket)>,
}

/// The [`Provisioner`] of one invocation on the embedded cluster.
pub(crate) struct ClusterProvisioner {
    graph: Arc<ResourceGraph>,
    classes: SizeClasses,
    scheduler: Arc<Placer>,
    memory: Arc<BTreeMap<NodeId, Arc<InProcessMemory>>>,
    meter: Arc<InvocationMeter>,
    held: Mutex<Held>,
}

impl ClusterProvisioner {
    pub(crate) fn new(
        graph: Arc<ResourceGraph>,
        classes: SizeClasses,
        scheduler: Arc<Placer>,
        memory: Arc<BTreeMap<NodeId, Arc<InProcessMemory>>>,
        meter: Arc<InvocationMeter>,
    ) -> Self {
        ClusterProvisioner { graph, classes, scheduler, memory, meter, held: Mutex::new(Held::default()) }
    }
}

// Provisioning runs on the code piece's thread; its bookkeeping (placements,
// region tables, meter records) is the platform's, not the piece's: it is
// kept off the piece's allocation account.
impl Provisioner for ClusterProvisioner {
    fn provision(&self, component: MemoryId, bytes: u64) -> Result<RemoteRegion, ProvisionError> {
        alloc_meter::uncharged(|| self.provision_uncharged(component, bytes))
    }

    fn reclaim(&self, component: MemoryId, region: &RemoteRegion) {
        alloc_meter::uncharged(|| self.reclaim_uncharged(component, region));
    }

    fn observe_len(&self, component: MemoryId, len: u64) {
        alloc_meter::uncharged(|| self.meter.memory_len(&self.graph.memory(component).name, len));
    }
}

impl ClusterProvisioner {
    fn provision_uncharged(&self, component: MemoryId, bytes: u64) -> Result<RemoteRegion, ProvisionError> {
        let class = self.classes.round_up(bytes);
        let cap = self.graph.budget_bytes();
        let mut held = self.held.lock();
        if held.bytes + class > cap {
            return Err(ProvisionError::BudgetExceeded { requested: class, held: held.bytes, cap });
        }
        let name = &self.graph.memory(component).name;
        let request = PlacementRequest {
            app: self.graph.app().to_owned(),
            component: name.clone(),
            pool: Pool::Memory,
            demand: Resources::memory(class),
            first_in_graph: false,
            triggered_from: None,
            peers_on: Vec::new(),
        };
        let placement = self.scheduler.place(&request).map_err(|_| ProvisionError::NoCapacity { requested: class })?;
        let allocated = match self.memory.get(&placement.node) {
            Some(node) => node.allocate(class).map_err(ProvisionError::from),
            None => Err(ProvisionError::NoCapacity { requested: class }),
        };
        let region = match allocated {
            Ok(region) => region,
            Err(e) => {
                self.scheduler.release(&placement);
                return Err(e);
            }
        };
        let ticket = self.meter.physical_allocated(name, class);
        held.bytes += class;
        held.regions.insert((region.node, region.region), (placement, ticket));
        Ok(region)
    }

    fn reclaim_uncharged(&self, _component: MemoryId, region: &RemoteRegion) {
        let mut held = self.held.lock();
        let Some((placement, ticket)) = held.regions.remove(&(region.node, region.region)) else {
            return;
        };
        held.bytes -= region.len;
        drop(held);
        if let Some(node) = self.memory.get(&region.node) {
            // This provisioner allocated the region with this key; an error
            // would mean it is already gone, and there is nothing more to free.
            let _ = node.free(region);
        }
        self.scheduler.release(&placement);
        self.meter.physical_freed(ticket);
    }
}
