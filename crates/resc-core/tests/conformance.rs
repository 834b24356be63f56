//! Every conformance suite of the `testkit`, run against the in-process
//! backends: one test per check (so a failure names it) and one per suite
//! (so the suite entry points stay complete). Deliberately broken backends
//! show that each suite catches what it claims to.
#![allow(clippy::unwrap_used)]

use resc_core::ids::NodeId;
use resc_core::inproc::{InMemoryTriggerLog, InProcessFabric, InProcessMemory, ThreadSandbox};
use resc_core::pool::MemoryPool;
use resc_core::resources::MIB;
use resc_core::scheduler::{ClusterSpec, PoolAwareScheduler, Scheduler};
use resc_core::testkit;
use resc_core::trigger_log::{LogError, TriggerLog};
use std::sync::Arc;

/// A memory node of 16 MiB (the pool checks fill it) and a fabric reaching it.
fn memory_and_fabric() -> (Arc<InProcessMemory>, Arc<InProcessFabric>) {
    let memory = Arc::new(InProcessMemory::new(NodeId(3), 16 * MIB));
    let fabric = Arc::new(InProcessFabric::new());
    fabric.attach(memory.clone());
    (memory, fabric)
}

/// Asserts that a check freed every region it allocated.
fn no_leak(memory: &InProcessMemory) {
    assert_eq!(memory.allocated_bytes(), 0, "the check left regions allocated");
}

fn pool_aware(cluster: &ClusterSpec) -> Box<dyn Scheduler> {
    Box::new(PoolAwareScheduler::new(cluster, 42))
}

/// One test per check: `module, testkit module, (names) = setup, [checks], after`.
macro_rules! each_check {
    ($module:ident, $kit:ident, $args:tt = $setup:expr, [$($check:ident),* $(,)?], $after:expr) => {
        mod $module {
            use super::*;
            $(one_check!($kit, $check, $args = $setup, $after);)*
        }
    };
}

/// One test: builds the backends, runs the check, then `after` on the backends.
macro_rules! one_check {
    ($kit:ident, $check:ident, ($($arg:ident),*) = $setup:expr, $after:expr) => {
        #[test]
        fn $check() {
            let ($($arg,)*) = $setup;
            testkit::$kit::$check($(&*$arg),*);
            #[allow(clippy::redundant_closure_call)]
            ($after)($(&*$arg),*);
        }
    };
}

each_check!(
    transport,
    transport,
    (memory, fabric) = memory_and_fabric(),
    [
        check_read_after_write,
        check_zero_fill,
        check_wrong_key,
        check_out_of_bounds,
        check_freed_region,
        check_batch_stops_at_first_failure,
        check_batch_read_sees_earlier_write,
        check_batch_across_regions,
    ],
    |memory: &InProcessMemory, _: &InProcessFabric| no_leak(memory)
);

each_check!(
    messages,
    transport,
    (fabric) = (Arc::new(InProcessFabric::new()),),
    [
        check_messages_in_order,
        check_message_payloads_complete,
        check_send_to_unopened_endpoint,
        check_recv_timeout,
        check_close_drops_messages,
        check_concurrent_senders_keep_order,
    ],
    |_: &InProcessFabric| ()
);

each_check!(
    pool_with_transport,
    pool,
    (memory, fabric) = memory_and_fabric(),
    [check_exact_length, check_zero_filled, check_free_requires_key, check_keys_differ],
    |memory: &InProcessMemory, _: &InProcessFabric| no_leak(memory)
);

each_check!(
    pool,
    pool,
    (memory) = (memory_and_fabric().0,),
    [
        check_zero_length_refused,
        check_capacity_enforced,
        check_free_restores_capacity,
        check_allocated_bytes_accounting,
        check_concurrent_allocations_never_overcommit,
    ],
    no_leak
);

each_check!(
    sandbox,
    sandbox,
    (sandbox) = (Arc::new(ThreadSandbox::new()),),
    [
        check_output_delivered,
        check_failure_delivered,
        check_panic_delivered,
        check_cpu_time_measured,
        check_account_entered_and_left,
        check_account_left_on_panic,
        check_concurrent_jobs,
    ],
    |_: &ThreadSandbox| ()
);

