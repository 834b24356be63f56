//! The embedded platform: an in-process cluster of racks and nodes with
//! compute, memory and balanced pools, that deploys resource graphs and runs
//! invocations end to end, disaggregated or aggregated into one sandbox.

mod connect;
mod elastic;
mod faults;
mod health;
mod placer;
mod provision;

use crate::alloc_meter::{self, AllocationAccount};
use crate::driver::{Command, Driver, Event, Loss};
use crate::metering::{self, ComputeTicket, InvocationMeter, Sampler, Usage};
use connect::{ConnectTiming, Connector};
pub use elastic::SwapSettings;
use elastic::{Elastic, ElasticHeaps, InstanceAccount};
pub use faults::{Fault, FaultCounts, FaultPlan};
use parking_lot::Mutex;
use placer::Placer;
pub use placer::{WarmStartConfig, WarmUsage};
use provision::ClusterProvisioner;
use resc_core::graph::ResourceGraph;
use resc_core::ids::{ComputeId, Endpoint, InvocationId, MemoryId, NodeId};
use resc_core::inproc::{InMemoryTriggerLog, InProcessFabric, InProcessMemory, ThreadSandbox};
use resc_core::memory::{CacheConfig, CacheStats};
use resc_core::resources::{Resources, GIB};
use resc_core::runtime::{Bindings, ChannelError, CodeError, Context, MemoryHandle};
use resc_core::sandbox::{CodeRegistry, EnvId, Sandbox, SandboxError, SandboxJob, SandboxOutcome};
use resc_core::scheduler::{ClusterSpec, Placement, PlacementRequest, Pool, ScheduleError};
use resc_core::size_class::SizeClasses;
use resc_core::transport::Transport;
use resc_core::trigger_log::{LogError, TriggerLog, TriggerRecord, TriggerSource};
use resc_rdma::tcp::{Directory, TcpNodeServer, TcpTransport};
use resc_swap::{FailedOp, SwapError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How the embedded cluster is built.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformConfig {
    /// Number of racks.
    pub racks: u32,
    /// Nodes per rack.
    pub nodes_per_rack: u32,
    /// What every node offers in each pool (a node may serve several).
    pub node_pools: BTreeMap<Pool, Resources>,
    /// Physical memory component sizes and the compute slot.
    pub size_classes: SizeClasses,
    /// Each compute instance's local cache.
    pub cache: CacheConfig,
    /// How often compute instances' memory is sampled.
    pub sample_interval: Duration,
    /// Seed of the scheduler's random choices.
    pub seed: u64,
    /// How compute instances reach memory components.
    pub data_path: DataPath,
    /// Keep-alive and pre-warming of compute sandboxes.
    pub warm: WarmStartConfig,
    /// How compute instances that outgrow their slot swap to the memory
    /// pool; `None`: they run over their slot instead (and metering flags
    /// them). Swapping needs userfaultfd and the
    /// [`PlatformAllocator`](crate::alloc_meter::PlatformAllocator).
    pub swap: Option<SwapSettings>,
}

/// How compute instances reach memory components.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPath {
    /// Direct calls into the memory nodes of this process.
    #[default]
    InProcess,
    /// TCP on loopback: each memory node serves its regions from a
    /// [`TcpNodeServer`]; each compute
    /// instance has its own connections, set up from the placement answer
    /// while its code loads.
    Tcp,
}

impl Default for PlatformConfig {
    /// 2 racks × 4 nodes; each node serves the compute pool (8 cores, 4 GiB),
    /// the memory pool (64 GiB) and the balanced pool (8 cores, 16 GiB).
    /// In-process memory is committed on first touch, so these are ceilings.
    fn default() -> Self {
        PlatformConfig {
            racks: 2,
            nodes_per_rack: 4,
            node_pools: BTreeMap::from([
                (Pool::Compute, Resources::new(8000, 4 * GIB)),
                (Pool::Memory, Resources::new(0, 64 * GIB)),
                (Pool::Balanced, Resources::new(8000, 16 * GIB)),
            ]),
            size_classes: SizeClasses::default(),
            cache: CacheConfig::default(),
            sample_interval: Duration::from_millis(1),
            seed: 0x5eed,
            data_path: DataPath::InProcess,
            warm: WarmStartConfig::default(),
            swap: Some(SwapSettings::default()),
        }
    }
}

/// Why the platform refused or an invocation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The configuration cannot work.
    #[error("invalid platform configuration: {0}")]
    Config(String),
    /// A compute component's code piece is not registered.
    #[error("cannot deploy `{app}`: {source}")]
    Deploy {
        /// The application.
        app: String,
        /// The missing piece.
        source: CodeError,
    },
    /// A memory component's first physical allocation exceeds the budget.
    #[error(
        "cannot deploy `{app}`: memory component `{component}` starts with {} in physical components, above the budget of {}",
        resc_core::resources::format_bytes(*initial_bytes),
        resc_core::resources::format_bytes(*budget_bytes)
    )]
    BudgetTooSmall {
        /// The application.
        app: String,
        /// The memory component.
        component: String,
        /// Its initial size rounded up to size classes.
        initial_bytes: u64,
        /// The application's budget.
        budget_bytes: u64,
    },
    /// Metering needs the counting allocator as the global allocator.
    #[error(
        "the counting allocator is not this process's global allocator; add \
         `#[global_allocator] static A: resc_reference::alloc_meter::CountingAllocator = resc_reference::alloc_meter::CountingAllocator;`"
    )]
    MeterNotInstalled,
    /// All allocation accounts are in use.
    #[error("no allocation account is free")]
    AccountsExhausted,
    /// No node had room.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A sandbox could not start.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The trigger log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A code piece failed; the invocation stopped.
    #[error("invocation {invocation} of `{app}` failed in `{component}`: {reason}")]
    ComponentFailed {
        /// The application.
        app: String,
        /// The invocation.
        invocation: InvocationId,
        /// The component.
        component: String,
        /// Why.
        reason: String,
    },
    /// A message endpoint could not be opened.
    #[error("could not open message endpoints: {0}")]
    Transport(String),
}

/// A graph deployed on the platform.
#[derive(Debug, Clone)]
pub struct Deployment {
    graph: Arc<ResourceGraph>,
    /// Compute components placed other than in a compute-pool slot.
    placements: Arc<BTreeMap<ComputeId, ComputePlacement>>,
}

/// Where a compute component's instances run, when not in the compute pool
/// with the platform's slot (the adjuster moves components that outgrow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ComputePlacement {
    /// The pool.
    pub pool: Pool,
    /// Local memory per instance, bytes (beyond it, instances swap).
    pub local_bytes: u64,
}

