//! Mappings of region memfds: the control page's atomic words and the
//! region's bytes. The only module of [`shm`](super) that touches mapped
//! memory, hence the only one (with [`fdpass`](super::fdpass)) that needs
//! `unsafe`.
#![allow(unsafe_code)]

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use parking_lot::{const_mutex, Mutex, RwLock};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Bytes of the control page that precedes a region's bytes in its memfd.
pub const HEADER: usize = 4096;

/// Marks a control page written by [`ShmMemory`](super::ShmMemory).
const MAGIC: u64 = u64::from_le_bytes(*b"RESCshm1");
/// Offsets of the control page's words; each a multiple of 8.
const MAGIC_AT: usize = 0;
const LEN_AT: usize = 8;
/// On a cache line of its own, away from the read-mostly words.
const STATE_AT: usize = 64;
/// The state word's top bit: the region is revoked. The other bits count
/// operations in flight.
const REVOKED: u64 = 1 << 63;

/// Every mapping of a region's bytes in this process, by the memfd's
/// `(st_dev, st_ino)`: [`SharedMap::shared`] hands out the live one, so a
/// process maps a region's bytes once and orders every access to them with
/// one lock, however many attachments (transports, re-attachments after a
/// `detach` or a key change, adoptions) it holds.
///
/// A live entry cannot name another file: the mapping holds a reference to
/// its file, so the inode cannot be freed (and its number reused) while the
/// mapping lives. Dead entries are pruned when a mapping is added.
static MAPPINGS: Mutex<BTreeMap<(u64, u64), Weak<SharedMap>>> = const_mutex(BTreeMap::new());

/// A `MAP_SHARED` mapping of a region memfd: its control page only (the
/// memory side, [`control_page`](SharedMap::control_page)), or the control
/// page and the region's bytes (the compute side,
/// [`shared`](SharedMap::shared): one per region per process).
///
/// Construction checks that the file is sealed against shrinking and long
/// enough for the mapping, so no access through it can fault (`SIGBUS`).
pub(crate) struct SharedMap {
    map: MmapRaw,
    /// The region's bytes that are mapped after the control page (0 for a
    /// control-page-only mapping).
    data_len: usize,
    /// Orders this process's accesses to the region's bytes: reads share it,
    /// writes hold it alone. It covers every access of the process, because
    /// the process maps the bytes only once (see [`MAPPINGS`]); other
    /// processes are outside its reach: see [`with_bytes`](SharedMap::with_bytes).
    lock: RwLock<()>,
}

impl std::fmt::Debug for SharedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap").field("data_len", &self.data_len).field("revoked", &self.is_revoked()).finish()
    }
}

/// An operation in flight on a region; leaving it lets `free` proceed.
pub(crate) struct Entered<'a>(&'a SharedMap);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // Release: the operation's accesses to the bytes happen before a
        // `free` that reads the count this decrement leaves.
        self.0.state().fetch_sub(1, Ordering::SeqCst);
    }
}

impl SharedMap {
    /// Maps the control page only: the memory side's view, which never
    /// touches the region's bytes (every byte access through it is out of
    /// bounds).
    pub(crate) fn control_page(file: &File) -> io::Result<SharedMap> {
        Self::open(file, 0)
    }

