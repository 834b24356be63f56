//! The embedded trigger log: checksummed records in segment files.
//!
//! # On disk
//!
//! A directory holds a `LOCK` file and segment files named by the position
//! of their first record, `00000000000000000000.seg` (twenty digits). A
//! segment starts with a 24-byte header (`RESCTLOG`, version, base position,
//! CRC32 of those) followed by frames. A frame is one group commit:
//!
//! ```text
//! magic "RTLF" (4) | body length u32 (4) | CRC32 of length and body (4) | body
//! body = first position u64 | entry count u32 | entries
//! entry = kind u8, then
//!   1 record:     the record (see the codec: invocation, source, payload)
//!   2 complete:   invocation u64
//!   3 truncate:   before u64
//! ```
//!
//! All integers are little-endian. Entries take consecutive positions, and a
//! frame's first position follows the previous frame's last, also across
//! segments, so a missing segment or frame is detected. Completion and
//! truncation markers are entries like records: replaying the segments on
//! open rebuilds what is pending and where the log starts.
//!
//! # Recovery
//!
//! Opening scans every frame and checks its checksum and position:
//!
//! - The last segment may end with a **torn tail**: bytes of a frame whose
//!   write a crash interrupted, with no valid frame after them. None of its
//!   records were acknowledged (an append returns only after its frame is
//!   written, and synced under the fsync policies that sync). With
//!   [`FileLogOptions::repair_torn_tail`] (the default) the tail is cut off
//!   and reported in [`OpenReport::torn_tail`]; otherwise opening fails
//!   with [`LogError::TornTail`].
//! - Anything else that does not check out (a checksum mismatch, a bad
//!   length, a wrong position, a damaged header, in any segment, or in the
//!   last one when a valid frame follows) is [`LogError::Corrupt`], naming
//!   the file and byte offset. Damage is never skipped: the operator
//!   decides (restore the file, or move the damaged segment away knowingly).

use super::codec::{self, Reader};
use super::index::PendingIndex;
use parking_lot::{Condvar, Mutex, RwLock};
use resc_core::ids::InvocationId;
use resc_core::trigger_log::{LogError, LogPosition, ReadBatch, TriggerLog, TriggerRecord};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEGMENT_MAGIC: &[u8; 8] = b"RESCTLOG";
const SEGMENT_VERSION: u32 = 1;
const SEGMENT_HEADER: u64 = 24;
const FRAME_MAGIC: &[u8; 4] = b"RTLF";
const FRAME_HEADER: u64 = 12;
/// A frame body holds at most this much (one oversized record excepted).
const MAX_FRAME_BODY: usize = 64 << 20;
/// One sparse-index entry per this many bytes of segment.
const INDEX_INTERVAL: u64 = 4096;

const ENTRY_RECORD: u8 = 1;
const ENTRY_COMPLETE: u8 = 2;
const ENTRY_TRUNCATE: u8 = 3;

/// When appends are forced to stable storage.
///
/// Every policy writes a record (into the operating system's page cache)
/// before its `append` returns, so **a crash of the process** never loses an
/// acknowledged record under any policy. They differ on **power loss or a
/// kernel crash**, which loses what the page cache had not written out.
/// Completions and truncations follow the same policy as appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Each record is written and `fdatasync`ed on its own before its
    /// `append` returns. An acknowledged record survives power loss. Appends
    /// from several threads queue behind each other's syncs: one sync per
    /// record bounds throughput.
    EveryRecord,
    /// Group commit: records queued together are written as one frame and
    /// synced once. Records that arrive while a group is being synced form
    /// the next group, which is written as soon as that sync ends, so
    /// concurrent appenders share syncs without waiting for anything else.
    /// A group closes at `max_records`; with a non-zero `max_delay` it also
    /// waits until its oldest record has waited that long (or the group is
    /// full) for more records to join. An `append` still returns only after
    /// its group is synced, so an acknowledged record survives power loss
    /// just as with `EveryRecord`; what is traded is throughput (one sync
    /// per group) against latency (up to `max_delay` more per append). A
    /// crash loses only records whose `append` had not returned.
    Batched {
        /// The most records in one group (at least 1).
        max_records: usize,
        /// How long a group waits for more records before it is written
        /// (zero: no waiting beyond the previous group's sync).
        max_delay: Duration,
    },
    /// Never sync: records reach the disk when the kernel writes the page
    /// cache back (typically within 30 s). Survives a process crash, not
    /// power loss; after power loss even older, acknowledged records may be
    /// missing, and segments other than the last may be damaged (reported
    /// as corrupt on open). For tests and benchmarks.
    Never,
}

