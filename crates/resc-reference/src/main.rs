//! `resc`: the ReSC reference platform's command line.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use resc_core::memory::CacheConfig;
use resc_core::resources::{KIB, MIB};
use resc_reference::demo::{self, ChainOptions, LrOptions, Progress};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: resc_reference::alloc_meter::PlatformAllocator = resc_reference::alloc_meter::PLATFORM_ALLOCATOR;

/// ReSC: run applications as resource graphs.
#[derive(Debug, Parser)]
#[command(name = "resc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a demo on the embedded platform.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Check a JSON template; exits non-zero with the precise error.
    Validate {
        /// The template file.
        file: PathBuf,
    },
    /// Host physical memory components for other processes over TCP.
    MemoryServer(MemoryServerArgs),
    /// Benchmarks, side by side in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the chain with a durable trigger log: finish what a crash left,
    /// then run new invocations (outputs go to a file, once each).
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The trigger log's directory (created if missing).
    #[arg(long)]
    log: PathBuf,
    /// Where outputs go, a line `<invocation> <hex>` each.
    #[arg(long)]
    outputs: PathBuf,
    /// New invocations to run after recovering.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Sleep per chain component, ms.
    #[arg(long, default_value_t = 10)]
    sleep_ms: u64,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Every transport against Redis, a raw TCP stream and memcpy.
    Transport(TransportArgs),
    /// 1 to 50 compute–memory pairs, with and without locality-aware placement.
    Locality(LocalityArgs),
    /// Scheduler throughput, scaling and stranding; a chain started cold, pre-warmed and warm.
    Sched(SchedArgs),
    /// Recovery time after each kind of fault; trigger-log cost on the warm chain.
    Faults(FaultsArgs),
    /// The aggregation ILP: ours against python-mip, OR-Tools and HiGHS on the same instances.
    Ilp(IlpArgs),
    /// Fig. 20: arrays read through userfaultfd far memory against all local.
    Swap(SwapArgs),
}

#[derive(Debug, Args)]
struct SwapArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Small arrays (for a smoke test, not for figures).
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Args)]
struct IlpArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Small instances (for a smoke test, not for figures).
    #[arg(long)]
    quick: bool,
    /// Leave the Python solvers out.
    #[arg(long)]
    no_python: bool,
    /// The baseline script (default: this repository's scripts/ilp_baselines.py).
    #[arg(long)]
    script: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FaultsArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Two invocations per measurement and 1 ms sleeps (for a smoke test, not for figures).
    #[arg(long)]
    quick: bool,
    /// Use this NATS server for the JetStream log instead of starting nats-server.
    #[arg(long)]
    nats: Option<String>,
}

#[derive(Debug, Args)]
struct SchedArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Toy sizes and 1 ms sleeps (for a smoke test, not for figures).
    #[arg(long)]
    quick: bool,
    /// Code load per sandbox environment in the chain, ms.
    #[arg(long)]
    load_ms: Option<u64>,
}

#[derive(Debug, Args)]
struct LocalityArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Few pairs and reads (for a smoke test, not for figures).
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Args)]
struct TransportArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// A few operations per measurement (for a smoke test, not for figures).
    #[arg(long)]
    quick: bool,
    /// Use this running Redis instead of starting redis-server.
    #[arg(long, conflicts_with = "no_redis")]
    redis: Option<String>,
    /// Leave Redis out.
    #[arg(long)]
    no_redis: bool,
}

#[derive(Debug, Args)]
struct MemoryServerArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The node id this server answers for.
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Memory it may hand out, MiB.
    #[arg(long, default_value_t = 1024)]
    capacity_mib: u64,
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Logistic regression as a resource graph against the function-centric baseline.
    Lr(LrArgs),
    /// The start-up test: 10 compute components in a chain.
    Chain(ChainArgs),
    /// Fig. 23–24: fixed, peak and adjusted memory sizes on synthetic profiles.
    Adjust(AdjustArgs),
    /// Fig. 25: aggregation and disaggregation at the balanced pool's watermark.
    Adapt(AdaptArgs),
}

