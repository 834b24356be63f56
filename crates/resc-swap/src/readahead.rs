//! Sequential-stream detection and read-ahead planning, in safe code.
//!
//! Faults are grouped into up to [`MAX_STREAMS`] streams. A fault right
//! after a stream's last fault, or anywhere in the window read ahead for it,
//! continues the stream; any other fault starts a new stream (replacing the
//! one that faulted least recently). A stream's window is 0 until its second
//! fault, then starts at the initial window and doubles up to the maximum at
//! each fault on its marker or just past its window. A fault inside the
//! window (the program caught up with a read-ahead still under way) plans
//! nothing new and keeps the marker, so one slow moment does not turn every
//! later access into a fault. The window past the faulting chunk is read ahead
//! except one *marker* chunk in its middle, whose first page is left missing
//! on purpose: the program's fault on it shows how far it got and starts the
//! next window while half of the current one is still ahead.

use std::ops::Range;

/// The most sequential streams followed at once.
pub(crate) const MAX_STREAMS: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The last chunk that faulted.
    last: usize,
    /// One past the last chunk scheduled for read-ahead: a fault in
    /// `(last, frontier]` continues the stream.
    frontier: usize,
    /// The chunk left missing in the window.
    marker: Option<usize>,
    /// The window in chunks (0 until the stream shows it is sequential).
    window: usize,
    /// When it last faulted, for replacement.
    used: u64,
    /// Bumped when the slot gets a new stream: plans of the old one are void.
    generation: u32,
    /// When its marker was last hit.
    last_hit: Option<u64>,
    /// The time between marker hits, averaged.
    interval: Option<u64>,
    /// It took a fault that continued it (it is sequential, not a guess).
    proven: bool,
}

/// A stream, as named by the plans made for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamRef {
    index: usize,
    generation: u32,
}

/// What to read ahead after a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The fault was on the stream's marker.
    pub(crate) hit: bool,
    /// Chunks to read ahead, except `marker`.
    pub(crate) fetch: Range<usize>,
    /// The new marker, inside `fetch`, not to be read ahead.
    pub(crate) marker: Option<usize>,
    /// The stream it was made for.
    pub(crate) stream: StreamRef,
}

#[cfg(test)]
impl Plan {
    /// The chunks to read ahead, in order (all but the marker).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = usize> + '_ {
        self.fetch.clone().filter(move |&c| Some(c) != self.marker)
    }
}

/// The streams of one region.
#[derive(Debug)]
pub(crate) struct Streams {
    list: Vec<Stream>,
    initial: usize,
    max: usize,
    tick: u64,
    /// Evidence that new streams turn out sequential (0 ..= 8): up when a
    /// stream takes its second fault, down by two when one is replaced
    /// without having done so.
    confidence: u8,
    /// The windows that sequential streams reached, averaged over the last
    /// few replaced ones: how far a new stream is read ahead speculatively.
    reached: usize,
    /// The last fault started a new stream.
    started: bool,
}

/// Confidence from which a new stream is read ahead at its first fault.
const SPECULATE_FROM: u8 = 4;

impl Streams {
    /// Streams whose window starts at `initial` chunks and grows to `max`.
    pub(crate) fn new(initial: usize, max: usize) -> Streams {
        Streams {
            list: Vec::with_capacity(MAX_STREAMS),
            initial: initial.min(max),
            max,
            tick: 0,
            confidence: 0,
            reached: 0,
            started: false,
        }
    }

    /// New window limits (after the local budget changed); streams in
    /// flight keep their windows, clipped at the next growth. Never allocates.
    pub(crate) fn set_windows(&mut self, initial: usize, max: usize) {
        self.initial = initial.min(max);
        self.max = max;
        self.reached = self.reached.min(max);
    }

