//! The JetStream trigger log against a real NATS server: the conformance
//! suite (with the server's own message size and with small chunks, so
//! large records are chunked), reclaiming chunks, and a clear error for a
//! server that is not there.
//!
//! The server comes from `RESC_NATS_URL` (`./scripts/test.sh` and CI start
//! one). Without it these tests fail, saying how to start one, unless
//! `RESC_SKIP_NATS=1`.
//!
//! The tests sit in a module named after the file, so that
//! `cargo test -p resc-reference trigger_log` selects them.
#![cfg(feature = "jetstream")]
#![allow(clippy::unwrap_used)]

use resc_core::ids::InvocationId;
use resc_core::testkit::trigger_log::{trigger_log_suite, Durable};
use resc_core::trigger_log::{LogError, LogPosition, TriggerLog, TriggerRecord, TriggerSource};
use resc_reference::trigger_log::{JetStreamConfig, JetStreamTriggerLog};
use std::time::Duration;

mod trigger_log_jetstream {
    use super::*;

    /// The server's URL, or `None` when the tests are to be skipped.
    fn nats_url() -> Option<String> {
        if std::env::var("RESC_SKIP_NATS").is_ok_and(|v| v == "1") {
            eprintln!("RESC_SKIP_NATS=1: skipping the JetStream trigger log tests");
            return None;
        }
        match std::env::var("RESC_NATS_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => panic!(
                "RESC_NATS_URL is not set. The JetStream trigger log tests need a NATS server with JetStream: \
             run ./scripts/test.sh (it starts one), or start one yourself with \
             `nats-server -js -a 127.0.0.1 -p 4222 -sd \"$(mktemp -d)\"` (Debian package nats-server) \
             and set RESC_NATS_URL=nats://127.0.0.1:4222; or set RESC_SKIP_NATS=1 to skip them."
            ),
        }
    }

    /// A stream-name prefix unique to this test and run, so that tests run in
    /// parallel and reruns against a long-lived server never share a stream.
    fn run_prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("t{}-{}-{test}", std::process::id(), nanos % 1_000_000_000_000)
    }

    fn suite(test: &str, configure: fn(JetStreamConfig) -> JetStreamConfig) {
        let Some(url) = nats_url() else { return };
        let prefix = run_prefix(test);
        let streams = std::sync::Mutex::new(Vec::new());
        trigger_log_suite(&Durable(|name: &str| {
            let stream = format!("{prefix}-{name}");
            streams.lock().unwrap().push(stream.clone());
            JetStreamTriggerLog::connect(configure(JetStreamConfig::new(url.clone(), stream)))
                .map(|l| Box::new(l) as Box<dyn TriggerLog>)
        }));
        let mut streams = streams.into_inner().unwrap();
        streams.sort();
        streams.dedup();
        for stream in streams {
            JetStreamTriggerLog::connect(JetStreamConfig::new(url.clone(), stream)).unwrap().delete_stream().unwrap();
        }
    }

    #[test]
    fn jetstream_log_conforms() {
        suite("plain", |c| c);
    }

    #[test]
    fn jetstream_log_conforms_with_chunked_records() {
        // 64 KiB messages: the 1 MiB and 3 MiB payloads of the suite are chunked.
        suite("chunked", |c| c.chunk_bytes(64 << 10));
    }

    #[test]
    fn chunks_are_reclaimed_by_truncation() {
        let Some(url) = nats_url() else { return };
        let grace = Duration::from_millis(300);
        let config = JetStreamConfig::new(url, run_prefix("reclaim")).chunk_bytes(4096).chunk_grace(grace);
        let log = JetStreamTriggerLog::connect(config).unwrap();
        let big = |inv: u64| TriggerRecord {
            invocation: InvocationId(inv),
            source: TriggerSource::External,
            payload: vec![inv as u8; 50_000],
        };
        let a = log.append(&big(1)).unwrap();
        let b = log.append(&big(2)).unwrap();
        assert!(b > a);
        let (messages, _) = log.stored().unwrap();
        assert!(messages >= 26, "two 50 kB records in 4 KiB messages: {messages} messages");
        log.complete(InvocationId(1)).unwrap();
        // Chunks are reclaimed once older than the grace period.
        std::thread::sleep(grace + grace / 4);
        log.truncate_completed().unwrap();
        // Record 2 and its chunks stay, record 1's chunks go.
        assert_eq!(log.records(InvocationId(2)).unwrap(), vec![(b, big(2))]);
        let (after, _) = log.stored().unwrap();
        assert!(after < messages - 10, "record 1's chunks were not reclaimed: {after} of {messages} messages left");
        log.complete(InvocationId(2)).unwrap();
        std::thread::sleep(grace + grace / 4);
        log.truncate_completed().unwrap();
        let (left, _) = log.stored().unwrap();
        assert_eq!(left, 1, "only the truncation marker is left");
        assert!(log.read_from(LogPosition::START, 10).unwrap().records.is_empty());
        log.delete_stream().unwrap();
    }

    #[test]
    fn another_process_sees_appends_completions_and_truncation() {
        let Some(url) = nats_url() else { return };
        let config = JetStreamConfig::new(url, run_prefix("shared"));
        let writer = JetStreamTriggerLog::connect(config.clone()).unwrap();
        let reader = JetStreamTriggerLog::connect(config).unwrap();
        let rec = |inv: u64| TriggerRecord {
            invocation: InvocationId(inv),
            source: TriggerSource::External,
            payload: vec![1],
        };
        let p1 = writer.append(&rec(1)).unwrap();
        writer.append(&rec(2)).unwrap();
        assert_eq!(reader.pending().unwrap(), vec![InvocationId(1), InvocationId(2)]);
        writer.complete(InvocationId(2)).unwrap();
        assert_eq!(reader.pending().unwrap(), vec![InvocationId(1)]);
        let p3 = writer.append(&rec(3)).unwrap();
        writer.truncate(p3).unwrap();
        assert_eq!(reader.pending().unwrap(), vec![InvocationId(3)]);
        assert!(reader.records(InvocationId(1)).unwrap().is_empty());
        assert_eq!(reader.read_from(p1, 10).unwrap().records, vec![(p3, rec(3))]);
        drop(reader);
        writer.delete_stream().unwrap();
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        // Needs no server: nothing listens on port 1.
        let url = "nats://127.0.0.1:1";
        let started = std::time::Instant::now();
        match JetStreamTriggerLog::connect(JetStreamConfig::new(url, "unreachable").timeout(Duration::from_secs(2))) {
            Err(LogError::Unavailable { endpoint, .. }) => assert_eq!(endpoint, url),
            other => panic!("expected an unavailable server, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "connecting took {:?}", started.elapsed());
    }

    #[test]
    fn bad_stream_name_is_refused() {
        let err = JetStreamTriggerLog::connect(JetStreamConfig::new("nats://127.0.0.1:1", "has.dots")).unwrap_err();
        assert!(err.to_string().contains("stream name"), "{err}");
    }
}
