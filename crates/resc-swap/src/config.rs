//! How a far region is shaped and run.

use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The configuration of a [`FarRegion`](crate::FarRegion).
///
/// Built with [`SwapConfig::new`] and adjusted field by field:
///
/// ```
/// use resc_swap::{EvictionPolicy, HandlerPolicy, SwapConfig};
///
/// let mut config = SwapConfig::new(1 << 30, 200 << 20);
/// config.eviction = EvictionPolicy::Nru;
/// config.handler = HandlerPolicy::Hybrid { spin_us: 50 };
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SwapConfig {
    /// Virtual size of the region in bytes (rounded up to whole chunks).
    /// Reserving costs no memory: the range is `MAP_NORESERVE` and only
    /// resident chunks use local memory.
    pub capacity: u64,
    /// Local memory budget: the most bytes resident at once (the compute
    /// component's local memory given to the region). At least four chunks.
    pub local_budget: u64,
    /// The unit of residency, eviction and fetching: every missing fault
    /// brings in at least one whole chunk. A power of two from one page to
    /// 64 pages; 64 KiB by default.
    pub chunk_size: usize,
    /// The largest read-ahead window of a sequential stream (2 MiB by
    /// default: with 1 MiB the bench's `seq` case faults twice as often and
    /// costs about twice the overhead). Clipped to a quarter of the budget.
    pub max_read_ahead: usize,
    /// The window a stream starts with once a second, adjacent fault shows
    /// it is sequential (256 KiB by default); it doubles at every read-ahead
    /// hit up to `max_read_ahead`.
    pub initial_read_ahead: usize,
    /// Size of one physical memory component of swap space, allocated from
    /// the memory pool when the first chunk within it is written back (64 MiB
    /// by default, the smallest default size class). A multiple of
    /// `chunk_size`.
    pub segment_size: u64,
    /// Bytes the handler keeps free below the budget when it has nothing
    /// else to do, so that faults rarely wait for an eviction (by default
    /// `max_read_ahead`; clipped to a quarter of the budget).
    pub free_target: u64,
    /// How the handler thread waits for faults.
    pub handler: HandlerPolicy,
    /// Nice value of the handler thread (0 by default: left as it is).
    /// Raising the priority needs `CAP_SYS_NICE`; without it the value is
    /// ignored. Measured here against a CPU hog sharing the machine, -10
    /// did not help: the time lost on a busy machine is mostly the faulting
    /// thread's, whose core other work takes while it waits.
    pub handler_nice: i32,
    /// Which resident chunk is evicted.
    pub eviction: EvictionPolicy,
}

impl SwapConfig {
    /// A region of `capacity` virtual bytes with `local_budget` bytes of
    /// local memory, and every other setting at its default.
    pub fn new(capacity: u64, local_budget: u64) -> Self {
        SwapConfig {
            capacity,
            local_budget,
            chunk_size: (64 * KIB) as usize,
            max_read_ahead: (2 * MIB) as usize,
            initial_read_ahead: (256 * KIB) as usize,
            segment_size: 64 * MIB,
            free_target: 2 * MIB,
            handler: HandlerPolicy::default(),
            handler_nice: 0,
            eviction: EvictionPolicy::default(),
        }
    }
}

impl Default for SwapConfig {
    /// 16 GiB of virtual space over the paper's 256 MiB compute slot.
    fn default() -> Self {
        SwapConfig::new(16 * GIB, 256 * MIB)
    }
}

/// How the handler thread waits for the next fault.
///
/// Measured on the project's machines (ENVIRONMENT.md): a fault served by a
/// thread that sleeps in `poll` costs about 44 µs when the VM is otherwise
/// idle (an idle vCPU halts and is slow to wake) and about 7 µs when it is
/// busy; a spinning handler gets about 15 µs even on an idle VM but burns a
/// core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[non_exhaustive]
pub enum HandlerPolicy {
    /// Always sleep in `poll` when there is nothing to do: no CPU used while
    /// idle, the slowest wake-up.
    Poll,
    /// Never sleep: the lowest latency, a whole core for the region's life.
    Spin,
    /// Keep polling without sleeping for `spin_us` microseconds after the
    /// last fault or background step, then sleep in `poll`. Faults that come
    /// in bursts find the handler awake; an idle region costs nothing. When
    /// faults come at a steady pace (a scan hitting its read-ahead markers,
    /// or random blocks read at a steady rate) the handler also predicts the
    /// next one: it sleeps until 150 µs before it is due and spins until
    /// 150 µs after, so the fault finds it awake at little CPU cost.
    Hybrid {
        /// Microseconds of spinning after the last activity.
        spin_us: u64,
    },
}

impl Default for HandlerPolicy {
    /// `Hybrid` spinning 200 µs (see the bench for the measurement behind it).
    fn default() -> Self {
        HandlerPolicy::Hybrid { spin_us: 200 }
    }
}

/// Which resident chunk is evicted when the region needs room.
///
/// A user-space handler cannot read the page tables' accessed bits, so both
/// policies see references only as faults: a chunk is *referenced* when it
/// was brought in (by a fault or by read-ahead), hit as a read-ahead marker,
/// or written for the first time (write-protect fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// The paper's NRU: chunks fall in four classes (referenced, dirty);
    /// the victim is the lowest-class chunk among a few sampled at random,
    /// and every reference bit is cleared each time half the budget has
    /// been evicted.
    Nru,
    /// CLOCK (second chance) in the order chunks came in: a referenced chunk
    /// loses its bit and goes round again, an unreferenced one is evicted.
    /// Unlike NRU it never picks a chunk read ahead but not yet reached.
    #[default]
    Clock,
}
