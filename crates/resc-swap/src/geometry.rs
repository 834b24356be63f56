//! Page arithmetic of a far region, in safe code: where a byte offset falls
//! (chunk, page within the chunk), where a chunk lives in swap space
//! (segment, offset within the segment), and which pages of a chunk form
//! contiguous runs. Everything here is pure and property-tested.

use crate::error::SwapError;
use std::ops::Range;

/// The most pages a chunk may have: its dirty pages are one `u64` bitmap.
pub(crate) const MAX_PAGES_PER_CHUNK: usize = 64;

/// The validated shape of a region: page, chunk and segment sizes and the
/// region's length. Every size is a power of two multiple of the one before,
/// except the length, which is a whole number of chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    page: usize,
    chunk: usize,
    segment: usize,
    len: usize,
}

impl Geometry {
    /// Checks the sizes: `page` a power of two; `chunk` a power of two
    /// multiple of `page` with at most [`MAX_PAGES_PER_CHUNK`] pages;
    /// `segment` a multiple of `chunk`; `len` is rounded up to whole chunks
    /// and must be positive.
    pub(crate) fn new(page: usize, chunk: usize, segment: usize, len: usize) -> Result<Self, SwapError> {
        let invalid = |what: String| Err(SwapError::InvalidConfig(what));
        if page == 0 || !page.is_power_of_two() {
            return invalid(format!("page size {page} is not a power of two"));
        }
        if chunk < page || !chunk.is_power_of_two() {
            return invalid(format!("chunk size {chunk} is not a power of two of at least one page ({page} B)"));
        }
        if chunk / page > MAX_PAGES_PER_CHUNK {
            return invalid(format!("chunk size {chunk} has more than {MAX_PAGES_PER_CHUNK} pages of {page} B"));
        }
        if segment < chunk || segment % chunk != 0 {
            return invalid(format!("segment size {segment} is not a multiple of the chunk size {chunk}"));
        }
        if len == 0 {
            return invalid("a far region cannot be empty".into());
        }
        let Some(len) = round_up(len, chunk) else {
            return invalid(format!("region length {len} overflows when rounded up to chunks"));
        };
        Ok(Geometry { page, chunk, segment, len })
    }

    /// Bytes per page.
    pub(crate) fn page(&self) -> usize {
        self.page
    }

    /// Bytes per chunk.
    pub(crate) fn chunk(&self) -> usize {
        self.chunk
    }

    /// Bytes per swap-space segment.
    pub(crate) fn segment(&self) -> usize {
        self.segment
    }

    /// The region's length in bytes (whole chunks).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of chunks.
    pub(crate) fn chunks(&self) -> usize {
        self.len / self.chunk
    }

    /// Number of segments the region needs in swap space.
    pub(crate) fn segments(&self) -> usize {
        self.len.div_ceil(self.segment)
    }

    /// Pages per chunk (1 ..= 64).
    pub(crate) fn pages_per_chunk(&self) -> u32 {
        (self.chunk / self.page) as u32
    }

    /// The bitmap with one bit per page of a chunk, all set.
    pub(crate) fn full_mask(&self) -> u64 {
        mask_of(self.pages_per_chunk())
    }

    /// The chunk holding byte `offset`, or `None` past the end.
    pub(crate) fn chunk_of(&self, offset: usize) -> Option<usize> {
        (offset < self.len).then(|| offset / self.chunk)
    }

    /// The page (within its chunk) holding byte `offset`.
    pub(crate) fn page_in_chunk(&self, offset: usize) -> u32 {
        ((offset % self.chunk) / self.page) as u32
    }

    /// The first byte of `chunk`.
    pub(crate) fn chunk_start(&self, chunk: usize) -> usize {
        chunk * self.chunk
    }

    /// The first byte of `page` of `chunk`.
    pub(crate) fn page_start(&self, chunk: usize, page: u32) -> usize {
        chunk * self.chunk + page as usize * self.page
    }

    /// Where `chunk` lives in swap space: its segment and the byte offset
    /// within that segment.
    pub(crate) fn remote(&self, chunk: usize) -> (usize, u64) {
        let start = self.chunk_start(chunk);
        (start / self.segment, (start % self.segment) as u64)
    }

    /// The chunks that lie entirely within `[offset, offset + len)`, clipped
    /// to the region; empty when none does.
    pub(crate) fn chunks_within(&self, offset: usize, len: usize) -> Range<usize> {
        let end = offset.saturating_add(len).min(self.len);
        let Some(first) = round_up(offset, self.chunk) else {
            return 0..0;
        };
        let first = first / self.chunk;
        let last = end / self.chunk;
        if first >= last {
            0..0
        } else {
            first..last
        }
    }
}