each_check!(
    scheduler,
    scheduler,
    (factory) = (Arc::new(pool_aware as fn(&ClusterSpec) -> Box<dyn Scheduler>),),
    [
        check_placement_in_requested_pool,
        check_never_overcommits,
        check_no_capacity,
        check_release_restores,
        check_deterministic,
    ],
    |_: &fn(&ClusterSpec) -> Box<dyn Scheduler>| ()
);

each_check!(
    trigger_log,
    trigger_log,
    (log) = (Arc::new(InMemoryTriggerLog::new()),),
    [
        check_positions_increase,
        check_records_byte_exact,
        check_records_not_mixed,
        check_complete_removes_from_pending,
        check_pending_in_first_append_order,
        check_unknown_invocation_has_no_records,
        check_read_from_in_position_order,
        check_read_from_pages,
        check_concurrent_appends,
        check_large_payloads,
        check_many_invocations,
    ],
    |log: &InMemoryTriggerLog| assert!(log.pending().unwrap().is_empty(), "the check left invocations pending")
);

/// Opens a trigger log by name.
type OpenLog = fn(&str) -> Result<Box<dyn TriggerLog>, LogError>;

/// Fresh in-memory logs, one per name (they cannot be reopened).
fn in_memory_logs() -> testkit::trigger_log::Volatile<OpenLog> {
    testkit::trigger_log::Volatile(|_| Ok(Box::new(InMemoryTriggerLog::new())))
}

each_check!(
    trigger_log_fresh,
    trigger_log,
    (factory) = (Arc::new(in_memory_logs()),),
    [
        check_fresh_log_is_empty,
        check_truncate_drops_prefix,
        check_truncate_past_end,
        check_truncate_completed_keeps_pending,
        check_reopen_keeps_state,
        check_reopen_keeps_truncation,
    ],
    |_: &testkit::trigger_log::Volatile<_>| ()
);

/// The suites, whole, each on fresh backends: every check of a suite also
/// passes after the others ran on the same backend.
mod suites {
    use super::*;

    #[test]
    fn transport_suite() {
        let (memory, fabric) = memory_and_fabric();
        testkit::transport::transport_suite(memory.as_ref(), fabric.as_ref());
        no_leak(&memory);
    }

    #[test]
    fn memory_pool_suite() {
        let (memory, fabric) = memory_and_fabric();
        testkit::pool::memory_pool_suite(memory.as_ref(), fabric.as_ref());
        no_leak(&memory);
    }

    #[test]
    fn sandbox_suite() {
        testkit::sandbox::sandbox_suite(&ThreadSandbox::with_stack(1 << 20));
    }

    #[test]
    fn scheduler_suite() {
        testkit::scheduler::scheduler_suite(pool_aware);
        // Another seed is another scheduler: the suite holds for it too.
        testkit::scheduler::scheduler_suite(|cluster| Box::new(PoolAwareScheduler::new(cluster, 7)));
    }

    #[test]
    fn trigger_log_suite() {
        testkit::trigger_log::trigger_log_suite(&in_memory_logs());
        let log = InMemoryTriggerLog::new();
        testkit::trigger_log::shared_log_suite(&log);
        assert!(log.pending().unwrap().is_empty(), "the suite left invocations pending");
    }
}

/// Backends that break one clause of a contract each: the matching check
/// must fail, naming itself.
mod broken {
    use super::*;
    use resc_core::ids::{Endpoint, InvocationId};
    use resc_core::pool::PoolError;
    use resc_core::resources::Resources;
    use resc_core::sandbox::{ComputeUsage, Done, Sandbox, SandboxError, SandboxJob, SandboxOutcome};
    use resc_core::scheduler::{Placement, PlacementRequest, Pool, ScheduleError};
    use resc_core::transport::{BatchError, Message, RemoteOp, RemoteRegion, Transport, TransportError};
    use resc_core::trigger_log::{LogPosition, ReadBatch, TriggerRecord};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A transport wrapper whose batches go on past a failure, and whose
    /// failed reads return zeros.
    struct Sloppy {
        inner: Arc<InProcessFabric>,
        keep_going: bool,
    }