impl FsyncPolicy {
    /// Group commit with up to 1024 records a group and no extra waiting:
    /// one appender pays one sync per append (as with `EveryRecord`), and
    /// appenders running together share syncs.
    pub fn batched() -> Self {
        FsyncPolicy::Batched { max_records: 1024, max_delay: Duration::ZERO }
    }

    /// (most records a group, longest wait, whether to sync).
    fn grouping(self) -> (usize, Duration, bool) {
        match self {
            FsyncPolicy::EveryRecord => (1, Duration::ZERO, true),
            FsyncPolicy::Batched { max_records, max_delay } => (max_records.max(1), max_delay, true),
            FsyncPolicy::Never => (usize::MAX, Duration::ZERO, false),
        }
    }
}

/// How to open a [`FileTriggerLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileLogOptions {
    /// When appends are synced; [`FsyncPolicy::EveryRecord`] by default.
    pub fsync: FsyncPolicy,
    /// A new segment starts once the current one holds this many bytes
    /// (64 MiB by default). Truncation deletes whole segments.
    pub segment_bytes: u64,
    /// Whether opening cuts off a torn tail (the default) or fails with
    /// [`LogError::TornTail`].
    pub repair_torn_tail: bool,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions { fsync: FsyncPolicy::EveryRecord, segment_bytes: 64 << 20, repair_torn_tail: true }
    }
}

impl FileLogOptions {
    /// These options with another fsync policy.
    pub fn fsync(mut self, fsync: FsyncPolicy) -> Self {
        self.fsync = fsync;
        self
    }

    /// These options with another segment size.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.max(1);
        self
    }

    /// These options, repairing torn tails or not.
    pub fn repair_torn_tail(mut self, repair: bool) -> Self {
        self.repair_torn_tail = repair;
        self
    }
}

/// What opening a [`FileTriggerLog`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Segment files in use.
    pub segments: usize,
    /// Entries (records, completions, truncations) replayed from the segments.
    pub entries: u64,
    /// Invocations pending.
    pub pending: usize,
    /// Every position before this one is truncated.
    pub start: LogPosition,
    /// The position the next entry gets.
    pub next: LogPosition,
    /// A torn tail that was cut off.
    pub torn_tail: Option<TornTail>,
    /// Segments wholly before the start, deleted on open (a truncation
    /// interrupted after its marker was durable).
    pub deleted_segments: Vec<PathBuf>,
    /// Files in the directory that are not segments, left alone.
    pub ignored_files: Vec<PathBuf>,
}

/// A torn tail cut off when opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Where its last complete frame ends: the file's new length.
    pub offset: u64,
    /// How many bytes were cut off.
    pub dropped_bytes: u64,
}

/// The embedded, durable [`TriggerLog`]: segmented, checksummed files in a
/// directory, with an explicit [`FsyncPolicy`]. See the
/// [module documentation](self) for the format and the recovery rules.
///
/// One `FileTriggerLog` at a time may have a directory open (an exclusive
/// `flock` on its `LOCK` file); opening it again elsewhere fails until the
/// first is dropped. Dropping needs no flush: every acknowledged record is
/// already written (and synced, as the policy says).
///
/// Positions are dense across records, completions and truncations: each
/// takes one. Reads (`read_from`, `records`) go to the files, through the
/// operating system's cache; an in-memory index keeps where each pending
/// invocation's records are and a sparse index of frame offsets.
pub struct FileTriggerLog {
    dir: PathBuf,
    options: FileLogOptions,
    report: OpenReport,
    /// The group-commit queue.
    commit: Mutex<Commit>,
    commit_changed: Condvar,
    /// The segment being written; only the commit leader touches it.
    writer: Mutex<Writer>,
    /// What readers see.
    state: RwLock<State>,
    _lock: File,
}

impl std::fmt::Debug for FileTriggerLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTriggerLog").field("dir", &self.dir).field("options", &self.options).finish()
    }
}

struct Commit {
    queue: VecDeque<Queued>,
    /// The position the next queued entry gets.
    next: u64,
    /// Every position before this is written (and synced per the policy).
    durable: u64,
    /// Whether a thread is writing a group now.
    leading: bool,
    /// Set when a write failed: the log refuses further work.
    failed: Option<String>,
}

