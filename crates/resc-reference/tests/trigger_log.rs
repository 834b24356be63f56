//! The trigger-log backends of `resc-reference`: the conformance suite on
//! the in-memory and file logs (every fsync policy), and the file log's
//! recovery from torn tails, corruption, bad lengths and odd files.
//!
//! The tests sit in a module named after the file, so that
//! `cargo test -p resc-reference trigger_log` selects them.
#![allow(clippy::unwrap_used)]

use resc_core::ids::{ComputeId, InvocationId};
use resc_core::inproc::InMemoryTriggerLog;
use resc_core::testkit::trigger_log::{trigger_log_suite, Durable, Volatile};
use resc_core::trigger_log::{LogError, LogPosition, TriggerLog, TriggerRecord, TriggerSource};
use resc_reference::trigger_log::{FileLogOptions, FileTriggerLog, FsyncPolicy};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod trigger_log {
    use super::*;

    fn record(invocation: u64, payload: Vec<u8>) -> TriggerRecord {
        TriggerRecord {
            invocation: InvocationId(invocation),
            source: TriggerSource::Component { component: ComputeId(1), instance: 0 },
            payload,
        }
    }

    fn file_suite(options: FileLogOptions) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        trigger_log_suite(&Durable(move |name: &str| {
            FileTriggerLog::open(root.join(name), options.clone()).map(|l| Box::new(l) as Box<dyn TriggerLog>)
        }));
    }

    #[test]
    fn in_memory_log_conforms() {
        trigger_log_suite(&Volatile(|_: &str| Ok(Box::new(InMemoryTriggerLog::new()) as Box<dyn TriggerLog>)));
    }

    #[test]
    fn file_log_conforms_with_fsync_every_record() {
        file_suite(FileLogOptions::default().fsync(FsyncPolicy::EveryRecord));
    }

    #[test]
    fn file_log_conforms_with_group_commit() {
        file_suite(
            FileLogOptions::default()
                .fsync(FsyncPolicy::Batched { max_records: 8, max_delay: Duration::from_millis(1) }),
        );
    }

    #[test]
    fn file_log_conforms_without_fsync_and_with_small_segments() {
        // 16 KiB segments: rotation happens in nearly every check, and
        // truncation deletes segments.
        file_suite(FileLogOptions::default().fsync(FsyncPolicy::Never).segment_bytes(16 << 10));
    }

    /// A log in `dir` with `n` records of invocations 1..=3, closed again;
    /// returns their positions.
    fn fill(dir: &Path, options: FileLogOptions, n: usize) -> Vec<LogPosition> {
        let log = FileTriggerLog::open(dir, options).unwrap();
        (0..n).map(|i| log.append(&record(1 + (i % 3) as u64, vec![i as u8; 100 + i])).unwrap()).collect()
    }

    /// (offset, length) of each frame in a segment file (format in the module
    /// documentation: a 24-byte header, then magic, length, CRC, body).
    fn frames(path: &Path) -> Vec<(u64, u64)> {
        let bytes = std::fs::read(path).unwrap();
        let mut at = 24usize;
        let mut out = Vec::new();
        while at + 12 <= bytes.len() {
            assert_eq!(&bytes[at..at + 4], b"RTLF", "not a frame at {at}");
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            out.push((at as u64, (12 + len) as u64));
            at += 12 + len;
        }
        out
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        out.sort();
        out
    }

    fn patch(path: &Path, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    fn expect_corrupt(result: Result<FileTriggerLog, LogError>, file: &Path, offset: u64, reason: &str) {
        match result {
            Err(LogError::Corrupt { location, reason: why, .. }) => {
                let name = file.file_name().unwrap().to_str().unwrap();
                assert!(location.contains(name), "the error names {location}, not {name}");
                assert!(
                    location.ends_with(&format!("at byte {offset}")),
                    "the error names {location}, not byte {offset}"
                );
                assert!(why.contains(reason), "the reason is {why:?}, not about {reason:?}");
            }
            Err(other) => panic!("expected a corrupt-record error, got {other}"),
            Ok(_) => panic!("opening a damaged log succeeded"),
        }
    }

    #[test]
    fn torn_tail_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let positions = fill(dir.path(), FileLogOptions::default(), 10);
        let segment = &segments(dir.path())[0];
        let (last_offset, last_len) = *frames(segment).last().unwrap();
        // A crash in the middle of writing the last frame.
        let file_len = last_offset + last_len;
        std::fs::OpenOptions::new().write(true).open(segment).unwrap().set_len(file_len - last_len / 2).unwrap();

        // Refused when repairs are off, naming the place.
        match FileTriggerLog::open(dir.path(), FileLogOptions::default().repair_torn_tail(false)) {
            Err(LogError::TornTail { location, torn_bytes }) => {
                assert!(location.ends_with(&format!("at byte {last_offset}")), "{location}");
                assert_eq!(torn_bytes, last_len - last_len / 2);
            }
            other => panic!("expected a torn tail error, got {other:?}"),
        }
        let log = FileTriggerLog::open(dir.path(), FileLogOptions::default()).unwrap();
        let torn = log.recovery().torn_tail.clone().expect("the torn tail is reported");
        assert_eq!(torn.segment, *segment);
        assert_eq!(torn.offset, last_offset);
        assert_eq!(torn.dropped_bytes, last_len - last_len / 2);
        assert_eq!(std::fs::metadata(segment).unwrap().len(), last_offset, "the torn bytes are cut off");
        // Nine records survive; the tenth (never acknowledged: its write was torn) is gone.
        let read = log.read_from(LogPosition::START, 100).unwrap().records;
        assert_eq!(read.iter().map(|(p, _)| *p).collect::<Vec<_>>(), positions[..9]);
        assert_eq!(log.recovery().next, positions[9], "the torn record's position is handed out again");
        let again = log.append(&record(9, b"after the crash".to_vec())).unwrap();
        assert_eq!(again, positions[9]);
        drop(log);
        let log = FileTriggerLog::open(dir.path(), FileLogOptions::default()).unwrap();
        assert_eq!(log.recovery().torn_tail, None, "a repaired log opens cleanly");
        assert_eq!(log.records(InvocationId(9)).unwrap().len(), 1);
    }

    #[test]
    fn torn_header_of_a_new_segment_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), FileLogOptions::default(), 3);
        // A crash right after creating the next segment, before its header.
        let next = dir.path().join("00000000000000000003.seg");
        std::fs::write(&next, b"RESC").unwrap();
        let log = FileTriggerLog::open(dir.path(), FileLogOptions::default()).unwrap();
        assert_eq!(log.recovery().torn_tail.as_ref().map(|t| t.dropped_bytes), Some(4));
        assert_eq!(log.append(&record(1, vec![1])).unwrap(), LogPosition(3));
        assert_eq!(log.read_from(LogPosition::START, 10).unwrap().records.len(), 4);
    }

    #[test]
    fn flipped_byte_is_corrupt_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), FileLogOptions::default(), 10);
        let segment = &segments(dir.path())[0];
        let (offset, len) = frames(segment)[4];
        let mut byte = [0u8];
        use std::os::unix::fs::FileExt;
        std::fs::File::open(segment).unwrap().read_exact_at(&mut byte, offset + len / 2).unwrap();
        patch(segment, offset + len / 2, &[byte[0] ^ 0x40]);
        expect_corrupt(
            FileTriggerLog::open(dir.path(), FileLogOptions::default()),
            segment,
            offset,
            "checksum mismatch",
        );
        // Again, and with repairs refused: damage is never skipped or repaired.
        let strict = FileLogOptions::default().repair_torn_tail(false);
        expect_corrupt(FileTriggerLog::open(dir.path(), strict), segment, offset, "checksum");
    }

    #[test]
    fn flipped_byte_in_the_last_frame_is_a_torn_tail_but_earlier_segments_are_strict() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: several of them.
        let options = FileLogOptions::default().segment_bytes(512);
        fill(dir.path(), options.clone(), 12);
        let all = segments(dir.path());
        assert!(all.len() >= 3, "expected rotation, got {} segments", all.len());
        // The last frame of an earlier segment: corrupt, not a tail.
        let (offset, len) = *frames(&all[0]).last().unwrap();
        patch(&all[0], offset + len - 1, &[0xff]);
        expect_corrupt(FileTriggerLog::open(dir.path(), options.clone()), &all[0], offset, "before the last");

        // The last frame of the last segment, with nothing valid after it: a
        // write the crash interrupted (its append never returned).
        let dir = tempfile::tempdir().unwrap();
        let positions = fill(dir.path(), options.clone(), 12);
        let last = segments(dir.path()).pop().unwrap();
        let (offset, len) = *frames(&last).last().unwrap();
        patch(&last, offset + len - 1, &[0xff]);
        let log = FileTriggerLog::open(dir.path(), options).unwrap();
        assert_eq!(log.recovery().torn_tail.as_ref().map(|t| (t.offset, t.dropped_bytes)), Some((offset, len)));
        assert_eq!(log.read_from(LogPosition::START, 100).unwrap().records.len(), 11);
        assert_eq!(log.append(&record(1, vec![])).unwrap(), positions[11]);
    }

    #[test]
    fn bad_length_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), FileLogOptions::default(), 10);
        let segment = &segments(dir.path())[0];
        let (offset, _) = frames(segment)[3];
        // A length far past the end of the file …
        patch(segment, offset + 4, &u32::MAX.to_le_bytes());
        expect_corrupt(FileTriggerLog::open(dir.path(), FileLogOptions::default()), segment, offset, "bad length");
        // … and one that is merely wrong.
        patch(segment, offset + 4, &20u32.to_le_bytes());
        expect_corrupt(FileTriggerLog::open(dir.path(), FileLogOptions::default()), segment, offset, "checksum");
    }

    #[test]
    fn garbage_and_empty_segments() {
        // Garbage where a segment should be: not a segment.
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("00000000000000000000.seg");
        std::fs::write(&garbage, vec![0x17; 300]).unwrap();
        expect_corrupt(
            FileTriggerLog::open(dir.path(), FileLogOptions::default()),
            &garbage,
            0,
            "not a trigger log segment",
        );

        // An empty segment before the last: damaged.
        let dir = tempfile::tempdir().unwrap();
        let options = FileLogOptions::default().segment_bytes(512);
        fill(dir.path(), options.clone(), 12);
        let all = segments(dir.path());
        std::fs::write(&all[1], b"").unwrap();
        expect_corrupt(FileTriggerLog::open(dir.path(), options.clone()), &all[1], 0, "shorter than a segment header");

        // A missing segment in the middle: detected by positions.
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), options.clone(), 12);
        let all = segments(dir.path());
        std::fs::remove_file(&all[1]).unwrap();
        expect_corrupt(FileTriggerLog::open(dir.path(), options.clone()), &all[2], 0, "a segment is missing");

        // Other files are left alone and reported.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        let log = FileTriggerLog::open(dir.path(), FileLogOptions::default()).unwrap();
        assert_eq!(log.recovery().ignored_files, vec![dir.path().join("notes.txt")]);
    }

    #[test]
    fn reopen_keeps_pending_completions_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileLogOptions::default().fsync(FsyncPolicy::batched()).segment_bytes(1024);
        {
            let log = FileTriggerLog::open(dir.path(), options.clone()).unwrap();
            for i in 0..60u64 {
                log.append(&record(i % 6, vec![i as u8; 64])).unwrap();
            }
            log.complete(InvocationId(0)).unwrap();
            log.complete(InvocationId(3)).unwrap();
        }
        let log = FileTriggerLog::open(dir.path(), options.clone()).unwrap();
        let report = log.recovery().clone();
        assert_eq!(log.pending().unwrap(), [1, 2, 4, 5].map(InvocationId));
        assert_eq!(report.pending, 4);
        assert_eq!(report.next, LogPosition(62));
        assert_eq!(log.records(InvocationId(4)).unwrap().len(), 10);
        // Everything but invocation 5 done: truncation deletes whole segments.
        for i in [1, 2, 4] {
            log.complete(InvocationId(i)).unwrap();
        }
        let before = log.segment_files().len();
        let start = log.truncate_completed().unwrap();
        assert_eq!(start, LogPosition(5), "invocation 5's first record is at 5");
        assert_eq!(log.segment_files().len(), before, "nothing before position 5 fills a segment");
        log.complete(InvocationId(5)).unwrap();
        let start = log.truncate_completed().unwrap();
        assert!(log.segment_files().len() < before, "completed segments are deleted");
        drop(log);
        let log = FileTriggerLog::open(dir.path(), options).unwrap();
        assert!(log.pending().unwrap().is_empty());
        assert_eq!(log.recovery().start, start);
        assert!(log.read_from(LogPosition::START, 100).unwrap().records.is_empty());
        assert!(log.append(&record(9, vec![])).unwrap() > start);
    }

    #[test]
    fn group_commit_groups_concurrent_appends() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileLogOptions::default()
            .fsync(FsyncPolicy::Batched { max_records: 16, max_delay: Duration::from_millis(5) });
        let log = FileTriggerLog::open(dir.path(), options.clone()).unwrap();
        const THREADS: u64 = 8;
        const EACH: u64 = 40;
        let positions: Vec<Vec<LogPosition>> = std::thread::scope(|s| {
            let log = &log;
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    s.spawn(move || (0..EACH).map(|i| log.append(&record(t, vec![i as u8; 32])).unwrap()).collect())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for p in &positions {
            assert!(p.windows(2).all(|w| w[0] < w[1]));
        }
        let mut all: Vec<LogPosition> = positions.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len() as u64, THREADS * EACH, "positions are unique");
        drop(log);
        let frames = frames(&segments(dir.path())[0]);
        assert!(
            (frames.len() as u64) < THREADS * EACH / 2,
            "{} frames for {} appends: the group commit did not group",
            frames.len(),
            THREADS * EACH
        );
        let log = FileTriggerLog::open(dir.path(), options).unwrap();
        for t in 0..THREADS {
            let got: Vec<LogPosition> = log.records(InvocationId(t)).unwrap().into_iter().map(|(p, _)| p).collect();
            assert_eq!(got, positions[t as usize], "thread {t}'s records after reopening");
        }
    }

    #[test]
    fn one_open_log_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileTriggerLog::open(dir.path(), FileLogOptions::default()).unwrap();
        match FileTriggerLog::open(dir.path(), FileLogOptions::default()) {
            Err(LogError::Storage { reason, .. }) => assert!(reason.contains("open elsewhere"), "{reason}"),
            other => panic!("a second open succeeded or failed oddly: {other:?}"),
        }
        drop(first);
        FileTriggerLog::open(dir.path(), FileLogOptions::default()).unwrap();
    }

    #[test]
    fn oversized_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileTriggerLog::open(dir.path(), FileLogOptions::default()).unwrap();
        // The check comes before any copying, so no gigabyte is allocated twice.
        let big = record(1, vec![0; (1 << 30) + 1]);
        assert!(matches!(log.append(&big), Err(LogError::TooLarge { .. })));
    }

    #[test]
    fn measurement_runs_and_serializes() {
        let options = resc_reference::trigger_log::MeasureOptions::default().bounds(50, Duration::from_millis(300));
        let results = resc_reference::trigger_log::measure(&options).unwrap();
        // 2 sizes × 2 thread counts × (in-memory + three file policies).
        assert_eq!(results.len(), 16);
        assert!(results.iter().all(|m| m.appends > 0 && m.p50_us <= m.p99_us));
        let json = serde_json::to_string(&results).unwrap();
        assert!(json.contains("file/every-record"));
    }

    /// Prints the append figures of every backend as JSON (JetStream too when
    /// `RESC_NATS_URL` is set). Run it in release:
    /// `cargo test --release -p resc-reference --test trigger_log print_append_figures -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a test: run it on purpose"]
    fn print_append_figures() {
        let mut options = resc_reference::trigger_log::MeasureOptions::default();
        if let Ok(url) = std::env::var("RESC_NATS_URL") {
            options = options.nats_url(url);
        }
        let results = resc_reference::trigger_log::measure(&options).unwrap();
        println!("{}", serde_json::to_string_pretty(&results).unwrap());
    }
}