impl Deployment {
    /// The deployed graph.
    pub fn graph(&self) -> &Arc<ResourceGraph> {
        &self.graph
    }

    /// Where `component`'s instances run, if not in a compute-pool slot.
    pub fn placement(&self, component: ComputeId) -> Option<ComputePlacement> {
        self.placements.get(&component).copied()
    }

    /// The same deployment with `component`'s instances run as `placement`
    /// says (in the balanced pool with more local memory, say).
    pub fn with_placement(&self, component: ComputeId, placement: ComputePlacement) -> Deployment {
        let mut placements = (*self.placements).clone();
        placements.insert(component, placement);
        Deployment { graph: self.graph.clone(), placements: Arc::new(placements) }
    }
}

/// How one invocation went.
#[derive(Debug, Clone)]
pub struct InvocationReport {
    /// The invocation.
    pub invocation: InvocationId,
    /// The exit components' outputs, in topological and instance order.
    pub outputs: Vec<Vec<u8>>,
    /// End-to-end wall time.
    pub wall: Duration,
    /// Sum of the code pieces' own wall times (for start-up overhead).
    pub compute_wall: Duration,
    /// Number of trigger messages delivered (excluding the external one).
    pub triggers: usize,
    /// What was measured.
    pub usage: Usage,
    /// The local caches' counters, summed over compute instances.
    pub cache: CacheStats,
    /// How each compute instance got going: its code loading and, with a
    /// network data path, its connections being set up meanwhile.
    pub startup: Vec<StartupTrace>,
    /// Warm and cold starts during the invocation, and the memory idle warm
    /// sandboxes held meanwhile (platform-wide: the warm pool serves every
    /// application; not in `usage`, which is this invocation's own).
    pub warm: WarmUsage,
    /// Bytes each compute component moved per peer: read from and written
    /// to each memory component it accesses, sent to each compute peer, and
    /// its output carried to each component it triggers (summed over
    /// instances and attempts; measured alike aggregated or not).
    pub traffic: Traffic,
    /// Whether it ran aggregated in one sandbox.
    pub aggregated: bool,
}

/// Bytes moved, by compute component, then by peer component.
pub type Traffic = BTreeMap<String, BTreeMap<String, u64>>;

/// What `component`'s output of `len` bytes carries to the components it
/// triggers: every instance of each receives it.
fn trigger_traffic(graph: &ResourceGraph, component: ComputeId, len: usize) -> BTreeMap<String, u64> {
    graph
        .triggers(component)
        .iter()
        .map(|&t| (graph.compute(t).name.clone(), len as u64 * u64::from(graph.compute(t).parallelism)))
        .collect()
}

fn add_traffic(total: &mut Traffic, component: &str, moved: BTreeMap<String, u64>) {
    let into = total.entry(component.to_owned()).or_default();
    for (peer, bytes) in moved {
        *into.entry(peer).or_default() += bytes;
    }
}

impl InvocationReport {
    /// The invocation as the usage history sees it (paper §5.3.1): per
    /// compute component its CPU time, peak memory including what it
    /// swapped out, swap figures and bytes per peer; per memory component
    /// its peak length. Swap space and other per-instance records are
    /// folded into their components.
    pub fn observations(&self) -> Vec<(String, resc_core::usage::Observation)> {
        use resc_core::usage::Observation;
        let mut observations = Vec::new();
        for c in &self.usage.components {
            let observation = match c.side {
                metering::Side::Compute => Observation {
                    cpu_s: c.consumption.cpu_used_s,
                    memory_bytes: (c.peak_bytes + c.swap.peak_swapped_out_bytes) as f64,
                    swap_bytes: c.swap.peak_swapped_out_bytes as f64,
                    swaps: c.swap.swaps() as f64,
                    network_bytes: self
                        .traffic
                        .get(&c.name)
                        .map(|peers| peers.iter().map(|(p, &b)| (p.clone(), b as f64)).collect())
                        .unwrap_or_default(),
                },
                // Swap space is its compute component's (counted there).
                metering::Side::Memory if c.name.ends_with("#swap") => continue,
                metering::Side::Memory => Observation { memory_bytes: c.peak_bytes as f64, ..Observation::default() },
            };
            observations.push((c.name.clone(), observation));
        }
        observations
    }
}

/// One compute instance's start, in µs from the moment it was placed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartupTrace {
    /// The component.
    pub component: String,
    /// The instance.
    pub instance: u32,
    /// When its code began to run (the sandbox and code being ready).
    pub code_ready_us: f64,
    /// When connection set-up began and ended, if any was needed: the nodes
    /// holding the memory components it accesses, from the placement.
    pub connect_us: Option<(f64, f64)>,
    /// Connections set up.
    pub connections: usize,
}

impl StartupTrace {
    /// Whether setting up connections overlapped loading the code: it began
    /// before the code was ready.
    pub fn overlapped(&self) -> bool {
        self.connect_us.is_some_and(|(start, _)| start < self.code_ready_us)
    }
}

/// The in-process reference platform.
pub struct EmbeddedPlatform {
    config: PlatformConfig,
    registry: CodeRegistry,
    placer: Arc<Placer>,
    fabric: Arc<InProcessFabric>,
    memory: Arc<BTreeMap<NodeId, Arc<InProcessMemory>>>,
    sandbox: Arc<dyn Sandbox>,
    log: Arc<dyn TriggerLog>,
    next_invocation: AtomicU64,
    /// With [`DataPath::Tcp`]: where memory nodes listen, and their servers.
    tcp: Option<(Arc<Directory>, Vec<Arc<TcpNodeServer>>)>,
    /// With [`DataPath::Tcp`]: sets up new instances' connections.
    connector: Option<Connector>,
    /// Failures to inject, if any.
    faults: Option<Arc<FaultPlan>>,
    /// Node heartbeats (only when nodes can fail: with a fault plan).
    health: Option<Arc<health::Health>>,
    /// Far heaps for compute instances, when they may swap.
    swap: Option<Arc<ElasticHeaps>>,
}

impl std::fmt::Debug for EmbeddedPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPlatform").field("config", &self.config).finish_non_exhaustive()
    }
}

/// One compute instance in flight.
struct Running {
    placement: Placement,
    /// Killed by an injected fault: its end is reported as a lost compute component.
    killed: bool,
    /// The sandbox environment it runs in.
    env: EnvId,
    ticket: ComputeTicket,
    /// Its connection set-up, once done.
    connecting: Option<crossbeam_channel::Receiver<ConnectTiming>>,
    /// Its far heap, when it may swap.
    elastic: Option<Elastic>,
}

