//! How much a placement reserves on a node, and how a node is chosen when
//! no locality rule applies.
//!
//! # Size-class accounting (the default)
//!
//! With [`Accounting::SizeClasses`] the memory of every reservation is made of
//! the fixed sizes of a [`SizeClasses`]: a physical component asks for at
//! most the largest class and its memory is rounded up to the smallest class
//! that holds it ([`SizeClasses::round_up`]); a request above the largest
//! class (a balanced-pool sandbox with a large local memory, say) reserves the
//! [tight decomposition](tight_pieces) of its bytes on its one node. CPU is
//! reserved exactly (millicores are not classed). A placement's
//! [`demand`](resc_core::scheduler::Placement::demand) is the rounded
//! reservation, and releasing it returns exactly that.
//!
//! **Stranding bound.** Call `L` the largest class and `s` the smallest. For a
//! workload of physical components (each at most `L`):
//!
//! - free memory that no request can use is *less than `L` per node and pool*:
//!   a node with `L` bytes free takes any physical component, memory-wise;
//! - when the pool's capacity on a node is a multiple of `s` and every class is
//!   a multiple of `s` (true of powers of two, as in the defaults), the free
//!   memory of a node is always a multiple of `s`, so a request of the
//!   smallest class can use *any* free memory: nothing is stranded for a
//!   workload that decomposes virtual components down to `s`
//!   ([`tight_pieces`], what
//!   [`TwoLevelScheduler::place_virtual`](crate::TwoLevelScheduler::place_virtual) does);
//! - the price is internal fragmentation: less than `s` per virtual component
//!   when it is decomposed with [`tight_pieces`], less than the rounded class
//!   minus the request for a single physical component.
//!
//! # Whole-component accounting (the baseline)
//!
//! [`Accounting::Exact`] reserves exactly the bytes asked, and
//! [`TwoLevelScheduler::place_virtual`](crate::TwoLevelScheduler::place_virtual)
//! places a virtual component whole on one node. Together with [`Fit::FirstFit`]
//! it is the function-centric baseline of the stranding simulation
//! ([`crate::sim::stranding`]): no internal fragmentation, but a node's leftover
//! smaller than the next component is stranded, and the bound on it is the
//! largest component, which a long-tailed workload does not bound.

use resc_core::resources::Resources;
use resc_core::scheduler::Pool;
use resc_core::size_class::SizeClasses;
use serde::{Deserialize, Serialize};

/// How a placement's reservation is computed from its demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accounting {
    /// Memory in units of these size classes (see the [module docs](self)).
    SizeClasses(SizeClasses),
    /// Exactly the bytes and millicores asked (whole components).
    Exact,
}

impl Default for Accounting {
    /// Size classes with the paper's defaults (64 MiB … 1 GiB).
    fn default() -> Self {
        Accounting::SizeClasses(SizeClasses::default())
    }
}

impl Accounting {
    /// What a placement of `demand` reserves: memory rounded up to a class
    /// (or to the tight decomposition above the largest class), CPU exact.
    /// Zero bytes reserve zero bytes.
    #[inline]
    pub fn reservation(&self, demand: Resources) -> Resources {
        match self {
            Accounting::Exact => demand,
            Accounting::SizeClasses(classes) => {
                let bytes = demand.memory_bytes;
                let memory_bytes = if bytes == 0 {
                    0
                } else if bytes <= classes.largest() {
                    classes.round_up(bytes)
                } else {
                    tight_pieces(classes, bytes).fold(0u64, u64::saturating_add)
                };
                Resources { millicores: demand.millicores, memory_bytes }
            }
        }
    }