    /// A missing fault on chunk `c` of a region of `chunks` chunks at time
    /// `now` (any monotonic clock, e.g. nanoseconds): the read-ahead to do.
    ///
    /// A fault that continues no stream starts one; when recent streams
    /// turned out sequential it is read ahead at once, as far as they
    /// reached (so a workload of random 1 MiB blocks takes one or two faults
    /// per block, and one of random pages reads nothing ahead).
    pub(crate) fn on_fault(&mut self, c: usize, chunks: usize, now: u64) -> Option<Plan> {
        self.tick += 1;
        let tick = self.tick;
        let found = self.list.iter().position(|s| s.last < c && c <= s.frontier);
        self.started = found.is_none();
        let Some(index) = found else {
            let speculative = if self.confidence >= SPECULATE_FROM { self.reached.min(self.max) } else { 0 };
            let mut fresh = Stream {
                last: c,
                frontier: c + 1,
                marker: None,
                window: speculative,
                used: tick,
                generation: 0,
                last_hit: None,
                interval: None,
                proven: false,
            };
            let index = if self.list.len() < MAX_STREAMS {
                self.list.push(fresh);
                self.list.len() - 1
            } else {
                let (index, oldest) = self.list.iter_mut().enumerate().min_by_key(|(_, s)| s.used)?;
                if oldest.proven {
                    self.reached = (self.reached * 3 + oldest.window).div_ceil(4);
                } else {
                    // A single fault (read ahead speculatively or not): a
                    // random access. Two of them undo one proven stream.
                    self.confidence = self.confidence.saturating_sub(2);
                }
                fresh.generation = oldest.generation.wrapping_add(1);
                *oldest = fresh;
                index
            };
            if speculative == 0 {
                return None;
            }
            // The marker goes right after the faulting chunk: the program
            // reaches it soon if the guess was right, which proves the stream
            // (a guess never proven counts against further guesses).
            return Some(Self::plan(&mut self.list[index], index, c, chunks, false, Some(c + 1)));
        };
        let s = &mut self.list[index];
        let hit = s.marker == Some(c);
        s.used = tick;
        if !s.proven {
            s.proven = true;
            self.confidence = (self.confidence + 1).min(8);
        }
        if !hit && c < s.frontier && s.window > 0 {
            // Inside the window, not the marker: the program caught up with
            // the read-ahead. The window is already planned; keep its marker
            // (unless the program went past it) and plan nothing more.
            s.last = c;
            if s.marker.is_some_and(|m| m < c) {
                s.marker = None;
            }
            return None;
        }
        if hit {
            if let Some(previous) = s.last_hit {
                let gap = now.saturating_sub(previous);
                s.interval = Some(s.interval.map_or(gap, |i| (i * 3 + gap) / 4));
            }
            s.last_hit = Some(now);
        }
        if s.window == 0 {
            s.window = self.initial;
        } else {
            s.window = (s.window * 2).min(self.max);
        }
        s.last = c;
        if s.window == 0 {
            s.frontier = c + 1;
            s.marker = None;
            return None;
        }
        Some(Self::plan(s, index, c, chunks, hit, None))
    }

    /// The window of `s` past a fault on `c`, with its marker (in the
    /// middle of the window unless `marker_at` says where).
    fn plan(s: &mut Stream, index: usize, c: usize, chunks: usize, hit: bool, marker_at: Option<usize>) -> Plan {
        let end = (c + 1 + s.window).min(chunks);
        let start = s.frontier.max(c + 1).min(end);
        let middle = marker_at.unwrap_or(c + 1 + s.window / 2);
        let marker = (s.window >= 2).then(|| middle.max(start)).filter(|&m| m < end);
        s.frontier = end.max(c + 1);
        s.marker = marker;
        Plan { hit, fetch: start..end, marker, stream: StreamRef { index, generation: s.generation } }
    }

    /// Whether the last fault started a new stream.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Whether `c` is some stream's marker (read-ahead must leave it missing).
    pub(crate) fn is_marker(&self, c: usize) -> bool {
        self.list.iter().any(|s| s.marker == Some(c))
    }

    /// Whether chunk `c`, planned for `stream` (as its marker when
    /// `marker`), is still worth reading ahead: the stream still exists, has
    /// not faulted at or past `c` (the program is not beyond it), and `c` is
    /// a marker exactly when planned as one.
    pub(crate) fn wanted(&self, stream: StreamRef, c: usize, marker: bool) -> bool {
        let alive = self.list.get(stream.index).is_some_and(|s| s.generation == stream.generation && s.last < c);
        alive && self.is_marker(c) == marker
    }