/// How an instance's end is reported to the driver.
enum Ended {
    /// As its code piece returned.
    AsReturned,
    /// Killed by an injected fault: the compute component is lost.
    Killed,
    /// A backing component of its swap space failed: whatever it computed
    /// may rest on zeros read in place of its data.
    SwapFailed(resc_swap::SwapError),
}

/// A finished instance: its component, instance and attempt, and its outcome.
type Completion = (ComputeId, u32, u32, SandboxOutcome);

/// Where the aggregated sandbox leaves the invocation's outputs, or the
/// component that failed.
type AggregatedResult = Arc<Mutex<Option<Result<Vec<Vec<u8>>, (ComputeId, CodeError)>>>>;

impl EmbeddedPlatform {
    /// Builds the cluster. Fails if metering is impossible (the counting
    /// allocator is not installed) or the configuration is inconsistent.
    pub fn new(config: PlatformConfig, registry: CodeRegistry) -> Result<Self, PlatformError> {
        if !alloc_meter::is_installed() {
            return Err(PlatformError::MeterNotInstalled);
        }
        if config.racks == 0 || config.nodes_per_rack == 0 {
            return Err(PlatformError::Config("a cluster needs at least one rack of one node".into()));
        }
        let line = config.cache.line_bytes;
        if !line.is_power_of_two() || config.cache.capacity_bytes < line {
            return Err(PlatformError::Config(format!(
                "cache lines must be a power of two no larger than the cache (lines {line} B, cache {} B)",
                config.cache.capacity_bytes
            )));
        }
        let cluster = ClusterSpec::uniform(config.racks, config.nodes_per_rack, &config.node_pools);
        let fabric = Arc::new(InProcessFabric::new());
        let mut memory = BTreeMap::new();
        for node in cluster.nodes.iter() {
            if let Some(pool) = node.pools.get(&Pool::Memory) {
                let controller = Arc::new(InProcessMemory::new(node.id, pool.memory_bytes));
                fabric.attach(controller.clone());
                memory.insert(node.id, controller);
            }
        }
        if memory.is_empty() {
            return Err(PlatformError::Config("no node serves the memory pool".into()));
        }
        let tcp = match config.data_path {
            DataPath::InProcess => None,
            DataPath::Tcp => {
                let directory = Arc::new(Directory::new());
                let mut servers = Vec::new();
                for (node, controller) in &memory {
                    let server = TcpNodeServer::bind("127.0.0.1:0", *node, Some(controller.clone()))
                        .map_err(|e| PlatformError::Config(format!("cannot serve {node} on loopback: {e}")))?;
                    directory.add_node(*node, server.local_addr());
                    servers.push(server);
                }
                Some((directory, servers))
            }
        };
        let connector = match &tcp {
            Some(_) => Some(
                Connector::start()
                    .map_err(|e| PlatformError::Config(format!("cannot start the connection thread: {e}")))?,
            ),
            None => None,
        };
        let sandbox: Arc<dyn Sandbox> = Arc::new(ThreadSandbox::new());
        let placer = Arc::new(
            Placer::new(&cluster, config.seed, sandbox.clone(), config.warm)
                .map_err(|e| PlatformError::Config(format!("cannot build the scheduler: {e}")))?,
        );
        housekeeping(&placer);
        let memory = Arc::new(memory);
        let swap = config.swap.map(|settings| {
            let transport: Arc<dyn Transport> = match &tcp {
                Some((directory, _)) => Arc::new(TcpTransport::new(directory.clone())),
                None => fabric.clone(),
            };
            let classes = &config.size_classes;
            ElasticHeaps::start(
                settings,
                classes.compute_slot(),
                classes.smallest(),
                placer.clone(),
                memory.clone(),
                transport,
            )
        });
        Ok(EmbeddedPlatform {
            placer,
            config,
            registry,
            fabric,
            memory,
            sandbox,
            log: Arc::new(InMemoryTriggerLog::new()),
            next_invocation: AtomicU64::new(1),
            tcp,
            connector,
            faults: None,
            health: None,
            swap,
        })
    }

    /// Injects the failures `plan` lists as compute instances start (for
    /// fault campaigns); the platform recovers from them.
    pub fn with_fault_plan(mut self, plan: Arc<FaultPlan>) -> Self {
        self.faults = Some(plan);
        self.health = Some(health::Health::start(self.memory.keys().copied()));
        self
    }

    /// Uses another trigger log (for example a durable one).
    pub fn with_trigger_log(mut self, log: Arc<dyn TriggerLog>) -> Self {
        self.log = log;
        self
    }