    /// The physical pieces (memory bytes) a virtual component of `bytes` is
    /// placed as: the [tight decomposition](tight_pieces) with size classes,
    /// one whole piece with exact accounting. Zero bytes are one empty piece,
    /// so that a memory-less component still gets a placement.
    pub fn pieces(&self, bytes: u64) -> Pieces<'_> {
        match self {
            Accounting::Exact => Pieces::Whole(Some(bytes)),
            Accounting::SizeClasses(_) if bytes == 0 => Pieces::Whole(Some(0)),
            Accounting::SizeClasses(classes) => Pieces::Classes(tight_pieces(classes, bytes)),
        }
    }

    /// The size classes, when accounting in them.
    pub fn classes(&self) -> Option<&SizeClasses> {
        match self {
            Accounting::SizeClasses(classes) => Some(classes),
            Accounting::Exact => None,
        }
    }
}

/// The pieces of a virtual component, from [`Accounting::pieces`].
#[derive(Debug, Clone)]
pub enum Pieces<'a> {
    /// One whole piece of exactly these bytes (exact accounting).
    Whole(Option<u64>),
    /// Size-class pieces.
    Classes(TightPieces<'a>),
}

impl Iterator for Pieces<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        match self {
            Pieces::Whole(piece) => piece.take(),
            Pieces::Classes(pieces) => pieces.next(),
        }
    }
}

/// How a node is chosen within a rack when no locality rule applies (step
/// (d) of the rack policy, and every memory-pool placement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// A random node with room (the paper's policy): a few random probes,
    /// then a scan from a random position.
    #[default]
    Random,
    /// The first node, in cluster order, with room (the classic bin-packing
    /// baseline).
    FirstFit,
}

/// The tight decomposition of `bytes` into size classes: as many largest
/// classes as fit whole, then, for the rest, the smallest class that holds it
/// when that wastes less than the smallest class, else the largest class that
/// fits under the rest, and so on. The pieces sum to at least `bytes` and
/// waste less than the smallest class — the paper's bound on internal
/// fragmentation (§5.2.1: "at most 64 MB"). `resc_core`'s
/// [`SizeClasses::decompose`] rounds the rest up in one piece instead, which
/// can waste up to half the largest class.
///
/// ```
/// use resc_core::resources::MIB;
/// use resc_core::size_class::SizeClasses;
/// let pieces: Vec<u64> = resc_sched::accounting::tight_pieces(&SizeClasses::default(), 162 * MIB).collect();
/// assert_eq!(pieces, vec![128 * MIB, 64 * MIB]);
/// ```
pub fn tight_pieces(classes: &SizeClasses, bytes: u64) -> TightPieces<'_> {
    tight_pieces_up_to(classes, bytes, classes.largest())
}

/// As [`tight_pieces`], using only the classes up to `limit` (at least the
/// smallest class is always used). Splitting a piece of class `c` that found
/// no room is `tight_pieces_up_to(classes, c, <the class below c>)`.
///
/// ```
/// use resc_core::resources::{GIB, MIB};
/// use resc_core::size_class::SizeClasses;
/// let classes = SizeClasses::default();
/// let halves: Vec<u64> = resc_sched::accounting::tight_pieces_up_to(&classes, GIB, 512 * MIB).collect();
/// assert_eq!(halves, vec![512 * MIB, 512 * MIB]);
/// ```
pub fn tight_pieces_up_to(classes: &SizeClasses, bytes: u64, limit: u64) -> TightPieces<'_> {
    let largest = classes.memory_classes().iter().copied().filter(|&c| c <= limit).max().unwrap_or(classes.smallest());
    TightPieces { classes, largest, whole: bytes / largest, rest: bytes % largest }
}

/// The class just below `class`, if any.
pub(crate) fn class_below(classes: &SizeClasses, class: u64) -> Option<u64> {
    classes.memory_classes().iter().copied().filter(|&c| c < class).max()
}

/// The iterator of [`tight_pieces`].
#[derive(Debug, Clone)]
pub struct TightPieces<'a> {
    classes: &'a SizeClasses,
    /// The largest class in use.
    largest: u64,
    whole: u64,
    rest: u64,
}

