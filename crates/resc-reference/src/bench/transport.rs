//! `resc bench transport`: every transport, Redis, a raw TCP stream and
//! `memcpy`, side by side in one run.

use super::{measure, Bounds, Measurement};
use rand::{Rng, SeedableRng};
use resc_core::ids::NodeId;
use resc_core::inproc::{InProcessFabric, InProcessMemory};
use resc_core::pool::MemoryPool;
use resc_core::transport::{RemoteOp, Transport};
use resc_rdma::shm::{ShmMemory, ShmTransport};
use resc_rdma::tcp::{Directory, TcpMemoryPool, TcpNodeServer, TcpTransport};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The region every transport measurement reads and writes.
const REGION: u64 = 64 << 20;
/// Operations per batch in the batched measurements.
const BATCH: u32 = 16;

/// Why the benchmark could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A transport failed.
    #[error("{what}: {reason}")]
    Failed {
        /// What was being measured.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// Redis could not be started or reached.
    #[error("redis: {0} (install redis-server, pass --redis URL, or --no-redis)")]
    Redis(String),
}

fn failed(what: &str) -> impl Fn(String) -> BenchError + '_ {
    move |reason| BenchError::Failed { what: what.to_owned(), reason }
}

/// Where the Redis baseline comes from.
#[derive(Debug, Clone, Serialize)]
pub enum RedisTarget {
    /// Start `redis-server` on a free loopback port for the run.
    Spawn,
    /// Use a running server.
    Url(String),
    /// Leave Redis out.
    Skip,
}

/// Options of `resc bench transport`.
#[derive(Debug, Clone, Serialize)]
pub struct TransportBenchOptions {
    /// Operation sizes.
    pub sizes: Vec<u64>,
    /// Per-measurement bounds.
    pub bounds: Bounds,
    /// The Redis baseline.
    pub redis: RedisTarget,
}

impl Default for TransportBenchOptions {
    /// 64 B, 4 KiB, 64 KiB and 1 MiB; Redis started for the run.
    fn default() -> Self {
        TransportBenchOptions {
            sizes: vec![64, 4 << 10, 64 << 10, 1 << 20],
            bounds: Bounds::default(),
            redis: RedisTarget::Spawn,
        }
    }
}

/// A ratio the issue sets a bar or a goal on.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is compared.
    pub name: String,
    /// The measured ratio.
    pub ratio: f64,
    /// The ratio required.
    pub at_least: f64,
    /// Whether it was reached.
    pub reached: bool,
}

/// Everything `resc bench transport` measured.
#[derive(Debug, Clone, Serialize)]
pub struct TransportReport {
    /// Cores of this machine (the server and client share them).
    pub cores: usize,
    /// One entry per measurement.
    pub measurements: Vec<Measurement>,
    /// The bars and goals, as ratios within this run.
    pub checks: Vec<Check>,
}

/// A transport under test: where its region lives and how to reach it.
struct Subject {
    name: &'static str,
    pool: Box<dyn MemoryPool>,
    transport: Box<dyn Transport>,
    /// Keeps servers alive for the measurement.
    _servers: Vec<Arc<TcpNodeServer>>,
}

fn in_process() -> Subject {
    let memory = Arc::new(InProcessMemory::new(NodeId(1), 2 * REGION));
    let fabric = InProcessFabric::new();
    fabric.attach(memory.clone());
    Subject { name: "in-process", pool: Box::new(memory), transport: Box::new(fabric), _servers: vec![] }
}

fn tcp() -> Result<Subject, BenchError> {
    let memory = Arc::new(InProcessMemory::new(NodeId(1), 2 * REGION));
    let server =
        TcpNodeServer::bind("127.0.0.1:0", NodeId(1), Some(memory)).map_err(|e| failed("tcp")(e.to_string()))?;
    let directory = Arc::new(Directory::new());
    directory.add_node(NodeId(1), server.local_addr());
    Ok(Subject {
        name: "tcp",
        pool: Box::new(TcpMemoryPool::new(NodeId(1), directory.clone())),
        transport: Box::new(TcpTransport::new(directory)),
        _servers: vec![server],
    })
}

fn shm() -> Subject {
    let memory = Arc::new(ShmMemory::new(NodeId(1), 2 * REGION));
    let transport = ShmTransport::new();
    transport.add_local_node(memory.clone());
    Subject { name: "shm", pool: Box::new(memory), transport: Box::new(transport), _servers: vec![] }
}

/// Offsets of the `i`-th operation: in order, or drawn at random.
struct Offsets {
    slots: u64,
    size: u64,
    rng: rand::rngs::StdRng,
    random: bool,
}

impl Offsets {
    fn new(size: u64, span: u64, random: bool) -> Self {
        Offsets { slots: (span / size).max(1), size, rng: rand::rngs::StdRng::seed_from_u64(7), random }
    }

    fn next(&mut self, i: u64) -> u64 {
        let slot = if self.random { self.rng.random_range(0..self.slots) } else { i % self.slots };
        slot * self.size
    }
}

const PATTERNS: [(&str, bool); 2] = [("sequential", false), ("random", true)];