struct Queued {
    position: u64,
    entry: Entry,
    /// The encoded entry (kind byte included).
    bytes: Vec<u8>,
    queued_at: Instant,
}

#[derive(Clone, Copy)]
enum Entry {
    Record(InvocationId),
    Complete(InvocationId),
    Truncate(u64),
}

struct Writer {
    base: u64,
    file: Arc<File>,
    len: u64,
}

struct Segment {
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of complete, durable frames.
    len: u64,
    /// (first position, offset) of some frames, every ~4 KiB.
    sparse: Vec<(u64, u64)>,
}

/// Where a record is: its segment, its frame, and its index among the
/// frame's entries.
#[derive(Clone, Copy)]
struct Loc {
    segment: u64,
    frame: u64,
    entry: u32,
}

#[derive(Default)]
struct State {
    /// Every position before this one is durable (the end of the log).
    end: u64,
    segments: BTreeMap<u64, Segment>,
    index: PendingIndex<Loc>,
    /// Entries applied, for the report.
    entries: u64,
}

impl State {
    fn apply(&mut self, position: u64, entry: Entry, loc: Loc) {
        self.entries += 1;
        match entry {
            Entry::Record(invocation) => self.index.record(position, invocation, loc),
            Entry::Complete(invocation) => self.index.complete(invocation),
            Entry::Truncate(before) => {
                self.index.truncate(before);
            }
        }
    }

    /// The segment holding `position` (the last one starting at or before it).
    fn segment_for(&self, position: u64) -> Option<&Segment> {
        self.segments.range(..=position).next_back().map(|(_, s)| s).or_else(|| self.segments.values().next())
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let context = context.into();
    move |e| LogError::storage(context, e)
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn segment_header(base: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[8..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(format!("syncing the directory {}", dir.display())))
}

/// A frame parsed from bytes: its first position, and its entries as
/// (kind, payload range within the body).
struct Frame {
    first: u64,
    /// (kind, start, end) within `body`.
    entries: Vec<(u8, usize, usize)>,
    body: Vec<u8>,
}

/// Why a frame did not check out.
enum FrameError {
    /// Too short, wrong magic, bad length, or checksum mismatch: could be a
    /// torn write at the end of the last segment.
    Damaged(String),
    /// Checksum fine but the content is not what this version writes.
    Invalid(String),
}

/// Parses the frame at the start of `header`+`body` bytes read from a file.
fn check_header(header: &[u8], available: u64) -> Result<(u32, u32), FrameError> {
    if (header.len() as u64) < FRAME_HEADER {
        return Err(FrameError::Damaged(format!("{} bytes, shorter than a frame header", header.len())));
    }
    if &header[..4] != FRAME_MAGIC {
        return Err(FrameError::Damaged(format!("bad frame magic {:02x?}", &header[..4])));
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if u64::from(len) + FRAME_HEADER > available {
        return Err(FrameError::Damaged(format!(
            "bad length: the frame claims {len} bytes, only {} remain in the file",
            available.saturating_sub(FRAME_HEADER)
        )));
    }
    if u64::from(len) < 12 {
        return Err(FrameError::Damaged(format!("bad length: {len} bytes cannot hold a frame body")));
    }
    Ok((len, crc))
}

fn parse_body(len: u32, crc: u32, body: Vec<u8>) -> Result<Frame, FrameError> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&body);
    let actual = hasher.finalize();
    if actual != crc {
        return Err(FrameError::Damaged(format!("checksum mismatch: stored {crc:08x}, computed {actual:08x}")));
    }
    let mut reader = Reader::new(&body);
    let first = reader.u64("the first position").map_err(FrameError::Invalid)?;
    let count = reader.u32("the entry count").map_err(FrameError::Invalid)?;
    if count == 0 {
        return Err(FrameError::Invalid("a frame with no entries".into()));
    }
    let mut entries = Vec::with_capacity(count.min(1 << 16) as usize);
    for i in 0..count {
        let kind = reader.u8("an entry kind").map_err(FrameError::Invalid)?;
        let start = reader.position();
        let result = match kind {
            ENTRY_RECORD => codec::decode_record(&mut reader).map(drop),
            ENTRY_COMPLETE | ENTRY_TRUNCATE => reader.u64("an entry").map(drop),
            other => Err(format!("unknown entry kind {other}")),
        };
        result.map_err(|e| FrameError::Invalid(format!("entry {i}: {e}")))?;
        entries.push((kind, start, reader.position()));
    }
    if reader.remaining() != 0 {
        return Err(FrameError::Invalid(format!("{} stray bytes after the entries", reader.remaining())));
    }
    Ok(Frame { first, entries, body })
}

impl Frame {
    fn entry(&self, i: usize) -> Option<(u8, &[u8])> {
        self.entries.get(i).map(|&(kind, s, e)| (kind, &self.body[s..e]))
    }