    /// This process's mapping of the control page and the `data_len` bytes
    /// after it: the existing one if the process maps the file already
    /// (through any attachment), a new one otherwise. A file already mapped
    /// with another length is refused: one mapping (and one lock) per region.
    pub(crate) fn shared(file: &File, data_len: usize) -> io::Result<Arc<SharedMap>> {
        let metadata = file.metadata()?;
        let id = (metadata.dev(), metadata.ino());
        let mut mappings = MAPPINGS.lock();
        if let Some(existing) = mappings.get(&id).and_then(Weak::upgrade) {
            if existing.data_len != data_len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the memfd is mapped in this process for {} bytes, not {data_len}", existing.data_len),
                ));
            }
            return Ok(existing);
        }
        let map = Arc::new(Self::open(file, data_len)?);
        mappings.retain(|_, mapping| mapping.strong_count() > 0);
        mappings.insert(id, Arc::downgrade(&map));
        Ok(map)
    }

    /// Maps the control page and `data_len` bytes after it.
    fn open(file: &File, data_len: usize) -> io::Result<SharedMap> {
        let total = HEADER
            .checked_add(data_len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a region larger than the address space"))?;
        let seals = fcntl(file, FcntlArg::F_GET_SEALS).map_err(io::Error::from)?;
        if !SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the region's memfd is not sealed against shrinking",
            ));
        }
        if file.metadata()?.len() < total as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the region's memfd is shorter than the region"));
        }
        let map = MmapOptions::new().len(total).map_raw(file)?;
        Ok(SharedMap { map, data_len, lock: RwLock::new(()) })
    }

    /// One word of the control page.
    fn word(&self, at: usize) -> &AtomicU64 {
        assert!(at % 8 == 0 && at + 8 <= HEADER, "control word offset {at}");
        // SAFETY: `at + 8 <= HEADER <= self.map.len()`, so the 8 bytes lie in
        // the mapping, which lives as long as `self` and so as the returned
        // reference; the mapping starts on a page boundary and `at` is a
        // multiple of 8, so the pointer is aligned for `AtomicU64`; every
        // party following the protocol accesses the control words only
        // atomically, and every bit pattern is a valid `u64`.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(at).cast::<u64>()) }
    }

    fn state(&self) -> &AtomicU64 {
        self.word(STATE_AT)
    }

    /// Writes a fresh control page for a region of `len` bytes (memory side,
    /// before the descriptor leaves the controller).
    pub(crate) fn init(&self, len: u64) {
        self.word(LEN_AT).store(len, Ordering::SeqCst);
        self.state().store(0, Ordering::SeqCst);
        self.word(MAGIC_AT).store(MAGIC, Ordering::SeqCst);
    }

    /// Whether the control page is one [`init`](Self::init) wrote for a
    /// region of `len` bytes.
    pub(crate) fn describes(&self, len: u64) -> bool {
        self.word(MAGIC_AT).load(Ordering::SeqCst) == MAGIC && self.word(LEN_AT).load(Ordering::SeqCst) == len
    }

    /// Whether the region is revoked.
    pub(crate) fn is_revoked(&self) -> bool {
        self.state().load(Ordering::SeqCst) & REVOKED != 0
    }

    /// Enters an operation on the region, unless it is revoked.
    pub(crate) fn enter(&self) -> Option<Entered<'_>> {
        let state = self.state();
        // Fast refusal: no increment at all on a region known revoked.
        if state.load(Ordering::SeqCst) & REVOKED != 0 {
            return None;
        }
        // Acquire: the operation's accesses cannot move before this point.
        let before = state.fetch_add(1, Ordering::SeqCst);
        let entered = Entered(self);
        (before & REVOKED == 0).then_some(entered)
    }

    /// Sets the revoked bit, then waits until no operation is in flight or
    /// `grace` has passed; returns whether the operations drained.
    pub(crate) fn revoke_and_drain(&self, grace: Duration) -> bool {
        let state = self.state();
        state.fetch_or(REVOKED, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_micros(1);
        loop {
            if state.load(Ordering::SeqCst) & !REVOKED == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// Sets the revoked bit without waiting.
    pub(crate) fn revoke(&self) {
        self.state().fetch_or(REVOKED, Ordering::SeqCst);
    }

    fn assert_within(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.data_len),
            "{len} bytes at {offset} outside a {}-byte mapping: the caller checks bounds",
            self.data_len
        );
    }

    /// Copies `buf.len()` bytes at `offset` of the region into `buf`.
    ///
    /// # Panics
    ///
    /// If the range is not within the region (callers check bounds first).
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) {
        self.assert_within(offset, buf.len());
        // Recursive: a read from inside a `with_bytes` closure must not wait
        // behind a queued writer that waits for the closure.
        let _shared = self.lock.read_recursive();
        // SAFETY: the source range `HEADER + offset .. + buf.len()` lies in
        // the mapping (checked just above), which `self` keeps alive, and the
        // file is sealed at least that long (checked in `open`), so every
        // byte is readable; `buf` is an exclusive Rust borrow, and this
        // crate never lends the mapping mutably, so the two cannot overlap;
        // every write of this process to the region's bytes goes through
        // this one mapping (`MAPPINGS`) and waits for the shared lock. Other
        // processes' writes are outside the Rust abstract machine (see
        // `with_bytes`): they can only make the copy see a mix of old and new
        // plain bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(HEADER + offset), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` to `offset` of the region.
    ///
    /// # Panics
    ///
    /// If the range is not within the region (callers check bounds first).
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        self.assert_within(offset, data.len());
        let _exclusive = self.lock.write();
        // SAFETY: the destination range lies in the mapping (checked just
        // above), which `self` keeps alive and which is mapped writable and
        // shared over a file sealed at least that long (checked in `open`);
        // this process maps the region's bytes only through this mapping
        // (`MAPPINGS`), so the exclusive lock keeps every other access of
        // this process to them (copies and lent slices, through any
        // attachment) out for the copy's duration, and no Rust reference to
        // these bytes is alive while they change; `data` cannot be a slice
        // lent from this mapping, as lending holds the shared lock that this
        // copy waits for. Other processes are outside the Rust abstract
        // machine (see `with_bytes`).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(HEADER + offset), data.len()) }
    }

    /// Lends `len` bytes at `offset` of the region to `f`, without copying.
    ///
    /// Every write of this process to the region waits until `f` returns —
    /// the process maps the region once, so every attachment shares this
    /// mapping and its lock — hence `f` must not write the region itself
    /// (through any transport of this process): it would wait for itself.
    ///
    /// Parties this lock cannot see — other processes, and the memory side's
    /// hole punch once `free`'s grace period has run out — may change the
    /// bytes while `f` looks at them, as with any `MAP_SHARED` memory: `f`
    /// may then see some bytes old and some new (or zeros). The revocation
    /// protocol (the control page's state word), not this lock, governs
    /// other processes that follow it.
    ///
    /// # Panics
    ///
    /// If the range is not within the region (callers check bounds first).
    pub(crate) fn with_bytes<T>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> T) -> T {
        self.assert_within(offset, len);
        let _shared = self.lock.read_recursive();
        // SAFETY: the range lies in the mapping (checked just above), which
        // `self` keeps alive for the whole borrow, over a file sealed at least
        // that long (checked in `open`), so it stays readable; the slice does
        // not outlive this call; this process maps the region's bytes only
        // through this mapping (`MAPPINGS`) and never lends them mutably, so
        // every write of this process to them (`write`) waits for the shared
        // lock held for the slice's whole life: nothing in this process
        // mutates them while the `&[u8]` lives. Caveat: other processes (and
        // the kernel punching the region after `free`'s grace period) are
        // outside the Rust abstract machine and outside this lock; they can
        // change the bytes underneath, which Rust's model does not describe
        // — as with every `MAP_SHARED` mapping, we rely on the bytes being
        // plain `u8`s (every bit pattern valid) and on the revocation
        // protocol to keep processes that follow it out after `free`.
        let bytes = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(HEADER + offset), len) };
        f(bytes)
    }
}
