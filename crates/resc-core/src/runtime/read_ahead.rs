//! Sequential read-ahead for one channel.
//!
//! Once two reads in a row continue each other, the channel keeps up to two
//! windows past the run's end in flight on the instance's I/O thread (double
//! buffering), so the transport works while the code piece computes on what
//! it read. Later reads take their bytes from the windows. A window is as
//! long as the reads (rounded up to a line, at least [`MIN_WINDOW`]) and at
//! most half the budget, so an instance holds at most the budget per channel.
//!
//! A window is a snapshot of memory at the time it was fetched. The channel
//! passes the component's write epoch with every call, which moves whenever
//! this instance writes the component; windows of an older epoch are
//! dropped, never served. (Other instances' writes are not seen either way:
//! caches are not coherent across instances.)

use crossbeam_channel::Receiver;
use std::collections::VecDeque;

/// Smallest window: one round trip should move at least this much.
pub(crate) const MIN_WINDOW: usize = 64 * 1024;

/// What the I/O thread hands back: the filled buffer, or the buffer alone
/// when the fetch failed (the read path then meets the error itself).
pub(crate) type Fetched = Result<Vec<u8>, Vec<u8>>;

enum State {
    InFlight(Receiver<Fetched>),
    Ready(Vec<u8>),
}

struct Window {
    addr: u64,
    len: usize,
    epoch: u64,
    state: State,
}

impl Window {
    fn end(&self) -> u64 {
        self.addr + self.len as u64
    }
}

/// A fetch the channel should post: fill `buf` from `addr` (`buf.len()` bytes).
pub(crate) struct Fetch {
    pub(crate) addr: u64,
    pub(crate) buf: Vec<u8>,
}

/// The read-ahead state of one channel. It does no I/O itself: the channel
/// posts the fetches it asks for and hands back their completions.
pub(crate) struct ReadAhead {
    /// Most bytes staged or in flight; 0 turns read-ahead off.
    budget: usize,
    /// Where a read continuing the run starts.
    next: u64,
    /// Whether the last read continued the one before it.
    sequential: bool,
    /// Staged or in-flight windows, contiguous and in address order.
    windows: VecDeque<Window>,
    /// Buffers of spent windows, reused.
    spare: Vec<Vec<u8>>,
}