#[derive(Debug, Args)]
struct AdaptArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Controller steps (one invocation of each application per step).
    #[arg(long, default_value_t = 60)]
    steps: u32,
    /// The pinned application's invocations in flight at its peak (1 at rest).
    #[arg(long, default_value_t = 5.2)]
    peak_load: f64,
    /// Where to write the timeline as CSV.
    #[arg(long, default_value = "out/adapt.csv")]
    csv: PathBuf,
    /// Where to write the timeline as SVG.
    #[arg(long, default_value = "out/adapt.svg")]
    svg: PathBuf,
}

#[derive(Debug, Args)]
struct AdjustArgs {
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Invocations per application and policy.
    #[arg(long, default_value_t = 10_000)]
    invocations: u32,
    /// The dynamic policy re-sizes every this many invocations (K).
    #[arg(long, default_value_t = 100)]
    every: u32,
    /// What one growth step stalls an invocation, ms.
    #[arg(long, default_value_t = 10.0)]
    step_ms: f64,
}

#[derive(Debug, Args)]
struct LrArgs {
    /// Data set size in MB; repeat for several (default: the paper's 12 and 44).
    #[arg(long = "input-mb")]
    input_mb: Vec<f64>,
    /// Measured runs per input and mode (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: u32,
    /// Compute slot (local memory per compute instance), MiB.
    #[arg(long, default_value_t = 4)]
    slot_mib: u64,
    /// Local cache per compute instance, KiB.
    #[arg(long, default_value_t = 1024)]
    cache_kib: u64,
    /// Read-ahead per channel, KiB (0: off).
    #[arg(long, default_value_t = CacheConfig::DEFAULT_READ_AHEAD / KIB)]
    read_ahead_kib: u64,
    /// Smallest memory size class, MiB.
    #[arg(long, default_value_t = 1)]
    min_class_mib: u64,
    /// Largest memory size class, MiB.
    #[arg(long, default_value_t = 64)]
    max_class_mib: u64,
    /// Training epochs.
    #[arg(long, default_value_t = 100)]
    epochs: u32,
    /// Where to write the memory-over-time chart.
    #[arg(long, default_value = "out/lr-memory.svg")]
    svg: PathBuf,
    /// How compute instances reach memory: `in-process` or `tcp` (loopback,
    /// connections set up while each piece's code loads).
    #[arg(long, value_enum, default_value_t = DataPathArg::InProcess)]
    data_path: DataPathArg,
    /// Print all figures as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DataPathArg {
    InProcess,
    Tcp,
}

#[derive(Debug, Args)]
struct ChainArgs {
    /// Sleep per component, ms.
    #[arg(long, default_value_t = 100)]
    sleep_ms: u64,
    /// Invocations.
    #[arg(long, default_value_t = 5)]
    repeat: u32,
    /// Print all figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// A progress bar on standard error; invisible when it is not a terminal.
fn progress_bar() -> (ProgressBar, impl FnMut(Progress)) {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} invocations, {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("running");
    let handle = bar.clone();
    (bar, move |p| match p {
        Progress::Total(n) => handle.set_length(n),
        Progress::Step => handle.inc(1),
    })
}

fn demo_lr(args: LrArgs) -> Result<(), String> {
    let defaults = LrOptions::default();
    let options = LrOptions {
        inputs_mb: if args.input_mb.is_empty() { defaults.inputs_mb } else { args.input_mb },
        repeat: args.repeat,
        slot_bytes: args.slot_mib * MIB,
        memory_classes: (args.min_class_mib * MIB, args.max_class_mib * MIB),
        cache: CacheConfig::new(args.cache_kib * KIB, 4 * KIB).with_read_ahead(args.read_ahead_kib * KIB),
        epochs: args.epochs,
        data_path: match args.data_path {
            DataPathArg::InProcess => resc_reference::embedded::DataPath::InProcess,
            DataPathArg::Tcp => resc_reference::embedded::DataPath::Tcp,
        },
    };
    let (bar, mut on_progress) = progress_bar();
    let report = demo::run_lr(&options, &mut on_progress).map_err(|e| e.to_string());
    bar.finish_and_clear();
    let report = report?;
    write_out(&args.svg, &resc_reference::svg::lr_memory_chart(&report))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", demo::lr_table(&report));
        println!("\nMemory over time: {}", args.svg.display());
    }
    Ok(())
}