    fn record(&self, i: usize) -> Result<Option<TriggerRecord>, String> {
        match self.entry(i) {
            Some((ENTRY_RECORD, bytes)) => codec::decode_record(&mut Reader::new(bytes)).map(Some),
            _ => Ok(None),
        }
    }

    fn kinds(&self) -> impl Iterator<Item = Result<Entry, String>> + '_ {
        self.entries.iter().map(move |&(kind, s, e)| {
            let mut reader = Reader::new(&self.body[s..e]);
            match kind {
                ENTRY_RECORD => Ok(Entry::Record(InvocationId(reader.u64("the invocation")?))),
                ENTRY_COMPLETE => Ok(Entry::Complete(InvocationId(reader.u64("the invocation")?))),
                _ => Ok(Entry::Truncate(reader.u64("the position")?)),
            }
        })
    }
}

/// Reads and checks the frame at `offset` of a file whose valid bytes end
/// at `len`.
fn read_frame(file: &File, offset: u64, len: u64) -> Result<(Frame, u64), FrameError> {
    let available = len.saturating_sub(offset);
    let mut header = vec![0u8; FRAME_HEADER.min(available) as usize];
    file.read_exact_at(&mut header, offset).map_err(|e| FrameError::Damaged(format!("reading the header: {e}")))?;
    let (body_len, crc) = check_header(&header, available)?;
    let mut body = vec![0u8; body_len as usize];
    file.read_exact_at(&mut body, offset + FRAME_HEADER)
        .map_err(|e| FrameError::Damaged(format!("reading the body: {e}")))?;
    let frame = parse_body(body_len, crc, body)?;
    Ok((frame, offset + FRAME_HEADER + u64::from(body_len)))
}

fn corrupt(position: u64, path: &Path, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        position: LogPosition(position),
        location: format!("{} at byte {offset}", path.display()),
        reason: reason.into(),
    }
}

/// Whether a valid frame starts anywhere in `bytes` (a file's tail).
fn valid_frame_in(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + FRAME_HEADER as usize <= bytes.len() {
        match bytes[at..].windows(4).position(|w| w == FRAME_MAGIC) {
            None => return false,
            Some(found) => at += found,
        }
        let rest = &bytes[at..];
        if let Ok((len, crc)) = check_header(rest, rest.len() as u64) {
            let body = rest[FRAME_HEADER as usize..FRAME_HEADER as usize + len as usize].to_vec();
            if parse_body(len, crc, body).is_ok() {
                return true;
            }
        }
        at += 1;
    }
    false
}