    impl Transport for Sloppy {
        fn execute(&self, ops: &mut [RemoteOp<'_>]) -> Result<(), BatchError> {
            if !self.keep_going {
                let result = self.inner.execute(ops);
                for op in ops.iter_mut() {
                    if let (Err(_), RemoteOp::Read { buf, .. }) = (&result, op) {
                        buf.fill(0);
                    }
                }
                return Ok(());
            }
            let mut first = None;
            for (index, op) in ops.iter_mut().enumerate() {
                if let Err(e) = self.inner.execute(std::slice::from_mut(op)) {
                    first.get_or_insert(BatchError { index, error: e.error });
                }
            }
            first.map_or(Ok(()), Err)
        }
        fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError> {
            self.inner.open_endpoint(endpoint)
        }
        fn close_endpoint(&self, endpoint: &Endpoint) {
            self.inner.close_endpoint(endpoint)
        }
        fn send(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
            self.inner.send(from, to, payload)
        }
        fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError> {
            self.inner.recv(at, timeout)
        }
    }

    #[test]
    #[should_panic(expected = "transport/batch_stops_at_first_failure")]
    fn batch_that_goes_on_past_a_failure() {
        let (memory, fabric) = memory_and_fabric();
        testkit::transport::check_batch_stops_at_first_failure(
            memory.as_ref(),
            &Sloppy { inner: fabric, keep_going: true },
        );
    }

    #[test]
    #[should_panic(expected = "transport/wrong_key")]
    fn transport_that_hides_denials() {
        let (memory, fabric) = memory_and_fabric();
        testkit::transport::check_wrong_key(memory.as_ref(), &Sloppy { inner: fabric, keep_going: false });
    }

    /// A pool that reports half the capacity it hands out.
    struct Overcommitting(InProcessMemory);

    impl MemoryPool for Overcommitting {
        fn node(&self) -> NodeId {
            self.0.node()
        }
        fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
            self.0.allocate(bytes)
        }
        fn free(&self, region: &RemoteRegion) -> Result<(), PoolError> {
            self.0.free(region)
        }
        fn capacity_bytes(&self) -> u64 {
            self.0.capacity_bytes() / 2
        }
        fn allocated_bytes(&self) -> u64 {
            self.0.allocated_bytes()
        }
    }

    #[test]
    #[should_panic(expected = "pool/capacity_enforced")]
    fn pool_that_overcommits() {
        testkit::pool::check_capacity_enforced(&Overcommitting(InProcessMemory::new(NodeId(0), 8 * MIB)));
    }

    /// Places everything on the first node and reserves nothing.
    struct Careless(Vec<resc_core::scheduler::NodeSpec>);

    impl Scheduler for Careless {
        fn place(&mut self, request: &PlacementRequest) -> Result<Placement, ScheduleError> {
            let node = &self.0[0];
            Ok(Placement { node: node.id, rack: node.rack, pool: request.pool, demand: request.demand })
        }
        fn release(&mut self, _: &Placement) {}
        fn free(&self, node: NodeId, pool: Pool) -> Resources {
            self.0.iter().find(|n| n.id == node).and_then(|n| n.pools.get(&pool).copied()).unwrap_or_default()
        }
    }

    #[test]
    #[should_panic(expected = "scheduler/placement_in_requested_pool")]
    fn scheduler_that_ignores_pools() {
        testkit::scheduler::check_placement_in_requested_pool(&|c: &ClusterSpec| {
            Box::new(Careless(c.nodes.clone())) as Box<dyn Scheduler>
        });
    }

    #[test]
    #[should_panic(expected = "scheduler/never_overcommits")]
    fn scheduler_that_overcommits() {
        testkit::scheduler::check_never_overcommits(&|c: &ClusterSpec| {
            // Pools right, capacity ignored: keep only nodes of one pool each.
            let mut nodes = c.nodes.clone();
            nodes.retain(|n| n.pools.len() == 1);
            nodes.sort_by_key(|n| *n.pools.keys().next().unwrap());
            Box::new(PerPool(nodes)) as Box<dyn Scheduler>
        });
    }

    /// The first node of the requested pool, capacity ignored.
    struct PerPool(Vec<resc_core::scheduler::NodeSpec>);