fn demo_chain(args: &ChainArgs) -> Result<(), String> {
    let (bar, mut on_progress) = progress_bar();
    let report = demo::run_chain(&ChainOptions { sleep_ms: args.sleep_ms, repeat: args.repeat }, &mut on_progress)
        .map_err(|e| e.to_string());
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", demo::chain_table(&report));
    }
    Ok(())
}

fn validate(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let graph = resc_core::template::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    println!(
        "{}: valid: application `{}`, {} compute and {} memory components",
        file.display(),
        graph.app(),
        graph.compute_components().len(),
        graph.memory_components().len()
    );
    Ok(())
}

/// Serves until killed; prints one JSON line with the address first, so that
/// whoever started it knows where to connect.
fn memory_server(args: &MemoryServerArgs) -> Result<(), String> {
    use resc_core::ids::NodeId;
    let node = NodeId(args.node);
    let memory = std::sync::Arc::new(resc_core::inproc::InProcessMemory::new(node, args.capacity_mib * MIB));
    let server = resc_rdma::tcp::TcpNodeServer::bind(args.listen.as_str(), node, Some(memory))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("{}", serde_json::json!({ "node": args.node, "addr": server.local_addr().to_string() }));
    use std::io::Write;
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    loop {
        std::thread::park();
    }
}