    /// When the next marker fault is expected: the earliest, over streams
    /// whose markers were hit at a steady pace, of last hit + interval.
    /// Streams whose expected fault is more than `stale` overdue are
    /// ignored (the program moved on).
    pub(crate) fn next_due(&self, now: u64, stale: u64) -> Option<u64> {
        self.list
            .iter()
            .filter(|s| s.marker.is_some())
            .filter_map(|s| Some(s.last_hit? + s.interval?))
            .filter(|&due| due.saturating_add(stale) > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Simulates a program touching `touches` in order with read-ahead that
    /// completes at once; returns (faults, marker hits, chunks read ahead).
    fn simulate(streams: &mut Streams, touches: &[usize], chunks: usize) -> (usize, usize, usize) {
        let mut present = BTreeSet::new();
        let (mut faults, mut hits, mut read) = (0, 0, 0);
        for &c in touches {
            if present.contains(&c) {
                continue;
            }
            faults += 1;
            present.insert(c);
            if let Some(plan) = streams.on_fault(c, chunks, 0) {
                hits += usize::from(plan.hit);
                for r in plan.chunks() {
                    assert!(!streams.is_marker(r));
                    if present.insert(r) {
                        read += 1;
                    }
                }
            }
        }
        (faults, hits, read)
    }

    #[test]
    fn a_sequential_scan_faults_once_per_half_window() {
        let mut streams = Streams::new(4, 16);
        let chunks = 16 * 1024;
        let touches: Vec<usize> = (0..chunks).collect();
        let (faults, hits, read) = simulate(&mut streams, &touches, chunks);
        // Two faults to start, a few while the window grows, then one per
        // half window (9 chunks: the marker sits past the middle).
        assert!(faults <= chunks / 8 + 8, "{faults} faults");
        assert!(faults - hits <= 4, "{faults} faults, only {hits} on markers");
        assert_eq!(faults + read, chunks);
    }

    /// A random permutation of `0..n` (xorshift).
    fn permutation(n: usize, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        let mut x = seed | 1;
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        order
    }

    #[test]
    fn random_blocks_take_about_two_faults_each_once_streams_prove_sequential() {
        // (The second is a marker: one page, right after the first chunk.)
        let mut streams = Streams::new(4, 16);
        let blocks = permutation(400, 5);
        let touches: Vec<usize> = blocks.iter().flat_map(|b| b * 16..b * 16 + 16).collect();
        let (faults, _, read) = simulate(&mut streams, &touches, 400 * 16);
        // The first blocks: first fault, second (sequential), then markers;
        // afterwards a block is read ahead from its first fault on.
        assert!(faults <= 400 * 2 + 40, "{faults} faults for 400 blocks");
        assert_eq!(faults + read, 400 * 16, "every chunk read once");
    }

    #[test]
    fn random_pages_read_nothing_ahead() {
        let mut streams = Streams::new(4, 16);
        let touches = permutation(5000, 9);
        let (faults, _, read) = simulate(&mut streams, &touches, 5000);
        assert!(read < 50, "{read} chunks read ahead for random accesses");
        assert_eq!(faults + read, 5000);
    }

    #[test]
    fn speculation_stops_when_accesses_turn_random() {
        let mut streams = Streams::new(4, 16);
        let blocks = permutation(200, 5);
        let touches: Vec<usize> = blocks.iter().flat_map(|b| b * 16..b * 16 + 16).collect();
        simulate(&mut streams, &touches, 200 * 16);
        // Then random chunks elsewhere: only the first few are read ahead.
        let random: Vec<usize> = permutation(3000, 11).into_iter().map(|c| 10_000 + c).collect();
        let (faults, _, read) = simulate(&mut streams, &random, 20_000);
        assert!(read < 16 * 16, "{read} chunks read ahead for {faults} random faults");
    }

    #[test]
    fn the_next_marker_fault_is_predicted_from_the_pace_of_hits() {
        let mut streams = Streams::new(4, 16);
        let mut now = 0;
        let mut c = 0;
        // A scan that hits its marker every 1000 time units.
        streams.on_fault(c, 100_000, now);
        c += 1;
        let mut plan = streams.on_fault(c, 100_000, now).expect("sequential");
        for _ in 0..20 {
            now += 1000;
            c = plan.marker.expect("a marker");
            plan = streams.on_fault(c, 100_000, now).expect("hit");
            assert!(plan.hit);
        }
        assert_eq!(streams.next_due(now, 5000), Some(now + 1000));
        assert_eq!(streams.next_due(now + 7000, 5000), None, "long overdue: the scan stopped");
    }

    #[test]
    fn plans_of_a_stream_the_program_left_behind_are_dropped() {
        let mut streams = Streams::new(4, 16);
        assert!(streams.on_fault(10, 1000, 0).is_none());
        let plan = streams.on_fault(11, 1000, 0).expect("sequential");
        let first = plan.chunks().next().expect("something to read");
        assert!(streams.wanted(plan.stream, first, false));
        // The program faults further on inside the window: chunks before
        // that point are no longer wanted, later ones still are.
        let later = plan.fetch.end - 1;
        let inside = first + 1;
        assert!(Some(inside) != plan.marker && inside < later);
        assert!(streams.on_fault(inside, 1000, 0).is_none(), "inside the window: nothing new");
        assert!(!streams.wanted(plan.stream, first, false));
        assert!(streams.wanted(plan.stream, later, false));
        // Eight unrelated streams push this one out: its plans are void.
        for i in 0..MAX_STREAMS {
            streams.on_fault(5000 + 100 * i, 10_000, 0);
        }
        assert!(!streams.wanted(plan.stream, later, false));
    }

    proptest! {
        #[test]
        fn plans_stay_inside_and_skip_the_marker(
            initial in 0usize..8, max in 0usize..32, chunks in 1usize..500,
            touches in proptest::collection::vec(any::<usize>(), 1..300),
        ) {
            let mut streams = Streams::new(initial, max);
            for t in touches {
                let c = t % chunks;
                if let Some(plan) = streams.on_fault(c, chunks, 0) {
                    prop_assert!(plan.fetch.end <= chunks);
                    prop_assert!(plan.fetch.start > c);
                    prop_assert!(plan.fetch.end - plan.fetch.start <= max.max(1));
                    if let Some(m) = plan.marker {
                        prop_assert!(plan.fetch.contains(&m));
                        prop_assert!(streams.is_marker(m));
                        prop_assert!(plan.chunks().all(|x| x != m));
                    }
                }
            }
        }
    }
}