    /// Whether compute instances swap when they outgrow their slot here;
    /// `Err` says why not (switched off, or userfaultfd unavailable).
    pub fn swap_available(&self) -> Result<(), String> {
        match &self.swap {
            None => Err("swap is switched off in the platform configuration".into()),
            Some(heaps) => heaps.unavailable().map_or(Ok(()), Err),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PlatformConfig {
        &self.config
    }

    /// Bytes held by physical memory components on all memory nodes: zero
    /// when no invocation is running (every span has ended).
    pub fn memory_in_use_bytes(&self) -> u64 {
        use resc_core::pool::MemoryPool;
        self.memory.values().map(|m| m.allocated_bytes()).sum()
    }

    /// Deploys a graph: every code piece it names must be registered.
    pub fn deploy(&self, graph: ResourceGraph) -> Result<Deployment, PlatformError> {
        self.registry.check(&graph).map_err(|source| PlatformError::Deploy { app: graph.app().to_owned(), source })?;
        // A memory component whose first allocation cannot fit the budget
        // would fail on its first write, every time: refuse it now.
        let classes = &self.config.size_classes;
        for memory in graph.memory_components() {
            let initial: u64 = classes.decompose(memory.initial_bytes).iter().sum();
            if initial > graph.budget_bytes() {
                return Err(PlatformError::BudgetTooSmall {
                    app: graph.app().to_owned(),
                    component: memory.name.clone(),
                    initial_bytes: initial,
                    budget_bytes: graph.budget_bytes(),
                });
            }
        }
        let entries = graph
            .entry_points()
            .filter_map(|id| {
                let code = self.registry.loader(&graph.compute(id).code).ok()?;
                Some((resc_sched::warm::PrewarmTarget::compute(&graph, id, classes), code))
            })
            .collect();
        self.placer.deployed(graph.app(), entries);
        Ok(Deployment { graph: Arc::new(graph), placements: Arc::default() })
    }

    fn invocation_id(&self) -> InvocationId {
        InvocationId(self.next_invocation.fetch_add(1, Ordering::Relaxed))
    }

    /// Opens the message endpoints of every instance that has peers, adding
    /// each to `opened` as it goes so that a failure part-way leaks none.
    fn open_endpoints(
        &self,
        graph: &ResourceGraph,
        invocation: InvocationId,
        opened: &mut Vec<Endpoint>,
    ) -> Result<(), PlatformError> {
        for (i, component) in graph.compute_components().iter().enumerate() {
            let id = ComputeId(i as u32);
            if graph.peers(id).is_empty() {
                continue;
            }
            for instance in 0..component.parallelism {
                let endpoint = Endpoint { invocation, component: id, instance };
                self.fabric.open_endpoint(&endpoint).map_err(|e| PlatformError::Transport(e.to_string()))?;
                opened.push(endpoint);
            }
        }
        Ok(())
    }

    /// Runs one invocation as a resource graph: each compute instance in its
    /// own slot of the compute pool, each memory component in physical
    /// components of the memory pool, living exactly its span.
    pub fn invoke(&self, deployment: &Deployment, input: &[u8]) -> Result<InvocationReport, PlatformError> {
        let invocation = self.accept(input)?;
        self.run_accepted(deployment, invocation, input, |_| Ok(()))
    }

    /// Accepts an invocation: its input is in the trigger log (durably, as
    /// the log's backend defines it) when this returns, so it will run to
    /// completion even if the platform dies first (see [`recover`](Self::recover)).
    pub fn accept(&self, input: &[u8]) -> Result<InvocationId, PlatformError> {
        let invocation = self.invocation_id();
        self.log.append(&TriggerRecord { invocation, source: TriggerSource::External, payload: input.to_vec() })?;
        Ok(invocation)
    }

    /// Runs an accepted invocation. `deliver` sees its report before the
    /// invocation is marked complete in the log: an effect it has outside
    /// the platform happens at least once (a crash after it and before the
    /// mark runs the invocation again), and exactly once as observed if it
    /// is keyed by the invocation.
    pub fn run_accepted(
        &self,
        deployment: &Deployment,
        invocation: InvocationId,
        input: &[u8],
        deliver: impl FnOnce(&InvocationReport) -> Result<(), PlatformError>,
    ) -> Result<InvocationReport, PlatformError> {
        let graph = deployment.graph.clone();
        let meter = InvocationMeter::new();
        let warm_before = self.placer.usage();
        let started = Instant::now();
        let sampler = Sampler::start(meter.clone(), self.config.sample_interval);
        let provisioner = Arc::new(ClusterProvisioner::new(
            graph.clone(),
            self.config.size_classes.clone(),
            self.placer.clone(),
            self.memory.clone(),
            meter.clone(),
        ));
        let transport: Arc<dyn Transport> = self.fabric.clone();
        let bindings = Bindings::remote(graph.clone(), invocation, transport, provisioner, self.config.cache);
        let mut endpoints = Vec::new();
        let mut run = Invocation {
            platform: self,
            graph: graph.clone(),
            placements: deployment.placements.clone(),
            invocation,
            bindings: bindings.clone(),
            meter: meter.clone(),
            running: HashMap::new(),
            lost_memory: Vec::new(),
            nodes: HashMap::new(),
            channel: crossbeam_channel::unbounded(),
            compute_wall: Duration::ZERO,
            triggers: 0,
            cache: CacheStats::default(),
            startup: Vec::new(),
            traffic: Traffic::new(),
        };
        let result = self.open_endpoints(&graph, invocation, &mut endpoints).and_then(|()| run.execute(input));
        let wall = self.tear_down(&bindings, &endpoints, started, sampler);
        if let Err(PlatformError::ComponentFailed { .. }) = &result {
            // The code's own failure: running it again would fail again.
            self.log.complete(invocation)?;
        }
        let outputs = result?;
        let report = InvocationReport {
            invocation,
            outputs,
            wall,
            compute_wall: run.compute_wall,
            triggers: run.triggers,
            usage: meter.finish(wall),
            cache: run.cache,
            startup: run.startup,
            warm: self.placer.usage().since(&warm_before),
            traffic: run.traffic,
            aggregated: false,
        };
        deliver(&report)?;
        self.log.complete(invocation)?;
        Ok(report)
    }

    /// After a restart: runs every invocation the trigger log holds as
    /// accepted and not complete, from its logged input, in order of
    /// acceptance, handing each report to `deliver` as
    /// [`run_accepted`](Self::run_accepted) does. The log must hold this
    /// deployment's invocations only (one log per application). New
    /// invocations get ids past every id in the log.
    pub fn recover(
        &self,
        deployment: &Deployment,
        mut deliver: impl FnMut(&InvocationReport) -> Result<(), PlatformError>,
    ) -> Result<Vec<InvocationReport>, PlatformError> {
        let mut from = resc_core::trigger_log::LogPosition::START;
        loop {
            let batch = self.log.read_from(from, 1024)?;
            for (_, record) in &batch.records {
                self.next_invocation.fetch_max(record.invocation.0 + 1, Ordering::Relaxed);
            }
            if batch.records.is_empty() || batch.next == from {
                break;
            }
            from = batch.next;
        }
        let mut reports = Vec::new();
        for invocation in self.log.pending()? {
            let records = self.log.records(invocation)?;
            let Some((_, input)) = records.iter().find(|(_, r)| r.source == TriggerSource::External) else {
                continue; // outputs without an input: nothing to run from
            };
            let input = input.payload.clone();
            reports.push(self.run_accepted(deployment, invocation, &input, &mut deliver)?);
        }
        Ok(reports)
    }

    /// Runs one invocation the function-centric way: the same code pieces,
    /// aggregated into one sandbox (in topological order, memory components
    /// inside it), charged as one function of `function_bytes` held for the
    /// whole run.
    pub fn invoke_aggregated(
        &self,
        deployment: &Deployment,
        input: &[u8],
        function_bytes: u64,
    ) -> Result<InvocationReport, PlatformError> {
        let graph = deployment.graph.clone();
        let invocation = self.invocation_id();
        let millicores = widest_wave_millicores(&graph);
        let placement = self.placer.place(&PlacementRequest {
            app: graph.app().to_owned(),
            component: format!("{}(aggregated)", graph.app()),
            pool: Pool::Balanced,
            demand: Resources::new(millicores, function_bytes),
            first_in_graph: true,
            triggered_from: None,
            peers_on: Vec::new(),
        })?;
        let Some(account) = AllocationAccount::open() else {
            self.placer.release(&placement);
            return Err(PlatformError::AccountsExhausted);
        };
        let meter = InvocationMeter::new();
        let started = Instant::now();
        let sampler = Sampler::start(meter.clone(), self.config.sample_interval);
        let transport: Arc<dyn Transport> = self.fabric.clone();
        let bindings = Bindings::local_with_transport(graph.clone(), invocation, transport);
        let mut endpoints = Vec::new();
        let traffic = Arc::new(Mutex::new(Traffic::new()));
        let sandbox = AggregatedRun {
            graph: &graph,
            invocation,
            bindings: &bindings,
            meter: &meter,
            input,
            function_bytes,
            millicores,
            traffic: &traffic,
        };
        let result = self.run_aggregated(&sandbox, account, &mut endpoints);
        self.placer.release(&placement);
        let wall = self.tear_down(&bindings, &endpoints, started, sampler);
        let (outputs, compute_wall) = result?;
        self.log.complete(invocation)?;
        let traffic = std::mem::take(&mut *traffic.lock());
        Ok(InvocationReport {
            invocation,
            outputs,
            wall,
            compute_wall,
            triggers: 0,
            usage: meter.finish(wall),
            cache: CacheStats::default(),
            startup: Vec::new(),
            warm: WarmUsage::default(),
            traffic,
            aggregated: true,
        })
    }

    /// The fallible part of [`invoke_aggregated`](Self::invoke_aggregated):
    /// its caller releases and tears down whatever happens here.
    fn run_aggregated(
        &self,
        run: &AggregatedRun<'_>,
        account: Arc<AllocationAccount>,
        endpoints: &mut Vec<Endpoint>,
    ) -> Result<(Vec<Vec<u8>>, Duration), PlatformError> {
        let graph = run.graph;
        self.open_endpoints(graph, run.invocation, endpoints)?;
        let invocation = run.invocation;
        self.log.append(&TriggerRecord { invocation, source: TriggerSource::External, payload: run.input.to_vec() })?;
        let ticket = run.meter.compute_started(graph.app(), run.function_bytes, run.millicores, account.clone());
        let outputs: AggregatedResult = Arc::new(Mutex::new(None));
        let waves_cpu = Arc::new(Mutex::new(Duration::ZERO));
        let piece = aggregated_piece(AggregatedPiece {
            graph: graph.clone(),
            registry: self.registry.clone(),
            bindings: run.bindings.clone(),
            input: run.input.to_vec(),
            result: outputs.clone(),
            account: account.clone(),
            waves_cpu: waves_cpu.clone(),
            traffic: run.traffic.clone(),
        });
        let (tx, rx) = crossbeam_channel::bounded(1);
        let entry = graph.entry_points().next().unwrap_or(ComputeId(0));
        let job = SandboxJob {
            label: format!("{}(aggregated)", graph.app()),
            code: resc_core::sandbox::loaded(Arc::new(piece)),
            context: Context::new(run.bindings.clone(), entry, 0, Vec::new()),
            account: Some(account),
        };
        let outcome = self
            .sandbox
            .start(
                job,
                Box::new(move |outcome| {
                    let _ = tx.send(outcome);
                }),
            )
            .map_err(PlatformError::from)
            .and_then(|()| rx.recv().map_err(|_| PlatformError::Config("the sandbox ended without reporting".into())));
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                run.meter.compute_finished(ticket, Duration::ZERO);
                return Err(e);
            }
        };
        run.meter.compute_finished(ticket, outcome.usage.cpu + *waves_cpu.lock());
        let result = outputs.lock().take();
        match (outcome.output, result) {
            (Ok(_), Some(Ok(outputs))) => Ok((outputs, outcome.usage.wall)),
            (_, Some(Err((component, e)))) => Err(self.failed(graph, invocation, component, &e)),
            (Err(e), _) => Err(self.failed(graph, invocation, entry, &e)),
            (Ok(_), None) => Err(PlatformError::Config("the aggregated run ended without completing".into())),
        }
    }