fn bench_subject(
    subject: &Subject,
    options: &TransportBenchOptions,
    out: &mut Vec<Measurement>,
) -> Result<(), BenchError> {
    let name = subject.name;
    let fail = failed(name);
    let region = subject.pool.allocate(REGION).map_err(|e| fail(e.to_string()))?;
    let t = subject.transport.as_ref();
    for &size in &options.sizes {
        let data = vec![0x5a_u8; size as usize];
        let mut buf = vec![0u8; size as usize];
        for (pattern, random) in PATTERNS {
            let mut at = Offsets::new(size, REGION, random);
            out.push(measure((name, "write", pattern), size, 1, options.bounds, |i| {
                t.write(&region, at.next(i), &data).map_err(|e| fail(e.to_string()))
            })?);
            let mut at = Offsets::new(size, REGION, random);
            out.push(measure((name, "read", pattern), size, 1, options.bounds, |i| {
                t.read(&region, at.next(i), &mut buf).map_err(|e| fail(e.to_string()))
            })?);
        }
        // A batch of reads posted together: what pipelining buys.
        let mut bufs = vec![vec![0u8; size as usize]; BATCH as usize];
        let mut at = Offsets::new(size, REGION, false);
        out.push(measure((name, "read", "sequential"), size, BATCH, options.bounds, |i| {
            let mut ops: Vec<RemoteOp<'_>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(k, buf)| RemoteOp::Read { region, offset: at.next(i * u64::from(BATCH) + k as u64), buf })
                .collect();
            t.execute(&mut ops).map_err(|e| fail(e.to_string()))
        })?);
    }
    subject.pool.free(&region).map_err(|e| fail(e.to_string()))
}

/// A `redis-server` child on a free loopback port, stopped when dropped.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    fn start() -> Result<RedisServer, BenchError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BenchError::Redis(e.to_string()))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Redis(format!("cannot start redis-server: {e}")))?;
        let server = RedisServer { child, url: format!("redis://127.0.0.1:{port}/") };
        // Bounded wait for it to accept connections.
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(BenchError::Redis("redis-server did not start listening within 5 s".into()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench_redis(url: &str, options: &TransportBenchOptions, out: &mut Vec<Measurement>) -> Result<(), BenchError> {
    let redis_error = |e: redis::RedisError| BenchError::Redis(e.to_string());
    let client = redis::Client::open(url).map_err(redis_error)?;
    let mut con = client.get_connection().map_err(redis_error)?;
    for &size in &options.sizes {
        let value = vec![0x5a_u8; size as usize];
        let keys = (REGION / size).clamp(1, 64);
        for k in 0..keys {
            redis::cmd("SET").arg(format!("k{k}")).arg(&value).query::<()>(&mut con).map_err(redis_error)?;
        }
        for (pattern, random) in PATTERNS {
            let mut at = Offsets::new(1, keys, random);
            out.push(measure(("redis", "set", pattern), size, 1, options.bounds, |i| {
                redis::cmd("SET").arg(format!("k{}", at.next(i))).arg(&value).query::<()>(&mut con).map_err(redis_error)
            })?);
            let mut at = Offsets::new(1, keys, random);
            out.push(measure(("redis", "get", pattern), size, 1, options.bounds, |i| {
                let got: Vec<u8> =
                    redis::cmd("GET").arg(format!("k{}", at.next(i))).query(&mut con).map_err(redis_error)?;
                if got.len() == value.len() {
                    Ok(())
                } else {
                    Err(BenchError::Redis(format!("GET returned {} bytes, not {size}", got.len())))
                }
            })?);
        }
        let mut at = Offsets::new(1, keys, false);
        out.push(measure(("redis", "get", "sequential"), size, BATCH, options.bounds, |i| {
            let mut pipe = redis::pipe();
            for k in 0..u64::from(BATCH) {
                pipe.cmd("GET").arg(format!("k{}", at.next(i * u64::from(BATCH) + k)));
            }
            pipe.query::<Vec<Vec<u8>>>(&mut con).map(|_| ()).map_err(redis_error)
        })?);
        let mut at = Offsets::new(1, keys, false);
        out.push(measure(("redis", "set", "sequential"), size, BATCH, options.bounds, |i| {
            let mut pipe = redis::pipe();
            for k in 0..u64::from(BATCH) {
                pipe.cmd("SET").arg(format!("k{}", at.next(i * u64::from(BATCH) + k))).arg(&value).ignore();
            }
            pipe.query::<()>(&mut con).map_err(redis_error)
        })?);
    }
    let _: redis::RedisResult<()> = redis::cmd("FLUSHALL").query(&mut con);
    Ok(())
}

/// Reads a stream that a loopback peer writes as fast as it can: what one
/// TCP connection can carry here.
fn bench_tcp_stream(options: &TransportBenchOptions, out: &mut Vec<Measurement>) -> Result<(), BenchError> {
    let fail = failed("tcp-stream");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| fail(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let writer = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let chunk = vec![0u8; 1 << 20];
            // Ends when the reader hangs up.
            while stream.write_all(&chunk).is_ok() {}
        }
    });
    let mut stream = TcpStream::connect(addr).map_err(|e| fail(e.to_string()))?;
    for &size in &options.sizes {
        let mut buf = vec![0u8; size as usize];
        out.push(measure(("tcp-stream", "read", "stream"), size, 1, options.bounds, |_| {
            stream.read_exact(&mut buf).map_err(|e| fail(e.to_string()))
        })?);
    }
    drop(stream);
    let _ = writer.join();
    Ok(())
}

