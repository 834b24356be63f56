//! Conformance checks for [`Sandbox`]: see the contract in [`crate::sandbox`].
//!
//! The checks run small code pieces with a context of a one-component graph
//! whose memory components (none) live in the sandbox
//! ([`Bindings::local`]), so they need nothing but the sandbox.

use super::unique_invocation;
use crate::ids::ComputeId;
use crate::runtime::{Bindings, CodeError, Context};
use crate::sandbox::{loaded, CodeLoader, CodePiece, Sandbox, SandboxError, SandboxJob, SandboxOutcome, ThreadAccount};
use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

/// How long a check waits for `done`: a bound against hanging, not a
/// performance expectation.
const DONE_WITHIN: Duration = Duration::from_secs(30);
/// Iterations of the busy loop whose CPU time must be measured.
const BUSY_ITERATIONS: u64 = 5_000_000;

const TEMPLATE: &str = r#"{
  "app": "testkit-sandbox",
  "budget_mib": 1,
  "compute": [{ "name": "piece", "code": "testkit.piece" }]
}"#;

/// Runs every sandbox check.
pub fn sandbox_suite(sandbox: &dyn Sandbox) {
    check_output_delivered(sandbox);
    check_failure_delivered(sandbox);
    check_panic_delivered(sandbox);
    check_cpu_time_measured(sandbox);
    check_account_entered_and_left(sandbox);
    check_account_left_on_panic(sandbox);
    check_concurrent_jobs(sandbox);
    check_load_failure_delivered(sandbox);
    check_warm_environment_loads_once(sandbox);
    check_retired_environment_refused(sandbox);
}

/// A context for the one compute component of a tiny graph, with `input`.
fn context(input: &[u8]) -> Context {
    let graph = crate::template::parse(TEMPLATE).expect("the testkit's sandbox template is valid");
    let bindings = Bindings::local(Arc::new(graph), unique_invocation());
    Context::new(bindings, ComputeId(0), 0, vec![input.to_vec()])
}

/// Starts `piece` and returns where its outcome will arrive.
fn start(
    sandbox: &dyn Sandbox,
    label: &str,
    input: &[u8],
    piece: impl CodePiece + 'static,
    account: Option<Arc<dyn ThreadAccount>>,
    check: &str,
) -> Receiver<SandboxOutcome> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let job = SandboxJob { label: label.to_owned(), code: loaded(Arc::new(piece)), context: context(input), account };
    sandbox
        .start(
            job,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        )
        .unwrap_or_else(|e| panic!("{check}: starting a job failed: {e}"));
    rx
}

fn outcome(rx: &Receiver<SandboxOutcome>, check: &str) -> SandboxOutcome {
    rx.recv_timeout(DONE_WITHIN).unwrap_or_else(|_| {
        panic!("{check}: `done` was not called within {DONE_WITHIN:?} (the contract: exactly once)")
    })
}

fn no_second_outcome(rx: &Receiver<SandboxOutcome>, check: &str) {
    // The callback is `FnOnce`, so a second call cannot happen through it; a
    // sandbox that keeps the sender elsewhere could still send twice.
    assert!(rx.try_recv().is_err(), "{check}: a second outcome arrived for one job");
}

/// A piece's output reaches `done` exactly once, with the job's label and
/// context, and the piece runs off the caller's thread.
pub fn check_output_delivered(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/output_delivered";
    let caller = std::thread::current().id();
    let ran_on: Arc<Mutex<Option<ThreadId>>> = Arc::default();
    let seen = ran_on.clone();
    let rx = start(
        sandbox,
        "testkit/output#0",
        b"hello",
        move |ctx: &mut Context| {
            *seen.lock() = Some(std::thread::current().id());
            Ok(ctx.input().iter().rev().copied().collect())
        },
        None,
        CHECK,
    );
    let outcome = outcome(&rx, CHECK);
    assert_eq!(outcome.label, "testkit/output#0", "{CHECK}: the outcome carries the wrong label");
    match &outcome.output {
        Ok(bytes) => assert_eq!(bytes, b"olleh", "{CHECK}: the outcome carries the wrong output"),
        Err(e) => panic!("{CHECK}: a piece that returned Ok produced the outcome {e:?}"),
    }
    assert_eq!(outcome.context.input(), b"hello", "{CHECK}: the outcome does not hand back the job's context");
    let thread = ran_on.lock().take().unwrap_or_else(|| panic!("{CHECK}: the piece never ran"));
    assert_ne!(thread, caller, "{CHECK}: the piece ran on the caller's thread");
    no_second_outcome(&rx, CHECK);
}