    /// Ends every span still open and closes the message endpoints, whether
    /// the invocation succeeded or not; returns its wall time.
    fn tear_down(&self, bindings: &Bindings, endpoints: &[Endpoint], started: Instant, sampler: Sampler) -> Duration {
        bindings.end_all();
        for endpoint in endpoints {
            self.fabric.close_endpoint(endpoint);
        }
        let wall = started.elapsed();
        drop(sampler);
        wall
    }

    fn failed(
        &self,
        graph: &ResourceGraph,
        invocation: InvocationId,
        component: ComputeId,
        e: &CodeError,
    ) -> PlatformError {
        PlatformError::ComponentFailed {
            app: graph.app().to_owned(),
            invocation,
            component: graph.compute(component).name.clone(),
            reason: e.to_string(),
        }
    }
}

/// Expires warm sandboxes on time, between the platform's own events, for
/// as long as the platform lives.
fn housekeeping(placer: &Arc<Placer>) {
    const TICK: Duration = Duration::from_millis(100);
    let placer = Arc::downgrade(placer);
    let _ = std::thread::Builder::new().name("resc-housekeeping".into()).spawn(move || loop {
        std::thread::sleep(TICK);
        match placer.upgrade() {
            Some(placer) => placer.tick(),
            None => return,
        }
    });
}

/// What one aggregated invocation runs with.
struct AggregatedRun<'a> {
    graph: &'a Arc<ResourceGraph>,
    invocation: InvocationId,
    bindings: &'a Arc<Bindings>,
    meter: &'a Arc<InvocationMeter>,
    input: &'a [u8],
    function_bytes: u64,
    millicores: u32,
    /// Where its instances' traffic is summed.
    traffic: &'a Arc<Mutex<Traffic>>,
}

/// The CPU a function needs to run a graph's concurrent instances at once:
/// the widest trigger stage, in millicores × parallelism.
fn widest_wave_millicores(graph: &ResourceGraph) -> u32 {
    let mut by_stage: BTreeMap<u32, u32> = BTreeMap::new();
    for (i, c) in graph.compute_components().iter().enumerate() {
        let stage = graph.stage(ComputeId(i as u32));
        *by_stage.entry(stage).or_default() += c.millicores.saturating_mul(c.parallelism);
    }
    by_stage.into_values().max().unwrap_or(1000)
}