    impl Scheduler for PerPool {
        fn place(&mut self, request: &PlacementRequest) -> Result<Placement, ScheduleError> {
            let node = self.0.iter().find(|n| n.pools.contains_key(&request.pool)).unwrap();
            Ok(Placement { node: node.id, rack: node.rack, pool: request.pool, demand: request.demand })
        }
        fn release(&mut self, _: &Placement) {}
        fn free(&self, node: NodeId, pool: Pool) -> Resources {
            self.0.iter().find(|n| n.id == node).and_then(|n| n.pools.get(&pool).copied()).unwrap_or_default()
        }
    }

    #[test]
    #[should_panic(expected = "scheduler/deterministic")]
    fn scheduler_seeded_differently_each_time() {
        let seeds = AtomicU64::new(1);
        testkit::scheduler::check_deterministic(&|c: &ClusterSpec| {
            Box::new(PoolAwareScheduler::new(c, seeds.fetch_add(1, Ordering::Relaxed))) as Box<dyn Scheduler>
        });
    }

    /// Runs the piece on the caller's thread and never enters the account.
    struct Inline;

    impl Sandbox for Inline {
        fn start(&self, job: SandboxJob, done: Done) -> Result<(), SandboxError> {
            let SandboxJob { label, code, mut context, .. } = job;
            let output = code().and_then(|piece| piece.run(&mut context));
            done(SandboxOutcome { label, output, usage: ComputeUsage::default(), context });
            Ok(())
        }
    }

    #[test]
    #[should_panic(expected = "sandbox/output_delivered")]
    fn sandbox_on_the_callers_thread() {
        testkit::sandbox::check_output_delivered(&Inline);
    }

    #[test]
    #[should_panic(expected = "sandbox/account_entered_and_left")]
    fn sandbox_that_ignores_the_account() {
        testkit::sandbox::check_account_entered_and_left(&Inline);
    }

    /// Claims warm environments but starts every job cold (loading again).
    struct ColdEveryTime(ThreadSandbox);

    impl Sandbox for ColdEveryTime {
        fn start(&self, job: SandboxJob, done: Done) -> Result<(), SandboxError> {
            self.0.start(job, done)
        }
        fn prepare(
            &self,
            _: &str,
            _: resc_core::sandbox::CodeLoader,
        ) -> Result<resc_core::sandbox::EnvId, SandboxError> {
            Ok(resc_core::sandbox::EnvId(0))
        }
        fn start_in(&self, _: resc_core::sandbox::EnvId, job: SandboxJob, done: Done) -> Result<(), SandboxError> {
            self.0.start(job, done)
        }
    }

    #[test]
    #[should_panic(expected = "sandbox/warm_environment_loads_once")]
    fn sandbox_that_reloads_in_a_warm_environment() {
        testkit::sandbox::check_warm_environment_loads_once(&ColdEveryTime(ThreadSandbox::new()));
    }

    #[test]
    #[should_panic(expected = "sandbox/retired_environment_refused")]
    fn sandbox_that_runs_jobs_in_retired_environments() {
        testkit::sandbox::check_retired_environment_refused(&ColdEveryTime(ThreadSandbox::new()));
    }

    #[test]
    #[should_panic(expected = "sandbox/cpu_time_measured")]
    fn sandbox_that_measures_nothing() {
        testkit::sandbox::check_cpu_time_measured(&Inline);
    }

    /// Lists pending invocations newest first, cuts payloads at 64 KiB, and
    /// skips a record between full pages.
    struct Reordering(InMemoryTriggerLog);

    impl TriggerLog for Reordering {
        fn append(&self, record: &TriggerRecord) -> Result<LogPosition, LogError> {
            let mut record = record.clone();
            record.payload.truncate(64 * 1024);
            self.0.append(&record)
        }
        fn records(&self, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError> {
            self.0.records(invocation)
        }
        fn complete(&self, invocation: InvocationId) -> Result<(), LogError> {
            self.0.complete(invocation)
        }
        fn pending(&self) -> Result<Vec<InvocationId>, LogError> {
            self.0.pending().map(|p| p.into_iter().rev().collect())
        }
        fn read_from(&self, from: LogPosition, max: usize) -> Result<ReadBatch, LogError> {
            // Skips one record between pages.
            let mut batch = self.0.read_from(from, max)?;
            if let Some((last, _)) = batch.records.last() {
                if batch.records.len() == max {
                    batch.next = LogPosition(last.0 + 2);
                }
            }
            Ok(batch)
        }
        fn truncate(&self, before: LogPosition) -> Result<(), LogError> {
            self.0.truncate(before)
        }
    }

