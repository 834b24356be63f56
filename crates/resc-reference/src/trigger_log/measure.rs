//! Append throughput and latency of every trigger-log backend, side by side.

use super::file::{FileLogOptions, FileTriggerLog, FsyncPolicy};
use resc_core::ids::{ComputeId, InvocationId};
use resc_core::inproc::InMemoryTriggerLog;
use resc_core::trigger_log::{LogError, TriggerLog, TriggerRecord, TriggerSource};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What [`measure`] runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MeasureOptions {
    /// Payload sizes, in bytes (64 and 4096 by default).
    pub payload_bytes: Vec<usize>,
    /// Numbers of threads appending at once (1 and 4 by default).
    pub threads: Vec<usize>,
    /// Appends per case, at most (2000 by default).
    pub appends: usize,
    /// Time per case, at most (2 s by default): a slow backend is measured
    /// over fewer appends rather than holding the run up.
    pub max_case_time: Duration,
    /// Where the file logs go (a fresh directory below it per case, removed
    /// afterwards); the system's temporary directory by default.
    pub dir: Option<PathBuf>,
    /// The NATS server for the JetStream backend; JetStream is skipped when
    /// `None` (the default).
    pub nats_url: Option<String>,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions {
            payload_bytes: vec![64, 4096],
            threads: vec![1, 4],
            appends: 2000,
            max_case_time: Duration::from_secs(2),
            dir: None,
            nats_url: None,
        }
    }
}

impl MeasureOptions {
    /// These options, measuring JetStream on the server at `url` too.
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.nats_url = Some(url.into());
        self
    }

    /// These options with at most `appends` appends and `time` per case.
    pub fn bounds(mut self, appends: usize, time: Duration) -> Self {
        self.appends = appends.max(1);
        self.max_case_time = time;
        self
    }
}

/// Appends to one backend with one payload size and thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendMeasurement {
    /// `in-memory`, `file/every-record`, `file/batched`, `file/never-sync` or `jetstream`.
    pub backend: String,
    /// Payload bytes per record.
    pub payload_bytes: usize,
    /// Threads appending at once.
    pub threads: usize,
    /// Appends done.
    pub appends: usize,
    /// Wall time of the case, in seconds.
    pub seconds: f64,
    /// Appends per second, all threads together.
    pub appends_per_sec: f64,
    /// Payload MiB per second, all threads together.
    pub payload_mib_per_sec: f64,
    /// Median latency of one append, in microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency of one append, in microseconds.
    pub p99_us: f64,
}

/// Measures appends on the in-memory log, the file log (fsync every record,
/// batched, and never), and, when [`MeasureOptions::nats_url`] is set,
/// JetStream; for each payload size and thread count. Each case appends to
/// a fresh log.
pub fn measure(options: &MeasureOptions) -> Result<Vec<AppendMeasurement>, LogError> {
    let mut out = Vec::new();
    let base = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    for &payload in &options.payload_bytes {
        for &threads in &options.threads {
            let threads = threads.max(1);
            out.push(run_case("in-memory", &InMemoryTriggerLog::new(), payload, threads, options)?);
            for (name, fsync) in [
                ("file/every-record", FsyncPolicy::EveryRecord),
                ("file/batched", FsyncPolicy::batched()),
                ("file/never-sync", FsyncPolicy::Never),
            ] {
                let dir = fresh_dir(&base);
                let log = FileTriggerLog::open(&dir, FileLogOptions::default().fsync(fsync))?;
                let result = run_case(name, &log, payload, threads, options);
                drop(log);
                let _ = std::fs::remove_dir_all(&dir);
                out.push(result?);
            }
            #[cfg(feature = "jetstream")]
            if let Some(url) = &options.nats_url {
                use super::jetstream::{JetStreamConfig, JetStreamTriggerLog};
                let stream = format!("resc-measure-{}-{}", std::process::id(), unique());
                let log = JetStreamTriggerLog::connect(JetStreamConfig::new(url.clone(), stream))?;
                let result = run_case("jetstream", &log, payload, threads, options);
                log.delete_stream()?;
                out.push(result?);
            }
        }
    }
    Ok(out)
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

fn fresh_dir(base: &std::path::Path) -> PathBuf {
    base.join(format!("resc-log-measure-{}-{}", std::process::id(), unique()))
}

fn run_case(
    backend: &str,
    log: &dyn TriggerLog,
    payload: usize,
    threads: usize,
    options: &MeasureOptions,
) -> Result<AppendMeasurement, LogError> {
    let issued = AtomicUsize::new(0);
    let started = Instant::now();
    let deadline = started + options.max_case_time;
    let results: Vec<(Vec<Duration>, Option<LogError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let issued = &issued;
                s.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut record = TriggerRecord {
                        invocation: InvocationId(0),
                        source: TriggerSource::Component { component: ComputeId(t as u32), instance: 0 },
                        payload: vec![0x5a; payload],
                    };
                    loop {
                        let i = issued.fetch_add(1, Ordering::Relaxed);
                        if i >= options.appends || Instant::now() >= deadline {
                            break;
                        }
                        record.invocation = InvocationId(i as u64);
                        let begun = Instant::now();
                        if let Err(e) = log.append(&record) {
                            return (latencies, Some(e));
                        }
                        latencies.push(begun.elapsed());
                    }
                    (latencies, None)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (Vec::new(), Some(LogError::storage("measuring appends", "a thread panicked"))))
            })
            .collect()
    });
    let mut latencies = Vec::new();
    for (mine, error) in results {
        if let Some(e) = error {
            return Err(e);
        }
        latencies.extend(mine);
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    latencies.sort_unstable();
    let percentile = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)].as_secs_f64() * 1e6
    };
    let appends = latencies.len();
    Ok(AppendMeasurement {
        backend: backend.to_string(),
        payload_bytes: payload,
        threads,
        appends,
        seconds,
        appends_per_sec: appends as f64 / seconds,
        payload_mib_per_sec: (appends * payload) as f64 / seconds / (1 << 20) as f64,
        p50_us: percentile(0.5),
        p99_us: percentile(0.99),
    })
}