impl Iterator for TightPieces<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.whole > 0 {
            self.whole -= 1;
            return Some(self.largest);
        }
        if self.rest == 0 {
            return None;
        }
        let usable = || self.classes.memory_classes().iter().copied().filter(|&c| c <= self.largest);
        let smallest = self.classes.smallest();
        // rest < largest, so some usable class holds it.
        let up = usable().find(|&c| c >= self.rest).unwrap_or(self.largest);
        if up - self.rest < smallest || self.rest <= smallest {
            self.rest = 0;
            return Some(up);
        }
        // rest > smallest here, so some class fits under it.
        let down = usable().filter(|&c| c <= self.rest).max().unwrap_or(smallest);
        self.rest -= down;
        Some(down)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let extra = usize::from(self.rest > 0);
        let whole = usize::try_from(self.whole).unwrap_or(usize::MAX);
        (whole.saturating_add(extra), None)
    }
}

/// Dense index of a pool: compute 0, memory 1, balanced 2.
#[inline]
pub(crate) fn pool_index(pool: Pool) -> usize {
    match pool {
        Pool::Compute => 0,
        Pool::Memory => 1,
        Pool::Balanced => 2,
    }
}

/// The pools in index order.
pub(crate) const POOLS: [Pool; 3] = [Pool::Compute, Pool::Memory, Pool::Balanced];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use resc_core::resources::{GIB, MIB};

    #[test]
    fn reservation_rounds_memory_only() {
        let a = Accounting::default();
        assert_eq!(a.reservation(Resources::new(300, 100 * MIB)), Resources::new(300, 128 * MIB));
        assert_eq!(a.reservation(Resources::new(300, 0)), Resources::new(300, 0));
        assert_eq!(a.reservation(Resources::memory(GIB + MIB)), Resources::memory(GIB + 64 * MIB));
        assert_eq!(Accounting::Exact.reservation(Resources::memory(7)), Resources::memory(7));
    }

    #[test]
    fn pieces_of_each_mode() {
        let a = Accounting::default();
        assert_eq!(a.pieces(0).collect::<Vec<_>>(), vec![0]);
        assert_eq!(a.pieces(2 * GIB + 1).collect::<Vec<_>>(), vec![GIB, GIB, 64 * MIB]);
        assert_eq!(Accounting::Exact.pieces(5).collect::<Vec<_>>(), vec![5]);
    }

    proptest! {
        #[test]
        fn tight_waste_is_below_the_smallest_class(bytes in 1u64..(8 * GIB), odd in any::<bool>()) {
            let classes = if odd {
                SizeClasses::new([64 * MIB, 100 * MIB, 700 * MIB, GIB], 256 * MIB).expect("valid classes")
            } else {
                SizeClasses::default()
            };
            let pieces: Vec<u64> = tight_pieces(&classes, bytes).collect();
            let total: u64 = pieces.iter().sum();
            prop_assert!(total >= bytes);
            prop_assert!(total - bytes < classes.smallest());
            prop_assert!(pieces.iter().all(|p| classes.memory_classes().contains(p)));
            prop_assert_eq!(Accounting::SizeClasses(classes.clone()).pieces(bytes).sum::<u64>(), total);
        }

        #[test]
        fn splitting_a_class_keeps_the_waste_bound(pick in 0usize..4, odd in any::<bool>()) {
            let classes = if odd {
                SizeClasses::new([64 * MIB, 100 * MIB, 700 * MIB, GIB], 256 * MIB).expect("valid classes")
            } else {
                SizeClasses::default()
            };
            let class = classes.memory_classes()[1 + pick % (classes.memory_classes().len() - 1)];
            let below = class_below(&classes, class).expect("not the smallest");
            let parts: Vec<u64> = tight_pieces_up_to(&classes, class, below).collect();
            prop_assert!(parts.len() >= 2);
            prop_assert!(parts.iter().all(|&p| p <= below));
            let total: u64 = parts.iter().sum();
            prop_assert!(total >= class && total - class < classes.smallest());
        }
    }
}