/// What the function-centric sandbox's code needs.
struct AggregatedPiece {
    graph: Arc<ResourceGraph>,
    registry: CodeRegistry,
    bindings: Arc<Bindings>,
    input: Vec<u8>,
    result: AggregatedResult,
    /// The sandbox's account, entered by the threads of concurrent instances.
    account: Arc<AllocationAccount>,
    /// CPU time of those threads, which the sandbox's own clock does not see.
    waves_cpu: Arc<Mutex<Duration>>,
    /// Bytes each component moved per peer, measured as when disaggregated.
    traffic: Arc<Mutex<Traffic>>,
}

impl AggregatedPiece {
    /// Runs one instance inside the function.
    fn run_instance(&self, component: ComputeId, instance: u32, inputs: Vec<Vec<u8>>) -> Result<Vec<u8>, CodeError> {
        let piece = self.registry.get(&self.graph.compute(component).code)?;
        let mut ctx = Context::new(self.bindings.clone(), component, instance, inputs);
        let output = resc_core::sandbox::run_piece(&*piece, &mut ctx);
        alloc_meter::uncharged(|| {
            add_traffic(&mut self.traffic.lock(), &self.graph.compute(component).name, ctx.traffic());
        });
        output
    }

    /// Runs the instances that are ready together, as threads of the one
    /// function (so that components exchanging messages can), charged to the
    /// function's account; a wave of one runs on the function's own thread.
    fn run_wave(&self, wave: Vec<(ComputeId, u32, Vec<Vec<u8>>)>) -> Vec<(ComputeId, u32, Result<Vec<u8>, CodeError>)> {
        if wave.len() == 1 {
            return wave.into_iter().map(|(c, i, inputs)| (c, i, self.run_instance(c, i, inputs))).collect();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .into_iter()
                .map(|(c, i, inputs)| {
                    let handle = scope.spawn(move || {
                        self.account.charge_during(|| {
                            let cpu = cpu_time::ThreadTime::try_now().ok();
                            let output = self.run_instance(c, i, inputs);
                            if let Some(elapsed) = cpu.and_then(|t| t.try_elapsed().ok()) {
                                *self.waves_cpu.lock() += elapsed;
                            }
                            output
                        })
                    });
                    (c, i, handle)
                })
                .collect();
            handles
                .into_iter()
                .map(|(c, i, handle)| {
                    let output = handle.join().unwrap_or_else(|_| Err(CodeError::Panicked(format!("instance {i}"))));
                    (c, i, output)
                })
                .collect()
        })
    }
}

/// The function-centric sandbox's code: the driver run inline, each wave of
/// ready instances run inside the one sandbox.
fn aggregated_piece(run: AggregatedPiece) -> impl Fn(&mut Context) -> Result<Vec<u8>, CodeError> + Send + Sync {
    move |_| {
        let mut driver = Driver::new(run.graph.clone());
        let mut queue = driver.start(&run.input);
        while !queue.is_empty() {
            let mut wave = Vec::new();
            for command in std::mem::take(&mut queue) {
                match command {
                    Command::Start { component, instance, inputs, .. } => wave.push((component, instance, inputs)),
                    Command::Reset { memory } => run.bindings.reset(memory),
                    Command::EndSpan { memory } => run.bindings.end_span(memory),
                    Command::Complete { outputs } => *run.result.lock() = Some(Ok(outputs)),
                    Command::Abort { .. } => {}
                }
            }
            for (component, instance, output) in run.run_wave(wave) {
                match output {
                    Ok(output) => {
                        alloc_meter::uncharged(|| {
                            let carried = trigger_traffic(&run.graph, component, output.len());
                            add_traffic(&mut run.traffic.lock(), &run.graph.compute(component).name, carried);
                        });
                        let attempt = driver.attempt(component);
                        queue.extend(driver.handle(Event::Finished { component, instance, attempt, output }));
                    }
                    Err(e) => {
                        *run.result.lock() = Some(Err((component, e.clone())));
                        return Err(e);
                    }
                }
            }
        }
        Ok(Vec::new())
    }
}

/// One disaggregated invocation in progress.
struct Invocation<'p> {
    platform: &'p EmbeddedPlatform,
    graph: Arc<ResourceGraph>,
    placements: Arc<BTreeMap<ComputeId, ComputePlacement>>,
    invocation: InvocationId,
    bindings: Arc<Bindings>,
    meter: Arc<InvocationMeter>,
    running: HashMap<(ComputeId, u32, u32), Running>,
    /// Memory components lost (killed) since the driver last heard.
    lost_memory: Vec<MemoryId>,
    /// Where each component's instances last ran (for locality).
    nodes: HashMap<ComputeId, NodeId>,
    channel: (crossbeam_channel::Sender<Completion>, crossbeam_channel::Receiver<Completion>),
    compute_wall: Duration,
    triggers: usize,
    cache: CacheStats,
    startup: Vec<StartupTrace>,
    traffic: Traffic,
}