impl FileTriggerLog {
    /// Opens (creating it if needed) the log in `dir`, recovering as the
    /// [module documentation](self) says; [`recovery`](Self::recovery) tells
    /// what was found.
    pub fn open(dir: impl AsRef<Path>, options: FileLogOptions) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_error(format!("creating the directory {}", dir.display())))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(format!("opening {}", lock_path.display())))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            LogError::storage(
                format!("locking {}", lock_path.display()),
                format!("{e}: the log is open elsewhere (another process or another FileTriggerLog)"),
            )
        })?;

        let mut report = OpenReport::default();
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(io_error(format!("listing {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
            let name = entry.file_name();
            match name.to_str().and_then(parse_segment_name) {
                Some(base) => bases.push(base),
                None if name == "LOCK" => {}
                None => report.ignored_files.push(entry.path()),
            }
        }
        bases.sort_unstable();

        let mut state = State::default();
        let mut expected: Option<u64> = None;
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let last = i + 1 == count;
            let segment = Self::recover_segment(&dir, base, last, &options, &mut expected, &mut state, &mut report)?;
            state.segments.insert(base, segment);
        }
        let next = expected.unwrap_or(0);
        state.end = next;

        // Segments wholly before the start: a truncation that was durable
        // but had not deleted them yet.
        Self::delete_before_start(&dir, &mut state, &mut report.deleted_segments)?;

        let writer = match state.segments.values().next_back() {
            Some(last) => Writer { base: last.base, file: last.file.clone(), len: last.len },
            None => {
                let segment = Self::create_segment(&dir, next)?;
                let writer = Writer { base: next, file: segment.file.clone(), len: segment.len };
                state.segments.insert(next, segment);
                writer
            }
        };
        report.segments = state.segments.len();
        report.entries = state.entries;
        report.pending = state.index.len();
        report.start = LogPosition(state.index.start());
        report.next = LogPosition(next);
        Ok(FileTriggerLog {
            dir,
            options,
            report,
            commit: Mutex::new(Commit { queue: VecDeque::new(), next, durable: next, leading: false, failed: None }),
            commit_changed: Condvar::new(),
            writer: Mutex::new(writer),
            state: RwLock::new(state),
            _lock: lock,
        })
    }

    /// What opening found and did: segments, records, a torn tail cut off…
    pub fn recovery(&self) -> &OpenReport {
        &self.report
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &FileLogOptions {
        &self.options
    }

    /// The segment files now in use, oldest first.
    pub fn segment_files(&self) -> Vec<PathBuf> {
        self.state.read().segments.values().map(|s| s.path.clone()).collect()
    }

    fn create_segment(dir: &Path, base: u64) -> Result<Segment, LogError> {
        let path = dir.join(segment_name(base));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("creating the segment {}", path.display())))?;
        file.write_all_at(&segment_header(base), 0)
            .and_then(|()| file.sync_all())
            .map_err(io_error(format!("writing the header of {}", path.display())))?;
        sync_dir(dir)?;
        Ok(Segment { base, path, file: Arc::new(file), len: SEGMENT_HEADER, sparse: Vec::new() })
    }

    fn recover_segment(
        dir: &Path,
        base: u64,
        last: bool,
        options: &FileLogOptions,
        expected: &mut Option<u64>,
        state: &mut State,
        report: &mut OpenReport,
    ) -> Result<Segment, LogError> {
        let path = dir.join(segment_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("opening the segment {}", path.display())))?;
        let file_len = file.metadata().map_err(io_error(format!("reading the size of {}", path.display())))?.len();
        let position = expected.unwrap_or(base);
        if let Some(expected) = *expected {
            if expected != base {
                return Err(corrupt(
                    expected,
                    &path,
                    0,
                    format!(
                        "the segment starts at position {base} but the previous one ends before {expected}: \
                         a segment is missing or extra"
                    ),
                ));
            }
        }
        // The header.
        if file_len < SEGMENT_HEADER {
            if !last {
                return Err(corrupt(position, &path, 0, format!("{file_len} bytes, shorter than a segment header")));
            }
            // Torn creation: the header never made it. Nothing was in it.
            Self::cut_tail(&file, &path, 0, file_len, options, report)?;
            file.write_all_at(&segment_header(base), 0)
                .and_then(|()| file.sync_all())
                .map_err(io_error(format!("rewriting the header of {}", path.display())))?;
            *expected = Some(base);
            return Ok(Segment { base, path, file: Arc::new(file), len: SEGMENT_HEADER, sparse: Vec::new() });
        }
        let mut header = [0u8; SEGMENT_HEADER as usize];
        file.read_exact_at(&mut header, 0).map_err(io_error(format!("reading {}", path.display())))?;
        if header != segment_header(base) {
            let reason = if &header[..8] != SEGMENT_MAGIC {
                "not a trigger log segment (bad magic)".to_string()
            } else if header[8..12] != SEGMENT_VERSION.to_le_bytes() {
                format!("unknown segment version {:?}", &header[8..12])
            } else {
                format!("damaged segment header (or one for another base position than the file name's {base})")
            };
            return Err(corrupt(position, &path, 0, reason));
        }

        let mut segment = Segment { base, path, file: Arc::new(file), len: SEGMENT_HEADER, sparse: Vec::new() };
        let mut next = base;
        let mut offset = SEGMENT_HEADER;
        while offset < file_len {
            match read_frame(&segment.file, offset, file_len) {
                Ok((frame, end)) => {
                    if frame.first != next {
                        return Err(corrupt(
                            next,
                            &segment.path,
                            offset,
                            format!("the frame starts at position {} where {next} was expected", frame.first),
                        ));
                    }
                    if segment.sparse.last().is_none_or(|&(_, o)| offset - o >= INDEX_INTERVAL) {
                        segment.sparse.push((frame.first, offset));
                    }
                    for (i, entry) in frame.kinds().enumerate() {
                        let entry = entry.map_err(|e| corrupt(next, &segment.path, offset, e))?;
                        let loc = Loc { segment: base, frame: offset, entry: i as u32 };
                        state.apply(next, entry, loc);
                        next += 1;
                    }
                    offset = end;
                    segment.len = end;
                }
                Err(FrameError::Invalid(reason)) => return Err(corrupt(next, &segment.path, offset, reason)),
                Err(FrameError::Damaged(reason)) => {
                    let torn = last && {
                        let mut tail = vec![0u8; (file_len - offset) as usize];
                        segment
                            .file
                            .read_exact_at(&mut tail, offset)
                            .map_err(io_error(format!("reading {}", segment.path.display())))?;
                        !valid_frame_in(&tail[1.min(tail.len())..])
                    };
                    if !torn {
                        let place = if last { "with a valid frame after it" } else { "in a segment before the last" };
                        return Err(corrupt(next, &segment.path, offset, format!("{reason} ({place})")));
                    }
                    Self::cut_tail(&segment.file, &segment.path, offset, file_len, options, report)?;
                    break;
                }
            }
        }
        *expected = Some(next);
        Ok(segment)
    }

    fn cut_tail(
        file: &File,
        path: &Path,
        offset: u64,
        file_len: u64,
        options: &FileLogOptions,
        report: &mut OpenReport,
    ) -> Result<(), LogError> {
        if file_len == offset {
            return Ok(());
        }
        if !options.repair_torn_tail {
            return Err(LogError::TornTail {
                location: format!("{} at byte {offset}", path.display()),
                torn_bytes: file_len - offset,
            });
        }
        file.set_len(offset)
            .and_then(|()| file.sync_all())
            .map_err(io_error(format!("cutting the torn tail of {}", path.display())))?;
        report.torn_tail = Some(TornTail { segment: path.to_path_buf(), offset, dropped_bytes: file_len - offset });
        Ok(())
    }

    /// Removes (from `state` and from disk) every segment but the last whose
    /// successor starts at or before the log's start.
    fn delete_before_start(dir: &Path, state: &mut State, deleted: &mut Vec<PathBuf>) -> Result<(), LogError> {
        let mut doomed = Vec::new();
        let bases: Vec<u64> = state.segments.keys().copied().collect();
        for pair in bases.windows(2) {
            if pair[1] <= state.index.start() {
                if let Some(segment) = state.segments.remove(&pair[0]) {
                    doomed.push(segment.path);
                }
            }
        }
        if doomed.is_empty() {
            return Ok(());
        }
        for path in &doomed {
            std::fs::remove_file(path).map_err(io_error(format!("deleting the segment {}", path.display())))?;
        }
        sync_dir(dir)?;
        deleted.extend(doomed);
        Ok(())
    }

    /// Queues an entry, waits until it is durable, and returns its position.
    fn submit(&self, entry: Entry, bytes: Vec<u8>) -> Result<u64, LogError> {
        let (max_records, max_delay, _) = self.options.fsync.grouping();
        let mut commit = self.commit.lock();
        if let Some(reason) = &commit.failed {
            return Err(LogError::Poisoned(reason.clone()));
        }
        let position = commit.next;
        commit.next += 1;
        let (entry, bytes) = match entry {
            // Clamped to the end of the log: the marker's own position.
            Entry::Truncate(before) => {
                let before = before.min(position);
                let mut bytes = vec![ENTRY_TRUNCATE];
                bytes.extend_from_slice(&before.to_le_bytes());
                (Entry::Truncate(before), bytes)
            }
            other => (other, bytes),
        };
        commit.queue.push_back(Queued { position, entry, bytes, queued_at: Instant::now() });
        if commit.queue.len() >= max_records {
            self.commit_changed.notify_all();
        }
        loop {
            if commit.durable > position {
                return Ok(position);
            }
            if let Some(reason) = &commit.failed {
                return Err(LogError::storage(format!("writing the trigger log in {}", self.dir.display()), reason));
            }
            if commit.leading {
                self.commit_changed.wait(&mut commit);
                continue;
            }
            // Lead: wait for companions, then write one group.
            commit.leading = true;
            while let Some(oldest) = commit.queue.front().map(|q| q.queued_at) {
                if commit.queue.len() >= max_records || oldest.elapsed() >= max_delay {
                    break;
                }
                let deadline = oldest + max_delay;
                self.commit_changed.wait_until(&mut commit, deadline);
            }
            let mut group = Vec::new();
            let mut bytes = 0usize;
            while let Some(q) = commit.queue.front() {
                if group.len() >= max_records || (!group.is_empty() && bytes + q.bytes.len() > MAX_FRAME_BODY) {
                    break;
                }
                bytes += q.bytes.len();
                if let Some(q) = commit.queue.pop_front() {
                    group.push(q);
                }
            }
            let result = parking_lot::MutexGuard::unlocked(&mut commit, || self.write_group(&group));
            commit.leading = false;
            match result {
                Ok(()) => {
                    if let Some(last) = group.last() {
                        commit.durable = last.position + 1;
                    }
                }
                Err(reason) => commit.failed = Some(reason),
            }
            self.commit_changed.notify_all();
        }
    }

    /// Writes `group` as one frame (rotating first if the segment is full),
    /// syncs per the policy, and publishes it to readers.
    fn write_group(&self, group: &[Queued]) -> Result<(), String> {
        let Some(first) = group.first() else { return Ok(()) };
        let (_, _, sync) = self.options.fsync.grouping();
        let mut writer = self.writer.lock();
        if writer.len >= self.options.segment_bytes && writer.len > SEGMENT_HEADER {
            let segment = Self::create_segment(&self.dir, first.position).map_err(|e| e.to_string())?;
            *writer = Writer { base: segment.base, file: segment.file.clone(), len: segment.len };
            self.state.write().segments.insert(segment.base, segment);
        }
        let body_len: usize = 12 + group.iter().map(|q| q.bytes.len()).sum::<usize>();
        let mut frame = Vec::with_capacity(FRAME_HEADER as usize + body_len);
        frame.extend_from_slice(FRAME_MAGIC);
        frame.extend_from_slice(&(body_len as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&first.position.to_le_bytes());
        frame.extend_from_slice(&(group.len() as u32).to_le_bytes());
        for q in group {
            frame.extend_from_slice(&q.bytes);
        }
        let crc = crc32fast::hash(&frame[4..8]);
        let mut hasher = crc32fast::Hasher::new_with_initial(crc);
        hasher.update(&frame[FRAME_HEADER as usize..]);
        frame[8..12].copy_from_slice(&hasher.finalize().to_le_bytes());

        let offset = writer.len;
        let path = self.dir.join(segment_name(writer.base));
        writer
            .file
            .write_all_at(&frame, offset)
            .map_err(|e| format!("writing {} bytes to {} at byte {offset}: {e}", frame.len(), path.display()))?;
        if sync {
            writer.file.sync_data().map_err(|e| format!("syncing {}: {e}", path.display()))?;
        }
        writer.len += frame.len() as u64;

        let mut state = self.state.write();
        let base = writer.base;
        if let Some(segment) = state.segments.get_mut(&base) {
            segment.len = writer.len;
            if segment.sparse.last().is_none_or(|&(_, o)| offset - o >= INDEX_INTERVAL) {
                segment.sparse.push((first.position, offset));
            }
        }
        for (i, q) in group.iter().enumerate() {
            let loc = Loc { segment: base, frame: offset, entry: i as u32 };
            state.apply(q.position, q.entry, loc);
        }
        if let Some(last) = group.last() {
            state.end = last.position + 1;
        }
        Ok(())
    }

    fn read_error(&self, position: u64, path: &Path, offset: u64, e: FrameError) -> LogError {
        match e {
            FrameError::Damaged(reason) | FrameError::Invalid(reason) => corrupt(position, path, offset, reason),
        }
    }
}

