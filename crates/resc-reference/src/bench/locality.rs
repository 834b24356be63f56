//! `resc bench locality`: the paper's Fig. 22. N compute–memory pairs read
//! their memory component at once; with locality-aware placement each
//! memory component sits on its compute component's node and is reached
//! through shared memory, without it the scheduler's random choice puts it
//! on another node, reached over TCP.

use super::Bounds;
use resc_core::ids::NodeId;
use resc_core::inproc::InProcessMemory;
use resc_core::pool::MemoryPool;
use resc_core::resources::{Resources, GIB};
use resc_core::scheduler::{ClusterSpec, PlacementRequest, Pool, PoolAwareScheduler, Scheduler};
use resc_core::transport::{RemoteRegion, Transport};
use resc_rdma::shm::{ShmMemory, ShmTransport};
use resc_rdma::tcp::{Directory, TcpMemoryPool, TcpNodeServer, TcpTransport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::transport::BenchError;

/// Options of `resc bench locality`.
#[derive(Debug, Clone, Serialize)]
pub struct LocalityOptions {
    /// Pair counts to measure.
    pub pairs: Vec<u32>,
    /// Bytes per read.
    pub size: u64,
    /// Bytes of each pair's memory component, read round robin (larger
    /// than the CPU caches, so reads come from memory).
    pub region_bytes: u64,
    /// Reads per pair (each pair stops at this count or the time bound).
    pub reads_per_pair: u64,
    /// Time bound per pair count and mode.
    pub bounds: Bounds,
    /// Racks × nodes of the simulated cluster.
    pub racks: u32,
    /// Nodes per rack.
    pub nodes_per_rack: u32,
}

impl Default for LocalityOptions {
    /// 1 to 50 pairs reading 64 KiB, on 2 racks of 4 nodes.
    fn default() -> Self {
        LocalityOptions {
            pairs: vec![1, 2, 5, 10, 20, 50],
            size: 64 << 10,
            region_bytes: 4 << 20,
            reads_per_pair: 400,
            bounds: Bounds::default(),
            racks: 2,
            nodes_per_rack: 4,
        }
    }
}

impl LocalityOptions {
    /// Few pairs and reads, for a smoke test.
    pub fn quick() -> Self {
        LocalityOptions {
            pairs: vec![1, 4],
            reads_per_pair: 20,
            region_bytes: 256 << 10,
            bounds: Bounds::quick(),
            ..Self::default()
        }
    }
}

/// One pair count in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct LocalityPoint {
    /// `locality` or `no-locality`.
    pub placement: String,
    /// Compute–memory pairs running at once.
    pub pairs: u32,
    /// Pairs whose memory landed on their compute node.
    pub colocated: u32,
    /// Aggregate throughput of all pairs, GB/s.
    pub gbps: f64,
    /// Mean latency of one read, µs.
    pub mean_latency_us: f64,
}

/// Everything `resc bench locality` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LocalityReport {
    /// Bytes per read.
    pub size: u64,
    /// One entry per pair count and mode.
    pub points: Vec<LocalityPoint>,
}

/// A node of the simulated cluster: its memory, reachable both ways.
struct Node {
    shm: Arc<ShmMemory>,
    _tcp: Arc<TcpNodeServer>,
}

fn fail(what: &str) -> impl Fn(String) -> BenchError + '_ {
    move |reason| BenchError::Failed { what: what.to_owned(), reason }
}

/// Runs both modes for every pair count.
pub fn run(options: &LocalityOptions, progress: &mut dyn FnMut(&str)) -> Result<LocalityReport, BenchError> {
    let f = fail("locality");
    let pools = BTreeMap::from([
        (Pool::Compute, Resources::new(64_000, 64 * GIB)),
        (Pool::Memory, Resources::new(0, 64 * GIB)),
    ]);
    let cluster = ClusterSpec::uniform(options.racks, options.nodes_per_rack, &pools);
    let directory = Arc::new(Directory::new());
    let mut nodes = BTreeMap::new();
    for spec in &cluster.nodes {
        let tcp_memory = Arc::new(InProcessMemory::new(spec.id, 8 * GIB));
        let tcp = TcpNodeServer::bind("127.0.0.1:0", spec.id, Some(tcp_memory)).map_err(|e| f(e.to_string()))?;
        directory.add_node(spec.id, tcp.local_addr());
        nodes.insert(spec.id, Node { shm: Arc::new(ShmMemory::new(spec.id, 8 * GIB)), _tcp: tcp });
    }
    let mut points = Vec::new();
    for &pairs in &options.pairs {
        for locality in [true, false] {
            progress(&format!("{pairs} pairs, {}", if locality { "locality" } else { "no locality" }));
            points.push(run_point(options, &cluster, &nodes, &directory, pairs, locality)?);
        }
    }
    Ok(LocalityReport { size: options.size, points })
}