impl ReadAhead {
    pub(crate) fn new(budget: u64) -> Self {
        ReadAhead {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            next: u64::MAX,
            sequential: false,
            windows: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// Copies into `buf` the longest prefix of `[addr, addr + buf.len())`
    /// the windows hold, waiting for windows still in flight; returns its
    /// length. Windows the read has passed are spent; windows that do not
    /// continue at `addr`, that are stale (`epoch` moved) or that failed are
    /// dropped.
    pub(crate) fn serve(&mut self, addr: u64, buf: &mut [u8], epoch: u64) -> usize {
        if self.windows.front().is_some_and(|w| w.epoch != epoch || addr < w.addr || addr >= w.end()) {
            self.drop_all();
        }
        let mut served = 0;
        while served < buf.len() {
            let at = addr + served as u64;
            let Some(window) = self.windows.front_mut() else { break };
            if let State::InFlight(done) = &window.state {
                match done.recv() {
                    Ok(Ok(bytes)) => window.state = State::Ready(bytes),
                    Ok(Err(buf)) => {
                        self.spare.push(buf);
                        self.drop_all();
                        break;
                    }
                    Err(_) => {
                        self.drop_all();
                        break;
                    }
                }
            }
            let State::Ready(bytes) = &window.state else { break };
            let from = (at - window.addr) as usize;
            let n = (window.len - from).min(buf.len() - served);
            buf[served..served + n].copy_from_slice(&bytes[from..from + n]);
            served += n;
            if at + n as u64 == window.end() {
                self.spend_front();
            }
        }
        served
    }

    /// Notes a read of `[addr, addr + len)`, served however it was.
    pub(crate) fn observe(&mut self, addr: u64, len: usize) {
        self.sequential = addr == self.next;
        self.next = addr.saturating_add(len as u64);
        if !self.sequential {
            self.drop_all();
        }
    }

    /// The fetches that bring the windows up to two past the run, for reads
    /// of `read_len` bytes on a component of `component_len` bytes whose
    /// cache lines are `line` bytes. Nothing unless the run is sequential.
    pub(crate) fn plan(&mut self, read_len: usize, line: usize, component_len: u64) -> Vec<Fetch> {
        let mut fetches = Vec::new();
        if !self.sequential || self.budget < 2 * line {
            return fetches;
        }
        let window = read_len.next_multiple_of(line).max(MIN_WINDOW).min(self.budget / 2);
        let mut start = self.windows.back().map_or(self.next, Window::end);
        for _ in self.windows.len()..2 {
            if start >= component_len {
                break;
            }
            let len = ((component_len - start) as usize).min(window);
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.resize(len, 0);
            fetches.push(Fetch { addr: start, buf });
            start += len as u64;
        }
        fetches
    }

    /// Records a fetch the channel posted.
    pub(crate) fn posted(&mut self, addr: u64, len: usize, epoch: u64, done: Receiver<Fetched>) {
        self.windows.push_back(Window { addr, len, epoch, state: State::InFlight(done) });
    }

    fn spend_front(&mut self) {
        if let Some(Window { state: State::Ready(buf), .. }) = self.windows.pop_front() {
            self.spare.push(buf);
        }
    }

    /// Forgets every window; one in flight finishes on the I/O thread, unread.
    fn drop_all(&mut self) {
        while !self.windows.is_empty() {
            self.spend_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes a planned fetch at once with bytes that tell their address.
    fn post(ra: &mut ReadAhead, fetch: Fetch, epoch: u64) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut buf = fetch.buf;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (fetch.addr as usize + i) as u8;
        }
        let len = buf.len();
        let _ = tx.send(Ok(buf));
        ra.posted(fetch.addr, len, epoch, rx);
    }

    fn expected(addr: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (addr as usize + i) as u8).collect()
    }

    #[test]
    fn nothing_is_fetched_until_a_read_continues_the_one_before() {
        let mut ra = ReadAhead::new(1 << 20);
        ra.observe(0, 4096);
        assert!(ra.plan(4096, 4096, 1 << 30).is_empty());
        ra.observe(8192, 4096);
        assert!(ra.plan(4096, 4096, 1 << 30).is_empty(), "a gap is not a run");
        ra.observe(12288, 4096);
        let plan = ra.plan(4096, 4096, 1 << 30);
        let starts: Vec<(u64, usize)> = plan.iter().map(|f| (f.addr, f.buf.len())).collect();
        assert_eq!(starts, vec![(16384, MIN_WINDOW), (16384 + MIN_WINDOW as u64, MIN_WINDOW)]);
    }

    #[test]
    fn windows_serve_the_run_and_are_refilled_past_it() {
        let mut ra = ReadAhead::new(1 << 20);
        ra.observe(0, 1000);
        ra.observe(1000, 1000);
        for fetch in ra.plan(1000, 256, 1 << 30) {
            post(&mut ra, fetch, 0);
        }
        // Reads of 1000 bytes from 2000 on are served entirely from the windows.
        let mut at = 2000;
        for _ in 0..200 {
            let mut buf = vec![0; 1000];
            assert_eq!(ra.serve(at, &mut buf, 0), 1000, "read at {at}");
            assert_eq!(buf, expected(at, 1000));
            ra.observe(at, 1000);
            for fetch in ra.plan(1000, 256, 1 << 30) {
                post(&mut ra, fetch, 0);
            }
            assert!(ra.windows.len() <= 2);
            at += 1000;
        }
    }

    #[test]
    fn the_end_of_the_component_bounds_the_windows() {
        let mut ra = ReadAhead::new(1 << 20);
        ra.observe(0, 4096);
        ra.observe(4096, 4096);
        let plan = ra.plan(4096, 4096, 8192 + 100);
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].addr, plan[0].buf.len()), (8192, 100));
    }

    #[test]
    fn a_stale_epoch_or_a_jump_drops_the_windows() {
        let mut ra = ReadAhead::new(1 << 20);
        ra.observe(0, 4096);
        ra.observe(4096, 4096);
        for fetch in ra.plan(4096, 4096, 1 << 30) {
            post(&mut ra, fetch, 7);
        }
        let mut buf = vec![0; 4096];
        assert_eq!(ra.serve(8192, &mut buf, 8), 0, "a write since the fetch makes it stale");
        assert!(ra.windows.is_empty());
        ra.observe(8192, 4096);
        for fetch in ra.plan(4096, 4096, 1 << 30) {
            post(&mut ra, fetch, 8);
        }
        assert_eq!(ra.serve(1 << 20, &mut buf, 8), 0, "a jump is not served");
        assert!(ra.windows.is_empty());
    }

    #[test]
    fn a_failed_fetch_serves_nothing() {
        let mut ra = ReadAhead::new(1 << 20);
        ra.observe(0, 4096);
        ra.observe(4096, 4096);
        for fetch in ra.plan(4096, 4096, 1 << 30) {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let _ = tx.send(Err(fetch.buf));
            ra.posted(fetch.addr, MIN_WINDOW, 0, rx);
        }
        let mut buf = vec![0; 4096];
        assert_eq!(ra.serve(8192, &mut buf, 0), 0);
    }

    #[test]
    fn a_read_longer_than_the_windows_gets_their_prefix() {
        let mut ra = ReadAhead::new(256 * 1024);
        ra.observe(0, 1 << 20);
        ra.observe(1 << 20, 1 << 20);
        for fetch in ra.plan(1 << 20, 4096, 1 << 30) {
            post(&mut ra, fetch, 0);
        }
        let mut buf = vec![0; 1 << 20];
        assert_eq!(ra.serve(2 << 20, &mut buf, 0), 256 * 1024, "two windows of half the budget");
        assert_eq!(buf[..256 * 1024], expected(2 << 20, 256 * 1024)[..]);
    }
}
