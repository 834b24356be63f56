//! Identifiers shared by the model, the traits and the platform.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

numeric_id!(
    /// A compute component's index in its [`ResourceGraph`](crate::graph::ResourceGraph).
    ComputeId(u32), "c"
);
numeric_id!(
    /// A memory component's index in its [`ResourceGraph`](crate::graph::ResourceGraph).
    MemoryId(u32), "m"
);
numeric_id!(
    /// One invocation of a deployed application.
    InvocationId(u64), "inv"
);
numeric_id!(
    /// A rack of nodes.
    RackId(u32), "rack"
);
numeric_id!(
    /// A node (server) of the cluster.
    NodeId(u32), "node"
);
numeric_id!(
    /// A physical memory component (a registered region) on a memory node.
    RegionId(u64), "region"
);
numeric_id!(
    /// A deployed application.
    AppId(u64), "app"
);

/// The secret that grants access to one physical memory component.
///
/// Issued by the memory side when the region is allocated and handed only to
/// components of the owning application, like an RDMA rkey. It is printed
/// redacted so that logs never leak it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessKey(pub u64);

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKey(..)")
    }
}

/// A compute component instance that can send and receive messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The invocation the instance belongs to.
    pub invocation: InvocationId,
    /// The compute component.
    pub component: ComputeId,
    /// Which of the component's parallel instances.
    pub instance: u32,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.invocation, self.component, self.instance)
    }
}