/// Runs a benchmark behind a spinner and prints its report as JSON or a table.
fn run_bench<R: serde::Serialize, E: std::fmt::Display>(
    json: bool,
    run: impl FnOnce(&mut dyn FnMut(&str)) -> Result<R, E>,
    table: fn(&R) -> String,
) -> Result<(), String> {
    let bar = ProgressBar::new_spinner();
    let report = run(&mut |what| bar.set_message(format!("measuring {what}")));
    bar.finish_and_clear();
    let report = report.map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn bench_transport(args: &TransportArgs) -> Result<(), String> {
    use resc_reference::bench::transport::{self, RedisTarget, TransportBenchOptions};
    let mut options = TransportBenchOptions::default();
    if args.quick {
        options.bounds = resc_reference::bench::Bounds::quick();
    }
    options.redis = match (&args.redis, args.no_redis) {
        (Some(url), _) => RedisTarget::Url(url.clone()),
        (None, true) => RedisTarget::Skip,
        (None, false) => RedisTarget::Spawn,
    };
    run_bench(args.json, |progress| transport::run(&options, progress), transport::table)
}

fn bench_locality(args: &LocalityArgs) -> Result<(), String> {
    use resc_reference::bench::locality::{self, LocalityOptions};
    let options = if args.quick { LocalityOptions::quick() } else { LocalityOptions::default() };
    run_bench(args.json, |progress| locality::run(&options, progress), locality::table)
}

fn bench_faults(args: &FaultsArgs) -> Result<(), String> {
    use resc_reference::bench::faults::{self, FaultBenchOptions};
    let mut options = if args.quick { FaultBenchOptions::quick() } else { FaultBenchOptions::default() };
    options.nats_url.clone_from(&args.nats);
    run_bench(args.json, |progress| faults::run(&options, progress), faults::table)
}

fn bench_ilp(args: &IlpArgs) -> Result<(), String> {
    use resc_reference::bench::ilp;
    let options =
        if args.quick { resc_ilp::bench::BenchOptions::quick() } else { resc_ilp::bench::BenchOptions::default() };
    let script = (!args.no_python).then(|| args.script.clone().unwrap_or_else(ilp::default_script));
    run_bench(args.json, |progress| ilp::run(&options, script, progress), ilp::table)
}

fn bench_swap(args: &SwapArgs) -> Result<(), String> {
    use resc_swap::bench::{self, BenchConfig};
    let config = if args.quick { BenchConfig::quick() } else { BenchConfig::full() };
    run_bench(args.json, |_| bench::run(&config), resc_reference::bench::swap::table)
}

fn bench_sched(args: &SchedArgs) -> Result<(), String> {
    use resc_reference::bench::sched::{self, SchedBenchOptions};
    let mut options = if args.quick { SchedBenchOptions::quick() } else { SchedBenchOptions::default() };
    if let Some(load_ms) = args.load_ms {
        options.load_ms = load_ms;
    }
    run_bench(args.json, |progress| sched::run(&options, progress), sched::table)
}

fn run(args: &RunArgs) -> Result<(), String> {
    use resc_reference::durable::{self, RunEvent, RunOptions};
    use std::io::Write;
    let options = RunOptions {
        log_dir: args.log.clone(),
        outputs: args.outputs.clone(),
        count: args.count,
        sleep_ms: args.sleep_ms,
    };
    let mut stdout = std::io::stdout();
    durable::run_chain(&options, &mut |event| {
        let (what, invocation) = match event {
            RunEvent::Recovered(i) => ("recovered", i),
            RunEvent::Accepted(i) => ("accepted", i),
            RunEvent::Delivered(i) => ("delivered", i),
        };
        // Flushed line by line: whoever watches may kill this process any time.
        let _ = writeln!(stdout, "{what} {}", invocation.0);
        let _ = stdout.flush();
    })
    .map_err(|e| e.to_string())
}

/// Writes `content` to `path`, creating its directory.
fn write_out(path: &Path, content: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, content).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn demo_adapt(args: &AdaptArgs) -> Result<(), String> {
    use resc_reference::adapt::scenario::{self, AdaptDemoOptions};
    let options = AdaptDemoOptions { steps: args.steps, peak_load: args.peak_load };
    let bar = ProgressBar::new_spinner();
    bar.set_message("running the scenario");
    let report = scenario::run(&options).map_err(|e| e.to_string());
    bar.finish_and_clear();
    let report = report?;
    write_out(&args.csv, &scenario::csv(&report))?;
    write_out(&args.svg, &scenario::svg(&report))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", scenario::table(&report));
        println!("\nTimeline: {} and {}", args.csv.display(), args.svg.display());
    }
    Ok(())
}

fn demo_adjust(args: &AdjustArgs) -> Result<(), String> {
    use resc_reference::adapt::profiles::{self, AdjustDemoOptions};
    let options = AdjustDemoOptions {
        invocations: args.invocations,
        every: args.every,
        step_ms: args.step_ms,
        ..AdjustDemoOptions::default()
    };
    run_bench(args.json, |_| Ok::<_, String>(profiles::run(&options)), profiles::table)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(DemoCommand::Lr(args)) => demo_lr(args),
        Command::Demo(DemoCommand::Chain(args)) => demo_chain(&args),
        Command::Demo(DemoCommand::Adjust(args)) => demo_adjust(&args),
        Command::Demo(DemoCommand::Adapt(args)) => demo_adapt(&args),
        Command::Validate { file } => validate(&file),
        Command::MemoryServer(args) => memory_server(&args),
        Command::Bench(BenchCommand::Transport(args)) => bench_transport(&args),
        Command::Bench(BenchCommand::Locality(args)) => bench_locality(&args),
        Command::Bench(BenchCommand::Sched(args)) => bench_sched(&args),
        Command::Bench(BenchCommand::Faults(args)) => bench_faults(&args),
        Command::Bench(BenchCommand::Ilp(args)) => bench_ilp(&args),
        Command::Bench(BenchCommand::Swap(args)) => bench_swap(&args),
        Command::Run(args) => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
