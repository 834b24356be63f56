//! Virtual memory components: address mapping onto physical components,
//! growth on demand, and the compute side's local cache.

mod address_map;
mod cache;
mod local;
mod virtual_memory;

pub use address_map::{AddressMap, Piece};
pub use cache::{CacheConfig, CacheStats, LineCache};
pub(crate) use cache::{DirtyRange, LineKey};
pub use local::LocalMemory;
pub(crate) use local::{LocalBudget, LocalError};
pub use virtual_memory::{ProvisionError, Provisioner, VirtualMemory};
pub(crate) use virtual_memory::{Snapshot, StateError};