/// A piece's error is the outcome.
pub fn check_failure_delivered(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/failure_delivered";
    let rx = start(sandbox, "testkit/fail#0", b"", |_: &mut Context| Err(CodeError::failed("nope")), None, CHECK);
    let outcome = outcome(&rx, CHECK);
    assert_eq!(
        outcome.output,
        Err(CodeError::failed("nope")),
        "{CHECK}: a failing piece's error was not delivered as is"
    );
    no_second_outcome(&rx, CHECK);
}

/// A panic is an outcome (`CodeError::Panicked` with the message), not a
/// crash, and the sandbox keeps working.
pub fn check_panic_delivered(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/panic_delivered";
    let rx = start(
        sandbox,
        "testkit/panic#0",
        b"",
        |_: &mut Context| -> Result<Vec<u8>, CodeError> { panic!("testkit: deliberate panic {}", 42) },
        None,
        CHECK,
    );
    match outcome(&rx, CHECK).output {
        Err(CodeError::Panicked(message)) => assert!(
            message.contains("testkit: deliberate panic 42"),
            "{CHECK}: the Panicked outcome does not carry the panic message: {message:?}"
        ),
        other => panic!("{CHECK}: a panicking piece produced {other:?}, expected CodeError::Panicked"),
    }
    no_second_outcome(&rx, CHECK);
    let rx = start(sandbox, "testkit/after#0", b"", |_: &mut Context| Ok(b"still here".to_vec()), None, CHECK);
    assert_eq!(
        outcome(&rx, CHECK).output,
        Ok(b"still here".to_vec()),
        "{CHECK}: the sandbox does not run jobs after a panic"
    );
}

/// The CPU time of a busy piece is measured (non-zero), and so is its wall time.
pub fn check_cpu_time_measured(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/cpu_time_measured";
    let rx = start(
        sandbox,
        "testkit/busy#0",
        b"",
        |_: &mut Context| {
            let mut x = 0u64;
            for i in 0..BUSY_ITERATIONS {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
            }
            Ok(x.to_le_bytes().to_vec())
        },
        None,
        CHECK,
    );
    let outcome = outcome(&rx, CHECK);
    assert!(outcome.output.is_ok(), "{CHECK}: the busy piece failed: {:?}", outcome.output);
    assert!(
        outcome.usage.cpu > Duration::ZERO,
        "{CHECK}: a busy loop of {BUSY_ITERATIONS} iterations reported no CPU time"
    );
    assert!(outcome.usage.wall > Duration::ZERO, "{CHECK}: a busy loop reported no wall time");
}

/// Records what a [`ThreadAccount`] saw, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(&'static str, ThreadId)>>,
}

impl Recorder {
    fn note(&self, event: &'static str) {
        self.events.lock().push((event, std::thread::current().id()));
    }
}

impl ThreadAccount for Recorder {
    fn enter(&self) {
        self.note("enter");
    }
    fn leave(&self) {
        self.note("leave");
    }
}

fn check_account_events(recorder: &Recorder, check: &str) {
    let events = recorder.events.lock().clone();
    let names: Vec<&str> = events.iter().map(|(e, _)| *e).collect();
    assert_eq!(
        names,
        ["enter", "run", "leave"],
        "{check}: the account must be entered once before the piece runs and left once after it"
    );
    assert!(
        events.iter().all(|(_, t)| *t == events[1].1),
        "{check}: enter and leave must happen on the thread that runs the piece"
    );
}

/// The job's account is entered once before the piece and left once after
/// it, on the piece's thread.
pub fn check_account_entered_and_left(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/account_entered_and_left";
    let recorder = Arc::new(Recorder::default());
    let inside = recorder.clone();
    let rx = start(
        sandbox,
        "testkit/account#0",
        b"",
        move |_: &mut Context| {
            inside.note("run");
            Ok(Vec::new())
        },
        Some(recorder.clone()),
        CHECK,
    );
    let outcome = outcome(&rx, CHECK);
    assert!(outcome.output.is_ok(), "{CHECK}: the piece failed: {:?}", outcome.output);
    check_account_events(&recorder, CHECK);
}

/// The account is left also when the piece panics.
pub fn check_account_left_on_panic(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/account_left_on_panic";
    let recorder = Arc::new(Recorder::default());
    let inside = recorder.clone();
    let rx = start(
        sandbox,
        "testkit/account-panic#0",
        b"",
        move |_: &mut Context| -> Result<Vec<u8>, CodeError> {
            inside.note("run");
            panic!("testkit: deliberate panic with an account")
        },
        Some(recorder.clone()),
        CHECK,
    );
    let outcome = outcome(&rx, CHECK);
    assert!(
        matches!(outcome.output, Err(CodeError::Panicked(_))),
        "{CHECK}: a panicking piece produced {:?}",
        outcome.output
    );
    check_account_events(&recorder, CHECK);
}