    /// Truncates, but never clamps to the end of the log.
    struct Unclamped(InMemoryTriggerLog, std::sync::atomic::AtomicU64);

    impl TriggerLog for Unclamped {
        fn append(&self, record: &TriggerRecord) -> Result<LogPosition, LogError> {
            let at = self.0.append(record)?;
            if at.0 < self.1.load(Ordering::Relaxed) {
                // Hidden below the unclamped start.
                self.0.complete(record.invocation)?;
            }
            Ok(at)
        }
        fn records(&self, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError> {
            self.0.records(invocation)
        }
        fn complete(&self, invocation: InvocationId) -> Result<(), LogError> {
            self.0.complete(invocation)
        }
        fn pending(&self) -> Result<Vec<InvocationId>, LogError> {
            self.0.pending()
        }
        fn read_from(&self, from: LogPosition, max: usize) -> Result<ReadBatch, LogError> {
            self.0.read_from(from, max)
        }
        fn truncate(&self, before: LogPosition) -> Result<(), LogError> {
            self.1.fetch_max(before.0, Ordering::Relaxed);
            self.0.truncate(before)
        }
    }

    #[test]
    #[should_panic(expected = "trigger_log/read_from_pages")]
    fn log_that_skips_records_between_pages() {
        testkit::trigger_log::check_read_from_pages(&Reordering(InMemoryTriggerLog::new()));
    }

    #[test]
    #[should_panic(expected = "trigger_log/truncate_past_end")]
    fn log_that_does_not_clamp_truncation() {
        testkit::trigger_log::check_truncate_past_end(&testkit::trigger_log::Volatile(|_: &str| {
            Ok(Box::new(Unclamped(InMemoryTriggerLog::new(), AtomicU64::new(0))) as Box<dyn TriggerLog>)
        }));
    }

    #[test]
    #[should_panic(expected = "trigger_log/pending_in_first_append_order")]
    fn log_with_pending_reversed() {
        testkit::trigger_log::check_pending_in_first_append_order(&Reordering(InMemoryTriggerLog::new()));
    }

    #[test]
    #[should_panic(expected = "trigger_log/records_byte_exact")]
    fn log_that_truncates_payloads() {
        testkit::trigger_log::check_records_byte_exact(&Reordering(InMemoryTriggerLog::new()));
    }
}

mod faults {
    use resc_core::ids::NodeId;
    use resc_core::inproc::{InProcessFabric, InProcessMemory};
    use resc_core::pool::MemoryPool;
    use resc_core::testkit;
    use resc_core::testkit::faults::FaultyTransport;
    use resc_core::transport::{Transport, TransportError};
    use std::sync::Arc;

    fn faulty() -> (Arc<InProcessMemory>, FaultyTransport) {
        let memory = Arc::new(InProcessMemory::new(NodeId(90), 1 << 24));
        let fabric = Arc::new(InProcessFabric::new());
        fabric.attach(memory.clone());
        (memory, FaultyTransport::new(fabric))
    }

    #[test]
    fn a_faulty_transport_without_faults_conforms() {
        let (memory, transport) = faulty();
        testkit::transport::transport_suite(memory.as_ref(), &transport);
    }

    #[test]
    fn injected_faults_fail_exactly_what_they_name() {
        let (memory, transport) = faulty();
        let region = memory.allocate(4096).expect("allocate");
        transport.fail_writes(true);
        assert!(matches!(transport.write(&region, 0, b"x"), Err(TransportError::Disconnected(_))));
        transport.read(&region, 0, &mut [0u8; 1]).expect("reads still work");
        transport.fail_writes(false);
        transport.fail_after(1);
        transport.write(&region, 0, b"y").expect("one more operation goes through");
        assert!(transport.read(&region, 0, &mut [0u8; 1]).is_err(), "then everything fails");
    }
}