/// Copies between buffers of this process: what memory can do here.
fn bench_memcpy(options: &TransportBenchOptions, out: &mut Vec<Measurement>) -> Result<(), BenchError> {
    let source = vec![0x5a_u8; REGION as usize];
    for &size in &options.sizes {
        let mut buf = vec![0u8; size as usize];
        for (pattern, random) in PATTERNS {
            let mut at = Offsets::new(size, REGION, random);
            out.push(measure(("memcpy", "copy", pattern), size, 1, options.bounds, |i| {
                let offset = at.next(i) as usize;
                buf.copy_from_slice(&source[offset..offset + size as usize]);
                std::hint::black_box(&buf);
                Ok::<(), BenchError>(())
            })?);
        }
    }
    Ok(())
}

fn find<'a>(
    measurements: &'a [Measurement],
    transport: &str,
    op: &str,
    size: u64,
    pattern: &str,
    batch: u32,
) -> Option<&'a Measurement> {
    measurements
        .iter()
        .find(|m| m.transport == transport && m.op == op && m.size == size && m.pattern == pattern && m.batch == batch)
}

fn checks(measurements: &[Measurement]) -> Vec<Check> {
    let mib = 1 << 20;
    let ratio = |a: Option<&Measurement>, b: Option<&Measurement>| Some(a?.gbps / b?.gbps);
    let tcp_read = find(measurements, "tcp", "read", mib, "sequential", 1);
    let mut checks = Vec::new();
    let mut push = |name: &str, r: Option<f64>, at_least: f64| {
        if let Some(ratio) = r {
            checks.push(Check { name: name.to_owned(), ratio, at_least, reached: ratio >= at_least });
        }
    };
    push(
        "bar: tcp 1 MiB sequential reads vs redis GET of 1 MiB values",
        ratio(tcp_read, find(measurements, "redis", "get", mib, "sequential", 1)),
        2.0,
    );
    push(
        "goal: tcp 1 MiB sequential reads vs the raw loopback stream",
        ratio(tcp_read, find(measurements, "tcp-stream", "read", mib, "stream", 1)),
        0.8,
    );
    let memcpy = find(measurements, "memcpy", "copy", mib, "sequential", 1);
    let shm = find(measurements, "shm", "read", mib, "sequential", 1);
    push("bar: shm 1 MiB sequential reads vs memcpy", ratio(shm, memcpy), 0.5);
    push("goal: shm 1 MiB sequential reads vs memcpy", ratio(shm, memcpy), 0.9);
    checks
}

/// Runs every measurement.
pub fn run(options: &TransportBenchOptions, progress: &mut dyn FnMut(&str)) -> Result<TransportReport, BenchError> {
    let mut measurements = Vec::new();
    progress("memcpy");
    bench_memcpy(options, &mut measurements)?;
    progress("tcp-stream");
    bench_tcp_stream(options, &mut measurements)?;
    for subject in [Ok(in_process()), Ok(shm()), tcp()] {
        let subject = subject?;
        progress(subject.name);
        bench_subject(&subject, options, &mut measurements)?;
    }
    let spawned = match &options.redis {
        RedisTarget::Spawn => Some(RedisServer::start()?),
        RedisTarget::Url(_) | RedisTarget::Skip => None,
    };
    let url = match (&options.redis, &spawned) {
        (RedisTarget::Url(url), _) => Some(url.clone()),
        (_, Some(server)) => Some(server.url.clone()),
        _ => None,
    };
    if let Some(url) = url {
        progress("redis");
        bench_redis(&url, options, &mut measurements)?;
    }
    drop(spawned);
    Ok(TransportReport {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        checks: checks(&measurements),
        measurements,
    })
}

/// The report as a text table.
pub fn table(report: &TransportReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:<6} {:>8} {:<10} {:>5} {:>9} {:>10} {:>10}",
        "transport", "op", "size", "pattern", "batch", "GB/s", "p50 µs", "p99 µs"
    );
    for m in &report.measurements {
        let _ = writeln!(
            out,
            "{:<11} {:<6} {:>8} {:<10} {:>5} {:>9.3} {:>10.1} {:>10.1}",
            m.transport,
            m.op,
            resc_core::resources::format_bytes(m.size),
            m.pattern,
            m.batch,
            m.gbps,
            m.p50_us,
            m.p99_us
        );
    }
    for check in &report.checks {
        let _ = writeln!(
            out,
            "{}: {:.2}× (needs {:.2}×) {}",
            check.name,
            check.ratio,
            check.at_least,
            if check.reached { "reached" } else { "NOT reached" }
        );
    }
    out
}