impl TriggerLog for FileTriggerLog {
    fn append(&self, record: &TriggerRecord) -> Result<LogPosition, LogError> {
        let len = codec::encoded_len(record)?;
        let mut bytes = Vec::with_capacity(1 + len);
        bytes.push(ENTRY_RECORD);
        codec::encode_record(record, &mut bytes);
        self.submit(Entry::Record(record.invocation), bytes).map(LogPosition)
    }

    fn read_from(&self, from: LogPosition, max: usize) -> Result<ReadBatch, LogError> {
        // Snapshot the segments (files, valid lengths) and the end together.
        let (from, end, segments) = {
            let state = self.state.read();
            let from = from.0.max(state.index.start());
            let mut segments = Vec::new();
            if let Some(first) = state.segment_for(from) {
                let indexed = first.sparse.partition_point(|(p, _)| *p <= from);
                let offset = indexed.checked_sub(1).map_or(SEGMENT_HEADER, |i| first.sparse[i].1);
                for s in state.segments.range(first.base..).map(|(_, s)| s) {
                    let start = if s.base == first.base { offset } else { SEGMENT_HEADER };
                    segments.push((s.path.clone(), s.file.clone(), start, s.len));
                }
            }
            (from, state.end, segments)
        };
        let mut records = Vec::new();
        'segments: for (path, file, mut offset, len) in segments {
            while offset < len && records.len() < max {
                let (frame, next) =
                    read_frame(&file, offset, len).map_err(|e| self.read_error(from, &path, offset, e))?;
                for i in 0..frame.entries.len() {
                    let position = frame.first + i as u64;
                    if position < from {
                        continue;
                    }
                    let record = frame.record(i).map_err(|e| corrupt(position, &path, offset, e))?;
                    if let Some(record) = record {
                        records.push((LogPosition(position), record));
                        if records.len() == max {
                            break 'segments;
                        }
                    }
                }
                offset = next;
            }
            if records.len() >= max {
                break;
            }
        }
        let next = if records.len() < max {
            LogPosition(from.max(end))
        } else {
            records.last().map_or(LogPosition(from), |(p, _)| LogPosition(p.0 + 1))
        };
        Ok(ReadBatch { records, next })
    }

    fn records(&self, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError> {
        let (locs, files) = {
            let state = self.state.read();
            let locs = state.index.records(invocation).to_vec();
            let files: HashMap<u64, (PathBuf, Arc<File>, u64)> = locs
                .iter()
                .filter_map(|(_, l)| {
                    state.segments.get(&l.segment).map(|s| (s.base, (s.path.clone(), s.file.clone(), s.len)))
                })
                .collect();
            (locs, files)
        };
        let mut out = Vec::with_capacity(locs.len());
        let mut cached: Option<(u64, u64, Frame)> = None;
        for (position, loc) in locs {
            let (path, file, len) = files.get(&loc.segment).ok_or_else(|| {
                LogError::storage(
                    format!("reading {invocation}'s record at position {position}"),
                    format!("its segment {} is gone", segment_name(loc.segment)),
                )
            })?;
            if cached.as_ref().is_none_or(|(s, o, _)| (*s, *o) != (loc.segment, loc.frame)) {
                let (frame, _) =
                    read_frame(file, loc.frame, *len).map_err(|e| self.read_error(position, path, loc.frame, e))?;
                cached = Some((loc.segment, loc.frame, frame));
            }
            let record = match &cached {
                Some((_, _, frame)) => {
                    frame.record(loc.entry as usize).map_err(|e| corrupt(position, path, loc.frame, e))?
                }
                None => None,
            };
            let record = record.ok_or_else(|| {
                corrupt(position, path, loc.frame, format!("entry {} is not the record the index expects", loc.entry))
            })?;
            out.push((LogPosition(position), record));
        }
        Ok(out)
    }

    fn complete(&self, invocation: InvocationId) -> Result<(), LogError> {
        let mut bytes = Vec::with_capacity(9);
        bytes.push(ENTRY_COMPLETE);
        bytes.extend_from_slice(&invocation.0.to_le_bytes());
        self.submit(Entry::Complete(invocation), bytes).map(drop)
    }

    fn pending(&self) -> Result<Vec<InvocationId>, LogError> {
        Ok(self.state.read().index.pending())
    }

    fn truncate(&self, before: LogPosition) -> Result<(), LogError> {
        if before.0 <= self.state.read().index.start() {
            return Ok(());
        }
        // `submit` clamps `before` and encodes the marker.
        self.submit(Entry::Truncate(before.0), Vec::new())?;
        let mut deleted = Vec::new();
        let mut state = self.state.write();
        Self::delete_before_start(&self.dir, &mut state, &mut deleted)
    }

    fn truncate_completed(&self) -> Result<LogPosition, LogError> {
        let floor = {
            let state = self.state.read();
            state.index.floor().unwrap_or(state.end)
        };
        self.truncate(LogPosition(floor))?;
        Ok(LogPosition(self.state.read().index.start().max(floor)))
    }
}
