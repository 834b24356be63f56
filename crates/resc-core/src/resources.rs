//! Resource amounts: CPU and memory.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign, Sub};

/// One kibibyte.
pub const KIB: u64 = 1 << 10;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// An amount of CPU and memory, as a node offers or a component asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub millicores: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// No resources.
    pub const ZERO: Resources = Resources { millicores: 0, memory_bytes: 0 };

    /// `millicores` of CPU and `memory_bytes` of memory.
    pub const fn new(millicores: u32, memory_bytes: u64) -> Self {
        Resources { millicores, memory_bytes }
    }

    /// Memory only.
    pub const fn memory(memory_bytes: u64) -> Self {
        Resources { millicores: 0, memory_bytes }
    }

    /// Whether `demand` fits into `self` in every dimension.
    pub fn fits(&self, demand: &Resources) -> bool {
        demand.millicores <= self.millicores && demand.memory_bytes <= self.memory_bytes
    }

    /// `self - other`, or `None` if any dimension would go negative.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            millicores: self.millicores.checked_sub(other.millicores)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
        })
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, rhs: Resources) -> Resources {
        Resources {
            millicores: self.millicores.saturating_add(rhs.millicores),
            memory_bytes: self.memory_bytes.saturating_add(rhs.memory_bytes),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, rhs: Resources) {
        *self = *self + rhs;
    }
}

impl Sub for Resources {
    type Output = Resources;
    /// Saturating: a dimension never goes below zero.
    fn sub(self, rhs: Resources) -> Resources {
        Resources {
            millicores: self.millicores.saturating_sub(rhs.millicores),
            memory_bytes: self.memory_bytes.saturating_sub(rhs.memory_bytes),
        }
    }
}

/// Formats a byte count with a binary unit, for reports and error messages.
pub fn format_bytes(bytes: u64) -> String {
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB {
        let mib = bytes as f64 / MIB as f64;
        if bytes % MIB == 0 {
            format!("{} MiB", bytes / MIB)
        } else {
            format!("{mib:.1} MiB")
        }
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}