impl Invocation<'_> {
    fn execute(&mut self, input: &[u8]) -> Result<Vec<Vec<u8>>, PlatformError> {
        let log = self.platform.log.clone();
        let mut driver = Driver::new(self.graph.clone());
        let mut queue = driver.start(input);
        // After the first failure nothing new starts, but every running
        // instance is waited for: its slot and its memory are released only then.
        let mut failure: Option<PlatformError> = None;
        loop {
            for command in std::mem::take(&mut queue) {
                match command {
                    Command::Start { component, instance, attempt, inputs } => {
                        if failure.is_none() {
                            if let Err(e) = self.start(component, instance, attempt, inputs) {
                                failure = Some(e);
                            }
                        }
                    }
                    Command::Reset { memory } => self.bindings.reset(memory),
                    Command::EndSpan { memory } => self.bindings.end_span(memory),
                    Command::Complete { outputs } => return Ok(outputs),
                    Command::Abort { component, reason } => {
                        failure.get_or_insert_with(|| PlatformError::ComponentFailed {
                            app: self.graph.app().to_owned(),
                            invocation: self.invocation,
                            component: self.graph.compute(component).name.clone(),
                            reason,
                        });
                    }
                }
            }
            // Losses found while starting instances (injected, or a missed heartbeat).
            if failure.is_none() {
                for memory in std::mem::take(&mut self.lost_memory) {
                    queue.extend(driver.lose_memory(memory));
                }
                if !queue.is_empty() {
                    continue;
                }
            }
            if self.running.is_empty() {
                // Nothing left that could make progress.
                return Err(failure.unwrap_or_else(|| PlatformError::Config("the invocation stalled".into())));
            }
            let completion = match &self.platform.health {
                // Wake up between completions to look for dead nodes.
                Some(_) => self.channel.1.recv_timeout(health::BEAT),
                None => self.channel.1.recv().map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected),
            };
            let (component, instance, attempt, mut outcome) = match completion {
                Ok(completion) => completion,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.missed_heartbeats();
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(PlatformError::Config("sandbox completions channel closed".into()));
                }
            };
            self.missed_heartbeats();
            let ended = self.finish(component, instance, attempt, &mut outcome);
            if failure.is_some() || attempt != driver.attempt(component) {
                continue; // stopping, or an instance already discarded
            }
            let event = match (ended, outcome.output) {
                (Ended::Killed, _) => Event::Lost { component, instance, attempt, loss: Loss::Compute },
                // The memory pool refused swap space: running it again at once would
                // meet the same full pool, so the invocation fails, saying why.
                (Ended::SwapFailed(e @ SwapError::BackingFailed { during: FailedOp::Allocate, .. }), _) => {
                    Event::Failed { component, instance, attempt, reason: format!("swap: {e}") }
                }
                // A swap component was lost: what the instance computed is
                // discarded and it runs again, like any lost compute component.
                (Ended::SwapFailed(e), _) => {
                    tracing::warn!(component = %self.graph.compute(component).name, error = %e, "swap space failed; the instance runs again");
                    Event::Lost { component, instance, attempt, loss: Loss::Compute }
                }
                (Ended::AsReturned, Ok(output)) => {
                    let logged = log.append(&TriggerRecord {
                        invocation: self.invocation,
                        source: TriggerSource::Component { component, instance },
                        payload: output.clone(),
                    });
                    if let Err(e) = logged {
                        failure = Some(e.into());
                        continue;
                    }
                    self.triggers += self.graph.triggers(component).len();
                    let carried = trigger_traffic(&self.graph, component, output.len());
                    add_traffic(&mut self.traffic, &self.graph.compute(component).name, carried);
                    Event::Finished { component, instance, attempt, output }
                }
                (Ended::AsReturned, Err(e)) => match self.lost_memory_of(&e) {
                    Some(memory) => Event::Lost { component, instance, attempt, loss: Loss::Memory(memory) },
                    None => Event::Failed { component, instance, attempt, reason: e.to_string() },
                },
            };
            queue = driver.handle(event);
        }
    }

    /// The memory component whose loss an instance's error reports: the
    /// transport could not reach its physical components. `None`: the
    /// code's own failure (a component it released itself included).
    fn lost_memory_of(&self, error: &CodeError) -> Option<MemoryId> {
        let CodeError::Channel(ChannelError::Transport { component, .. }) = error else { return None };
        match self.graph.find(component)? {
            resc_core::graph::ComponentRef::Memory(memory) => Some(memory),
            resc_core::graph::ComponentRef::Compute(_) => None,
        }
    }

    /// Applies the fault the plan has for this start, if any; returns
    /// whether the starting instance is to die.
    fn inject(&mut self, node: NodeId) -> Option<Fault> {
        let plan = self.platform.faults.clone()?;
        let fault = plan.next()?;
        match fault {
            Fault::KillCompute { .. } => {}
            Fault::KillMemory { pick } => {
                let live = self.live_memory();
                let memory = *live.get(pick % live.len().max(1))?;
                self.kill_memory(memory, |_| true);
            }
            Fault::KillNode => {
                // What the node held is gone now; the platform learns of it
                // when the node misses its heartbeats.
                for memory in self.live_memory() {
                    self.free_memory(memory, |n| n == node);
                }
                if let Some(health) = &self.platform.health {
                    health.kill(node);
                }
            }
        }
        plan.applied(fault);
        Some(fault)
    }

    /// Memory components that hold physical components now.
    fn live_memory(&self) -> Vec<MemoryId> {
        (0..self.graph.memory_components().len() as u32)
            .map(MemoryId)
            .filter(|&m| matches!(self.bindings.existing_memory(m), Some(MemoryHandle::Remote(v)) if v.address_map().regions().next().is_some()))
            .collect()
    }

    /// Frees `memory`'s physical components on the nodes `on` accepts, as
    /// their death would; returns whether any was there.
    fn free_memory(&self, memory: MemoryId, on: impl Fn(NodeId) -> bool) -> bool {
        let Some(MemoryHandle::Remote(component)) = self.bindings.existing_memory(memory) else { return false };
        let mut freed = false;
        for region in component.address_map().regions().filter(|r| on(r.node)) {
            if let Some(node) = self.platform.memory.get(&region.node) {
                use resc_core::pool::MemoryPool;
                freed |= node.free(region).is_ok();
            }
        }
        freed
    }

    /// Kills `memory`'s physical components on the nodes `on` accepts; its
    /// memory controller reports the loss to the driver.
    fn kill_memory(&mut self, memory: MemoryId, on: impl Fn(NodeId) -> bool) {
        if self.free_memory(memory, on) {
            self.lost_memory.push(memory);
        }
    }

    /// Handles nodes that missed their heartbeats: the memory components
    /// with physical components there are lost, and so are the instances
    /// running there.
    fn missed_heartbeats(&mut self) {
        let Some(health) = self.platform.health.clone() else { return };
        for node in health.declare_dead() {
            for memory in 0..self.graph.memory_components().len() as u32 {
                let memory = MemoryId(memory);
                let on_node = matches!(self.bindings.existing_memory(memory),
                    Some(MemoryHandle::Remote(c)) if c.address_map().regions().any(|r| r.node == node));
                if on_node {
                    self.lost_memory.push(memory);
                }
            }
            for running in self.running.values_mut().filter(|r| r.placement.node == node) {
                running.killed = true;
            }
        }
    }

    fn start(
        &mut self,
        component: ComputeId,
        instance: u32,
        attempt: u32,
        inputs: Vec<Vec<u8>>,
    ) -> Result<(), PlatformError> {
        let spec = self.graph.compute(component);
        let (pool, slot) = match self.placements.get(&component) {
            Some(p) => (p.pool, p.local_bytes),
            None => (Pool::Compute, self.platform.config.size_classes.compute_slot()),
        };
        let peers_on = self.graph.peers(component).iter().filter_map(|p| self.nodes.get(p).copied()).collect();
        let triggered_from = self.graph.triggered_by(component).first().and_then(|p| self.nodes.get(p).copied());
        let code = self
            .platform
            .registry
            .loader(&spec.code)
            .map_err(|source| PlatformError::Deploy { app: self.graph.app().to_owned(), source })?;
        let placer = &self.platform.placer;
        let start = placer.start(&PlacementRequest {
            app: self.graph.app().to_owned(),
            component: spec.name.clone(),
            pool,
            demand: Resources::new(spec.millicores, slot),
            first_in_graph: self.graph.stage(component) == 0,
            triggered_from,
            peers_on,
        })?;
        let placement = start.placement;
        self.nodes.insert(component, placement.node);
        let label = format!("{}#{instance}", spec.name);
        // A warm start runs in the environment kept for it; a cold one
        // prepares an environment, which loads the code.
        let env = match start.env {
            Some(env) => env,
            None => match self.platform.sandbox.prepare(&label, code.clone()) {
                Ok(env) => env,
                Err(e) => {
                    placer.release(&placement);
                    return Err(e.into());
                }
            },
        };
        let Some(account) = AllocationAccount::open() else {
            placer.release(&placement);
            self.platform.sandbox.retire(env);
            return Err(PlatformError::AccountsExhausted);
        };
        let ticket = self.meter.compute_started(&spec.name, slot, spec.millicores, account.clone());
        let elastic = self
            .platform
            .swap
            .as_ref()
            .and_then(|heaps| heaps.take(self.graph.app(), &spec.name, slot, placement.node, &self.meter));
        match &elastic {
            Some(elastic) => self.meter.compute_swaps_to(ticket, elastic.heap().clone()),
            None if self.platform.swap.as_ref().is_some_and(|h| h.unavailable().is_none()) => {
                self.meter.compute_without_swap(ticket);
            }
            None => {}
        }
        let account =
            Arc::new(InstanceAccount { allocations: account, heap: elastic.as_ref().map(|e| e.heap().clone()) });
        let placed = Instant::now();
        let mut context = Context::new(self.bindings.clone(), component, instance, inputs);
        let mut connecting = None;
        let mut transport: Arc<dyn Transport> = self.platform.fabric.clone();
        if let Some((directory, _)) = &self.platform.tcp {
            // The placement answer says where this instance's memory lives:
            // connect to those nodes now, while the sandbox loads the code.
            let tcp = Arc::new(TcpTransport::new(directory.clone()));
            let nodes = self.memory_nodes(component);
            connecting = self.platform.connector.as_ref().and_then(|c| c.connect(tcp.clone(), nodes, placed));
            transport = tcp;
        }
        let fault = self.inject(placement.node);
        let killed = matches!(fault, Some(Fault::KillCompute { .. } | Fault::KillNode));
        if let Some(Fault::KillCompute { after_ops }) = fault {
            let dying = Arc::new(resc_core::testkit::faults::FaultyTransport::new(transport));
            dying.fail_after(after_ops);
            transport = dying;
        }
        if self.platform.tcp.is_some() || killed {
            context = context.with_transport(transport);
        }
        let job = SandboxJob { label, code, context, account: Some(account) };
        let tx = self.channel.0.clone();
        let started = self.platform.sandbox.start_in(
            env,
            job,
            Box::new(move |outcome| {
                let _ = tx.send((component, instance, attempt, outcome));
            }),
        );
        match started {
            Ok(()) => {
                let running = Running { placement, killed, env, ticket, connecting, elastic };
                self.running.insert((component, instance, attempt), running);
                self.prewarm_next(component, placement.node);
                Ok(())
            }
            Err(e) => {
                placer.release(&placement);
                self.platform.sandbox.retire(env);
                self.meter.compute_finished(ticket, Duration::ZERO);
                if let (Some(heaps), Some(elastic)) = (&self.platform.swap, elastic) {
                    heaps.give_back(elastic);
                }
                Err(e.into())
            }
        }
    }

    /// While `component` runs on `node`, warms what it triggers near it.
    fn prewarm_next(&self, component: ComputeId, node: NodeId) {
        let classes = &self.platform.config.size_classes;
        let targets = resc_sched::warm::PrewarmTarget::triggered_by(&self.graph, component, classes);
        if targets.is_empty() {
            return;
        }
        let graph = &self.graph;
        let registry = &self.platform.registry;
        self.platform.placer.prewarm_next(graph.app(), &targets, node, |name| {
            let Some(resc_core::graph::ComponentRef::Compute(id)) = graph.find(name) else { return None };
            registry.loader(&graph.compute(id).code).ok()
        });
    }

    /// The nodes holding physical components of the memory components
    /// `component` accesses, as placed so far.
    fn memory_nodes(&self, component: ComputeId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .graph
            .accesses(component)
            .iter()
            .filter_map(|&m| match self.bindings.existing_memory(m) {
                Some(MemoryHandle::Remote(memory)) => Some(memory.address_map()),
                _ => None,
            })
            .flat_map(|map| map.regions().map(|r| r.node).collect::<Vec<_>>())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Releases what a finished instance held; returns how its end is to
    /// be reported.
    fn finish(&mut self, component: ComputeId, instance: u32, attempt: u32, outcome: &mut SandboxOutcome) -> Ended {
        let mut ended = Ended::AsReturned;
        if let Some(running) = self.running.remove(&(component, instance, attempt)) {
            let killed = running.killed;
            if killed {
                ended = Ended::Killed;
            }
            let name = &self.graph.compute(component).name;
            if killed {
                // A dead sandbox is not kept warm.
                self.platform.placer.release(&running.placement);
                self.platform.sandbox.retire(running.env);
            } else {
                self.platform.placer.finish(self.graph.app(), name, running.placement, running.env);
            }
            self.meter.compute_finished(running.ticket, outcome.usage.cpu);
            if let Some(elastic) = running.elastic {
                if let (Err(e), false) = (elastic.heap().check(), killed) {
                    ended = Ended::SwapFailed(e);
                }
                // An output in far memory would keep the heap and its swap
                // space alive for as long as anyone holds the output.
                if let Ok(output) = &mut outcome.output {
                    if elastic.heap().contains(output.as_ptr()) {
                        *output = output.as_slice().to_vec();
                    }
                }
                if let Some(heaps) = &self.platform.swap {
                    heaps.give_back(elastic);
                }
            }
            let connected = running.connecting.and_then(|c| c.recv().ok());
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            self.startup.push(StartupTrace {
                component: self.graph.compute(component).name.clone(),
                instance,
                code_ready_us: us(outcome.usage.load),
                connect_us: connected.map(|(begin, end, _)| (us(begin), us(end))),
                connections: connected.map_or(0, |(_, _, n)| n),
            });
        }
        self.compute_wall += outcome.usage.wall;
        self.cache.add(&outcome.context.cache_stats());
        add_traffic(&mut self.traffic, &self.graph.compute(component).name, outcome.context.traffic());
        ended
    }
}