/// Several jobs started at once each get their own outcome.
pub fn check_concurrent_jobs(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/concurrent_jobs";
    let receivers: Vec<_> = (0..8u8)
        .map(|i| {
            let rx = start(
                sandbox,
                &format!("testkit/many#{i}"),
                &[i],
                |ctx: &mut Context| Ok(vec![ctx.input()[0] * 2]),
                None,
                CHECK,
            );
            (i, rx)
        })
        .collect();
    for (i, rx) in receivers {
        let outcome = outcome(&rx, CHECK);
        assert_eq!(outcome.label, format!("testkit/many#{i}"), "{CHECK}: outcomes were mixed up between jobs");
        assert_eq!(outcome.output, Ok(vec![i * 2]), "{CHECK}: job {i} produced another job's output");
    }
}

fn job(label: &str, input: &[u8], code: CodeLoader) -> SandboxJob {
    SandboxJob { label: label.to_owned(), code, context: context(input), account: None }
}

fn sender(tx: crossbeam_channel::Sender<SandboxOutcome>) -> crate::sandbox::Done {
    Box::new(move |outcome| {
        let _ = tx.send(outcome);
    })
}

/// A loader's error is the outcome of a cold start.
pub fn check_load_failure_delivered(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/load_failure_delivered";
    let (tx, rx) = crossbeam_channel::unbounded();
    let code: CodeLoader = Arc::new(|| Err(CodeError::failed("cannot load")));
    sandbox
        .start(job("testkit/load-fail#0", b"", code), sender(tx))
        .unwrap_or_else(|e| panic!("{CHECK}: starting a job failed: {e}"));
    assert_eq!(outcome(&rx, CHECK).output, Err(CodeError::failed("cannot load")), "{CHECK}: the load error was lost");
    no_second_outcome(&rx, CHECK);
}

/// A prepared environment loads its code once and runs every job given to
/// it, in order, on one thread. Skipped by sandboxes without warm environments.
pub fn check_warm_environment_loads_once(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/warm_environment_loads_once";
    let loads = Arc::new(AtomicUsize::new(0));
    let counted = loads.clone();
    let code: CodeLoader = Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let piece: Arc<dyn CodePiece> = Arc::new(|ctx: &mut Context| {
            Ok([ctx.input(), format!("{:?}", std::thread::current().id()).as_bytes()].concat())
        });
        Ok(piece)
    });
    let env = match sandbox.prepare("testkit/warm", code.clone()) {
        Ok(env) => env,
        Err(SandboxError::Unsupported) => return,
        Err(e) => panic!("{CHECK}: prepare failed: {e}"),
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..3u8 {
        sandbox
            .start_in(env, job(&format!("testkit/warm#{i}"), &[i], code.clone()), sender(tx.clone()))
            .unwrap_or_else(|e| panic!("{CHECK}: start_in failed: {e}"));
    }
    let outputs: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let outcome = outcome(&rx, CHECK);
            assert_eq!(outcome.label, format!("testkit/warm#{i}"), "{CHECK}: jobs of one environment ran out of order");
            outcome.output.unwrap_or_else(|e| panic!("{CHECK}: job {i} failed: {e}"))
        })
        .collect();
    assert_eq!(loads.load(Ordering::SeqCst), 1, "{CHECK}: the code was loaded more than once in one environment");
    assert!(
        outputs.iter().all(|o| o[1..] == outputs[0][1..]),
        "{CHECK}: the jobs of one environment ran on different threads"
    );
    sandbox.retire(env);
}

/// A retired environment refuses jobs without calling `done`.
pub fn check_retired_environment_refused(sandbox: &dyn Sandbox) {
    const CHECK: &str = "sandbox/retired_environment_refused";
    let code = loaded(Arc::new(|_: &mut Context| Ok(Vec::new())));
    let env = match sandbox.prepare("testkit/retired", code.clone()) {
        Ok(env) => env,
        Err(SandboxError::Unsupported) => return,
        Err(e) => panic!("{CHECK}: prepare failed: {e}"),
    };
    sandbox.retire(env);
    let (tx, rx) = crossbeam_channel::unbounded();
    let refused = sandbox.start_in(env, job("testkit/retired#0", b"", code), sender(tx));
    assert!(
        matches!(refused, Err(SandboxError::UnknownEnvironment(e)) if e == env),
        "{CHECK}: a retired environment accepted a job: {refused:?}"
    );
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "{CHECK}: `done` was called for a refused job");
}