/// `value` rounded up to a multiple of `align` (a power of two), or `None`
/// on overflow.
pub(crate) fn round_up(value: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// The bitmap of the first `pages` pages (`pages` ≤ 64).
pub(crate) fn mask_of(pages: u32) -> u64 {
    if pages >= 64 {
        u64::MAX
    } else {
        (1u64 << pages) - 1
    }
}

/// The maximal runs of set bits of `mask`, lowest first, as
/// `(first page, page count)`: the page ranges a write-back sends.
pub(crate) fn runs(mask: u64) -> impl Iterator<Item = (u32, u32)> {
    let mut rest = mask;
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let first = rest.trailing_zeros();
        let count = (rest >> first).trailing_ones();
        rest &= !(mask_of(count) << first);
        Some((first, count))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn geometry() -> impl Strategy<Value = Geometry> {
        (0u32..3, 0u32..7, 0u32..5, 1usize..1 << 26).prop_map(|(p, c, s, len)| {
            let page = 4096usize << p;
            let chunk = page << c;
            let segment = chunk << s;
            Geometry::new(page, chunk, segment, len).expect("valid sizes")
        })
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(Geometry::new(4096, 4096 * 65, 1 << 30, 1 << 20).is_err(), "65 pages per chunk");
        assert!(Geometry::new(4096, 3 * 4096, 1 << 30, 1 << 20).is_err(), "not a power of two");
        assert!(Geometry::new(4096, 1 << 16, (1 << 16) + 4096, 1 << 20).is_err(), "segment not whole chunks");
        assert!(Geometry::new(4096, 1 << 16, 1 << 20, 0).is_err(), "empty");
        assert!(Geometry::new(4096, 2048, 1 << 20, 1 << 20).is_err(), "chunk below a page");
        assert!(Geometry::new(3000, 4096, 1 << 20, 1 << 20).is_err(), "odd page");
        assert!(Geometry::new(4096, 1 << 16, 1 << 20, usize::MAX).is_err(), "overflow");
    }

    #[test]
    fn runs_of_examples() {
        assert_eq!(runs(0).collect::<Vec<_>>(), vec![]);
        assert_eq!(runs(u64::MAX).collect::<Vec<_>>(), vec![(0, 64)]);
        assert_eq!(runs(0b1011_0110).collect::<Vec<_>>(), vec![(1, 2), (4, 2), (7, 1)]);
        assert_eq!(runs(1 << 63).collect::<Vec<_>>(), vec![(63, 1)]);
    }

    proptest! {
        #[test]
        fn runs_cover_exactly_the_set_bits(mask in any::<u64>()) {
            let mut rebuilt = 0u64;
            let mut previous_end = None;
            for (first, count) in runs(mask) {
                prop_assert!(count >= 1 && first + count <= 64);
                let run = mask_of(count) << first;
                prop_assert_eq!(rebuilt & run, 0, "runs overlap");
                rebuilt |= run;
                // Maximal and ordered: a gap of at least one clear bit between runs.
                if let Some(end) = previous_end {
                    prop_assert!(first > end);
                }
                previous_end = Some(first + count);
            }
            prop_assert_eq!(rebuilt, mask);
        }

        #[test]
        fn offsets_round_trip(g in geometry(), offset in any::<usize>()) {
            let offset = offset % g.len();
            let chunk = g.chunk_of(offset).expect("inside");
            let page = g.page_in_chunk(offset);
            prop_assert!(chunk < g.chunks());
            prop_assert!(page < g.pages_per_chunk());
            let start = g.page_start(chunk, page);
            prop_assert!(start <= offset && offset < start + g.page());
            prop_assert_eq!(g.chunk_start(chunk) % g.chunk(), 0);
            prop_assert!(g.chunk_of(g.len()).is_none());
            prop_assert_eq!(g.full_mask().count_ones(), g.pages_per_chunk());
        }

        #[test]
        fn remote_places_are_disjoint_and_inside_segments(g in geometry(), a in any::<usize>(), b in any::<usize>()) {
            let (a, b) = (a % g.chunks(), b % g.chunks());
            let (sa, oa) = g.remote(a);
            let (sb, ob) = g.remote(b);
            prop_assert!(sa < g.segments() && sb < g.segments());
            prop_assert!(oa + g.chunk() as u64 <= g.segment() as u64, "a chunk never straddles segments");
            if a != b {
                let disjoint = sa != sb || oa + g.chunk() as u64 <= ob || ob + g.chunk() as u64 <= oa;
                prop_assert!(disjoint);
            } else {
                prop_assert_eq!((sa, oa), (sb, ob));
            }
        }

        #[test]
        fn chunks_within_are_inside_and_maximal(g in geometry(), offset in any::<usize>(), len in any::<usize>()) {
            let offset = offset % (g.len() + 1);
            let len = len % (g.len() + 1);
            let within = g.chunks_within(offset, len);
            let end = (offset + len).min(g.len());
            for c in within.clone() {
                prop_assert!(g.chunk_start(c) >= offset);
                prop_assert!(g.chunk_start(c) + g.chunk() <= end);
            }
            // Maximal: the chunks just outside are not entirely inside.
            if within.start > 0 {
                let before = within.start - 1;
                prop_assert!(g.chunk_start(before) < offset || g.chunk_start(before) + g.chunk() > end || within.is_empty());
            }
            if within.end < g.chunks() && !within.is_empty() {
                prop_assert!(g.chunk_start(within.end) + g.chunk() > end);
            }
            if within.is_empty() {
                // No whole chunk fits: either the range is short or misaligned.
                let first = round_up(offset, g.chunk()).unwrap_or(usize::MAX);
                prop_assert!(first.saturating_add(g.chunk()) > end);
            }
        }
    }
}