/// Where one pair's memory lives and how its compute side reaches it.
struct PairSetup {
    region: RemoteRegion,
    transport: Box<dyn Transport>,
    release: Box<dyn FnOnce() + Send>,
}

fn run_point(
    options: &LocalityOptions,
    cluster: &ClusterSpec,
    nodes: &BTreeMap<NodeId, Node>,
    directory: &Arc<Directory>,
    pairs: u32,
    locality: bool,
) -> Result<LocalityPoint, BenchError> {
    let f = fail("locality");
    let mut scheduler = PoolAwareScheduler::new(cluster, u64::from(pairs));
    let mut setups = Vec::new();
    let mut colocated = 0;
    for pair in 0..pairs {
        let compute = scheduler
            .place(&request(pair, "compute", Pool::Compute, Resources::new(1000, 0), Vec::new()))
            .map_err(|e| f(e.to_string()))?;
        // Locality-aware: ask for the compute node (§5.1 step 3); otherwise
        // any node of the memory pool, as for every memory component (step 4).
        let peers = if locality { vec![compute.node] } else { Vec::new() };
        let memory = scheduler
            .place(&request(pair, "memory", Pool::Memory, Resources::memory(options.region_bytes), peers))
            .map_err(|e| f(e.to_string()))?;
        let node = nodes.get(&memory.node).ok_or_else(|| f(format!("no node {}", memory.node)))?;
        let setup = if memory.node == compute.node {
            colocated += 1;
            let region = node.shm.allocate(options.region_bytes).map_err(|e| f(e.to_string()))?;
            let transport = ShmTransport::new();
            transport.add_local_node(node.shm.clone());
            let shm = node.shm.clone();
            PairSetup {
                region,
                transport: Box::new(transport),
                release: Box::new(move || {
                    let _ = shm.free(&region);
                }),
            }
        } else {
            let pool = TcpMemoryPool::new(memory.node, directory.clone());
            let region = pool.allocate(options.region_bytes).map_err(|e| f(e.to_string()))?;
            PairSetup {
                region,
                transport: Box::new(TcpTransport::new(directory.clone())),
                release: Box::new(move || {
                    let _ = pool.free(&region);
                }),
            }
        };
        setup
            .transport
            .write(&setup.region, 0, &vec![7u8; options.region_bytes as usize])
            .map_err(|e| f(e.to_string()))?;
        setups.push(setup);
    }
    let barrier = Arc::new(Barrier::new(pairs as usize));
    let started = Instant::now();
    let results: Vec<Result<(u64, f64), BenchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = setups
            .iter()
            .map(|setup| {
                let barrier = barrier.clone();
                let (region, transport) = (setup.region, setup.transport.as_ref());
                scope.spawn(move || {
                    let mut buf = vec![0u8; options.size as usize];
                    barrier.wait();
                    let begin = Instant::now();
                    let mut reads = 0u64;
                    while reads < options.reads_per_pair && begin.elapsed() < options.bounds.max_time * 4 {
                        let offset = reads * options.size % (region.len - options.size + 1);
                        transport.read(&region, offset, &mut buf).map_err(|e| fail("locality")(e.to_string()))?;
                        reads += 1;
                    }
                    Ok((reads, begin.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(fail("locality")("a pair panicked".into()))))
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    for setup in setups {
        (setup.release)();
    }
    let mut reads = 0;
    let mut busy = 0.0;
    for result in results {
        let (n, seconds) = result?;
        reads += n;
        busy += seconds;
    }
    Ok(LocalityPoint {
        placement: if locality { "locality" } else { "no-locality" }.to_owned(),
        pairs,
        colocated,
        gbps: (reads * options.size) as f64 / wall.max(1e-9) / 1e9,
        mean_latency_us: busy / reads.max(1) as f64 * 1e6,
    })
}

fn request(pair: u32, what: &str, pool: Pool, demand: Resources, peers_on: Vec<NodeId>) -> PlacementRequest {
    PlacementRequest {
        app: "locality".to_owned(),
        component: format!("{what}{pair}"),
        pool,
        demand,
        first_in_graph: false,
        triggered_from: None,
        peers_on,
    }
}

/// The report as a text table.
pub fn table(report: &LocalityReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{:<12} {:>6} {:>10} {:>9} {:>14}", "placement", "pairs", "colocated", "GB/s", "mean µs");
    for p in &report.points {
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>10} {:>9.3} {:>14.1}",
            p.placement, p.pairs, p.colocated, p.gbps, p.mean_latency_us
        );
    }
    out
}
