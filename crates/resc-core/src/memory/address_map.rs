//! Mapping a virtual memory component's address space onto physical components.

use crate::transport::RemoteRegion;
use std::ops::Range;

/// A virtual address space made of physical components laid end to end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressMap {
    /// (virtual start, region), sorted by start, contiguous.
    extents: Vec<(u64, RemoteRegion)>,
    capacity: u64,
}

/// The part of an access that falls in one physical component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The physical component.
    pub region: RemoteRegion,
    /// Offset within it.
    pub offset: u64,
    /// Start of this piece within the caller's buffer.
    pub buf_start: usize,
    /// Length of this piece.
    pub len: usize,
}

impl Piece {
    /// The piece's range within the caller's buffer.
    pub fn buf_range(&self) -> Range<usize> {
        self.buf_start..self.buf_start + self.len
    }
}

impl AddressMap {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes addressable: the sum of the physical components' lengths.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The physical components, in address order.
    pub fn regions(&self) -> impl Iterator<Item = &RemoteRegion> {
        self.extents.iter().map(|(_, r)| r)
    }

    /// How many physical components back the space.
    pub fn len(&self) -> usize {
        self.extents.len()
    }

    /// Whether no physical component backs the space.
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Appends a physical component at the end of the address space.
    pub fn push(&mut self, region: RemoteRegion) {
        self.extents.push((self.capacity, region));
        self.capacity += region.len;
    }

    /// Removes the last physical component.
    pub fn pop(&mut self) -> Option<RemoteRegion> {
        let (_, region) = self.extents.pop()?;
        self.capacity -= region.len;
        Some(region)
    }

    /// The virtual start of the last physical component.
    pub fn last_start(&self) -> Option<u64> {
        self.extents.last().map(|(start, _)| *start)
    }

    /// Splits the access `[addr, addr + len)` into one piece per physical
    /// component it touches, in address order. `None` if it is not within capacity.
    pub fn split(&self, addr: u64, len: usize) -> Option<impl Iterator<Item = Piece> + '_> {
        let end = addr.checked_add(len as u64)?;
        if end > self.capacity {
            return None;
        }
        // First extent whose range contains addr (the last with start <= addr).
        let first = self.extents.partition_point(|(start, _)| *start <= addr).saturating_sub(1);
        let mut cursor = addr;
        Some(self.extents[first..].iter().map_while(move |&(start, region)| {
            if cursor >= end || len == 0 {
                return None;
            }
            let offset = cursor - start;
            let piece_len = (region.len - offset).min(end - cursor);
            let piece = Piece { region, offset, buf_start: (cursor - addr) as usize, len: piece_len as usize };
            cursor += piece_len;
            Some(piece)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccessKey, NodeId, RegionId};
    use proptest::prelude::*;

    fn region(id: u64, len: u64) -> RemoteRegion {
        RemoteRegion { node: NodeId(0), region: RegionId(id), key: AccessKey(id), len }
    }

    #[test]
    fn access_across_two_components_splits_in_two() {
        let mut map = AddressMap::new();
        map.push(region(1, 100));
        map.push(region(2, 50));
        let pieces: Vec<Piece> = map.split(90, 20).into_iter().flatten().collect();
        assert_eq!(pieces.len(), 2);
        assert_eq!((pieces[0].region.region, pieces[0].offset, pieces[0].len), (RegionId(1), 90, 10));
        assert_eq!((pieces[1].region.region, pieces[1].offset, pieces[1].len), (RegionId(2), 0, 10));
        assert_eq!(pieces[1].buf_range(), 10..20);
        assert!(map.split(140, 11).is_none());
    }

    proptest! {
        /// Pieces tile the access exactly, each within its component, and map
        /// every byte to the component that holds that virtual address.
        #[test]
        fn pieces_tile_the_access(
            sizes in proptest::collection::vec(1u64..64, 1..8),
            addr_frac in 0.0f64..1.0,
            len_frac in 0.0f64..1.0,
        ) {
            let mut map = AddressMap::new();
            for (i, s) in sizes.iter().enumerate() {
                map.push(region(i as u64, *s));
            }
            let cap = map.capacity();
            let addr = ((cap as f64) * addr_frac) as u64;
            let len = (((cap - addr) as f64) * len_frac) as usize;
            let pieces: Vec<Piece> = map.split(addr, len).into_iter().flatten().collect();
            prop_assert_eq!(pieces.iter().map(|p| p.len).sum::<usize>(), len);
            let mut expected_buf = 0;
            for p in &pieces {
                prop_assert_eq!(p.buf_start, expected_buf);
                prop_assert!(p.offset + p.len as u64 <= p.region.len);
                prop_assert!(p.len > 0);
                expected_buf += p.len;
                // Virtual address of the piece's first byte lies in its region.
                let start: u64 = sizes[..p.region.region.0 as usize].iter().sum();
                prop_assert_eq!(start + p.offset, addr + p.buf_start as u64);
            }
        }
    }
}
