//! Size classes: the fixed sizes physical components come in.
//!
//! Fixed sizes keep stranding bounded (at most the largest class per node).
//! Rounding up costs internal fragmentation: [`SizeClasses::decompose`] takes
//! whole largest classes, then the smallest class that holds the rest, so a
//! component wastes less than that rest (under half its last physical
//! component when each class doubles the one before).

use crate::resources::{format_bytes, GIB, MIB};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The sizes of physical memory components and of the compute slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeClasses {
    memory: Vec<u64>,
    compute_slot: u64,
}

/// Why a set of size classes was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SizeClassError {
    /// No memory class was given.
    #[error("at least one memory size class is needed")]
    NoMemoryClass,
    /// A class of zero bytes.
    #[error("a size class must be larger than zero bytes")]
    ZeroClass,
    /// A class that is not a multiple of 4 KiB pages.
    #[error("size class {0} B is not a multiple of 4 KiB")]
    NotPageAligned(u64),
}

impl Default for SizeClasses {
    /// The paper's configuration: memory classes 64 MiB, 128 MiB, …, 1 GiB and
    /// a 256 MiB compute slot.
    fn default() -> Self {
        SizeClasses { memory: vec![64 * MIB, 128 * MIB, 256 * MIB, 512 * MIB, GIB], compute_slot: 256 * MIB }
    }
}

impl SizeClasses {
    /// Custom classes. Memory classes are sorted and de-duplicated; every size
    /// must be a positive multiple of 4 KiB.
    pub fn new(memory: impl IntoIterator<Item = u64>, compute_slot: u64) -> Result<Self, SizeClassError> {
        let mut memory: Vec<u64> = memory.into_iter().collect();
        memory.sort_unstable();
        memory.dedup();
        if memory.is_empty() {
            return Err(SizeClassError::NoMemoryClass);
        }
        for &size in memory.iter().chain(std::iter::once(&compute_slot)) {
            if size == 0 {
                return Err(SizeClassError::ZeroClass);
            }
            if size % 4096 != 0 {
                return Err(SizeClassError::NotPageAligned(size));
            }
        }
        Ok(SizeClasses { memory, compute_slot })
    }

    /// Powers of two from `smallest` to `largest` (both rounded up to one),
    /// with the given compute slot.
    pub fn powers_of_two(smallest: u64, largest: u64, compute_slot: u64) -> Result<Self, SizeClassError> {
        let mut classes = Vec::new();
        let mut size = smallest.max(1).next_power_of_two();
        let largest = largest.max(size);
        while size <= largest {
            classes.push(size);
            size = size.saturating_mul(2);
        }
        Self::new(classes, compute_slot)
    }

    /// The memory classes, smallest first.
    pub fn memory_classes(&self) -> &[u64] {
        &self.memory
    }

    /// The smallest memory class.
    pub fn smallest(&self) -> u64 {
        self.memory[0]
    }

    /// The largest memory class.
    pub fn largest(&self) -> u64 {
        self.memory[self.memory.len() - 1]
    }

    /// The local memory of one compute slot.
    pub fn compute_slot(&self) -> u64 {
        self.compute_slot
    }

    /// The same classes with another compute slot size.
    pub fn with_compute_slot(mut self, bytes: u64) -> Result<Self, SizeClassError> {
        if bytes == 0 {
            return Err(SizeClassError::ZeroClass);
        }
        if bytes % 4096 != 0 {
            return Err(SizeClassError::NotPageAligned(bytes));
        }
        self.compute_slot = bytes;
        Ok(self)
    }

    /// The smallest class that holds `bytes`, or the largest class when none does.
    pub fn round_up(&self, bytes: u64) -> u64 {
        self.memory.iter().copied().find(|&c| c >= bytes).unwrap_or(self.largest())
    }

    /// Physical component sizes that together hold `bytes`: as many largest
    /// classes as fit whole, then the smallest class that holds the rest.
    /// Zero bytes decompose into nothing.
    pub fn decompose(&self, bytes: u64) -> Vec<u64> {
        let largest = self.largest();
        let mut parts = vec![largest; (bytes / largest) as usize];
        let rest = bytes % largest;
        if rest > 0 {
            parts.push(self.round_up(rest));
        }
        parts
    }

    /// A one-line description for reports, e.g. `64 MiB … 1 GiB (5 classes)`.
    pub fn describe(&self) -> String {
        format!("{} … {} ({} classes)", format_bytes(self.smallest()), format_bytes(self.largest()), self.memory.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_the_papers() {
        let classes = SizeClasses::default();
        assert_eq!(classes.smallest(), 64 * MIB);
        assert_eq!(classes.largest(), GIB);
        assert_eq!(classes.compute_slot(), 256 * MIB);
    }

    #[test]
    fn refuses_bad_classes() {
        assert_eq!(SizeClasses::new([], MIB), Err(SizeClassError::NoMemoryClass));
        assert_eq!(SizeClasses::new([0], MIB), Err(SizeClassError::ZeroClass));
        assert_eq!(SizeClasses::new([1000], MIB), Err(SizeClassError::NotPageAligned(1000)));
        assert_eq!(SizeClasses::new([MIB], 0), Err(SizeClassError::ZeroClass));
    }

    #[test]
    fn two_gib_is_two_largest() {
        assert_eq!(SizeClasses::default().decompose(2 * GIB), vec![GIB, GIB]);
        assert_eq!(SizeClasses::default().decompose(GIB + 1), vec![GIB, 64 * MIB]);
    }

    proptest! {
        #[test]
        fn decomposition_covers_with_bounded_waste(bytes in 0u64..(8 * GIB)) {
            let classes = SizeClasses::default();
            let parts = classes.decompose(bytes);
            let total: u64 = parts.iter().sum();
            prop_assert!(total >= bytes);
            // Internal fragmentation stays below the class that held the remainder.
            prop_assert!(total - bytes < classes.largest());
            prop_assert!(parts.iter().all(|p| classes.memory_classes().contains(p)));
        }

        #[test]
        fn round_up_is_the_smallest_fitting_class(bytes in 1u64..GIB) {
            let classes = SizeClasses::default();
            let c = classes.round_up(bytes);
            prop_assert!(c >= bytes);
            prop_assert!(classes.memory_classes().iter().all(|&o| o < bytes || o >= c));
        }
    }
}
