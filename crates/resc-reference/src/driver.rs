//! The invocation driver: a sans-IO state machine that turns completion and
//! failure events into commands (start an instance, reset or end a memory
//! component, finish).
//!
//! It does no I/O and reads no clock, so the embedded executor, a
//! multi-process assembly and a deterministic simulation can all drive it.
//! Its messages are plain serializable types.
//!
//! # Recovery (paper §5.2.4)
//!
//! A code piece's own error aborts the invocation ([`Event::Failed`]): running
//! it again would fail again. Losing a physical component ([`Event::Lost`])
//! discards it with everything that shares its fate, and what was discarded
//! runs again from its logged inputs:
//! - a lost compute instance takes down every instance of its component and
//!   every component it communicates with: the compute components it
//!   exchanges messages with, and the memory components it accesses (it may
//!   have written part of what it would write, and writes need not be
//!   idempotent), which are [reset](Command::Reset);
//! - a lost memory component takes down the whole component (all its
//!   physical components: it is reset) and every compute component that
//!   accesses it, finished or not;
//! - the same rules apply to what is taken down, to a fixed point: a
//!   discarded component that ran resets the memory it accesses, and a
//!   discarded component needs its memory components again, so one whose
//!   span already ended is reset too, and their accessors discarded.
//!
//! Every start carries an attempt number, bumped when a component is
//! discarded; events of older attempts are ignored, so an instance that
//! outlives its discard changes nothing. A component starts only when every
//! component upstream of it (along trigger edges) has finished, so a reader
//! never starts before the writers that re-run for it. The guarantee is
//! at-least-once execution, and exactly-once as observed for components
//! whose only effects are their outputs and their memory components.

use resc_core::graph::ResourceGraph;
use resc_core::ids::{ComputeId, MemoryId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Lost components the driver recovers from before it gives up.
pub const DEFAULT_MAX_RECOVERIES: u32 = 10_000;

/// What was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// The instance's physical compute component (its sandbox, or its node).
    Compute,
    /// A memory component the instance accesses (one of its physical
    /// components, or their node).
    Memory(MemoryId),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An instance finished with an output.
    Finished {
        /// The component.
        component: ComputeId,
        /// The instance.
        instance: u32,
        /// The attempt it ran as.
        attempt: u32,
        /// Its output.
        output: Vec<u8>,
    },
    /// An instance's code failed: the invocation stops.
    Failed {
        /// The component.
        component: ComputeId,
        /// The instance.
        instance: u32,
        /// The attempt it ran as.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// A physical component was lost while `component`'s instance ran as
    /// `attempt`. Reports from discarded attempts are ignored: their errors
    /// may come from a reset, not a loss. The platform reports memory lost
    /// outside any current instance (a missed heartbeat) with
    /// [`Driver::lose_memory`].
    Lost {
        /// The component whose instance saw the loss.
        component: ComputeId,
        /// The instance.
        instance: u32,
        /// The attempt it ran as.
        attempt: u32,
        /// What was lost.
        loss: Loss,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Start one instance with these inputs.
    Start {
        /// The component.
        component: ComputeId,
        /// The instance.
        instance: u32,
        /// The attempt: events about this run carry it back.
        attempt: u32,
        /// The outputs of the instances that trigger it, or the invocation's input.
        inputs: Vec<Vec<u8>>,
    },
    /// Discard a memory component's physical components; it starts again
    /// empty at its next access.
    Reset {
        /// The memory component.
        memory: MemoryId,
    },
    /// The last accessor of a memory component ended: free it.
    EndSpan {
        /// The memory component.
        memory: MemoryId,
    },
    /// Every component ended: the outputs of the exit components, in
    /// topological and instance order.
    Complete {
        /// The outputs.
        outputs: Vec<Vec<u8>>,
    },
    /// A component failed, or recovery gave up; the invocation stops.
    Abort {
        /// The component.
        component: ComputeId,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    Done,
}

/// One invocation's progress.
#[derive(Debug)]
pub struct Driver {
    graph: Arc<ResourceGraph>,
    outputs: Vec<Vec<Option<Vec<u8>>>>,
    instances_left: Vec<u32>,
    phase: Vec<Phase>,
    attempt: Vec<u32>,
    /// Per component, every component upstream of it along trigger edges.
    upstream: Vec<Vec<ComputeId>>,
    /// Memory components whose span has not ended.
    live: Vec<bool>,
    input: Vec<u8>,
    recoveries: u32,
    max_recoveries: u32,
    done: bool,
}

impl Driver {
    /// A driver for one invocation of `graph`.
    pub fn new(graph: Arc<ResourceGraph>) -> Self {
        let compute = graph.compute_components();
        let upstream = (0..compute.len() as u32).map(|c| upstream_of(&graph, ComputeId(c))).collect();
        Driver {
            outputs: compute.iter().map(|c| vec![None; c.parallelism as usize]).collect(),
            instances_left: compute.iter().map(|c| c.parallelism).collect(),
            phase: vec![Phase::Waiting; compute.len()],
            attempt: vec![0; compute.len()],
            upstream,
            live: vec![true; graph.memory_components().len()],
            input: Vec::new(),
            recoveries: 0,
            max_recoveries: DEFAULT_MAX_RECOVERIES,
            done: false,
            graph,
        }
    }

    /// The same driver, giving up after `n` recoveries.
    pub fn with_max_recoveries(mut self, n: u32) -> Self {
        self.max_recoveries = n;
        self
    }

    /// Whether the invocation completed or aborted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Losses recovered from so far.
    pub fn recoveries(&self) -> u32 {
        self.recoveries
    }

    /// The attempt `component` runs (or will run) as.
    pub fn attempt(&self, component: ComputeId) -> u32 {
        self.attempt.get(component.0 as usize).copied().unwrap_or(0)
    }

    /// The commands that start the invocation with `input`.
    pub fn start(&mut self, input: &[u8]) -> Vec<Command> {
        self.input = input.to_vec();
        let mut commands = Vec::new();
        self.schedule(&mut commands);
        commands
    }

    /// Advances on an event and returns what to do next.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        if self.done {
            return Vec::new();
        }
        match event {
            Event::Failed { component, attempt, reason, .. } => {
                if attempt != self.attempt(component) {
                    return Vec::new(); // an instance already discarded
                }
                self.done = true;
                vec![Command::Abort { component, reason }]
            }
            Event::Finished { component, instance, attempt, output } => {
                self.finished(component, instance, attempt, output)
            }
            Event::Lost { component, attempt, loss, .. } => {
                if attempt != self.attempt(component) {
                    return Vec::new();
                }
                match loss {
                    Loss::Compute => self.recover(BTreeSet::from([component]), BTreeSet::new(), component),
                    Loss::Memory(memory) => self.lose_memory(memory),
                }
            }
        }
    }

    /// A memory component was lost, whether or not an accessor noticed.
    pub fn lose_memory(&mut self, memory: MemoryId) -> Vec<Command> {
        if self.done || memory.0 as usize >= self.live.len() {
            return Vec::new();
        }
        let culprit = self.graph.accessors(memory).first().copied().unwrap_or(ComputeId(0));
        self.recover(BTreeSet::new(), BTreeSet::from([memory]), culprit)
    }

    fn finished(&mut self, component: ComputeId, instance: u32, attempt: u32, output: Vec<u8>) -> Vec<Command> {
        let c = component.0 as usize;
        // Events may come from other processes: ignore ones naming nothing known.
        if attempt != self.attempt(component) || self.phase.get(c) != Some(&Phase::Running) {
            return Vec::new();
        }
        let Some(slot) = self.outputs[c].get_mut(instance as usize) else { return Vec::new() };
        if slot.is_some() {
            return Vec::new(); // a duplicate completion (at-least-once delivery)
        }
        *slot = Some(output);
        self.instances_left[c] -= 1;
        if self.instances_left[c] > 0 {
            return Vec::new();
        }
        self.phase[c] = Phase::Done;
        let mut commands = Vec::new();
        self.schedule(&mut commands);
        commands
    }

    /// Discards what shares fate with the lost `compute` and `memory`
    /// components, then schedules the re-runs.
    fn recover(
        &mut self,
        mut compute: BTreeSet<ComputeId>,
        mut memory: BTreeSet<MemoryId>,
        culprit: ComputeId,
    ) -> Vec<Command> {
        self.recoveries += 1;
        if self.recoveries > self.max_recoveries {
            self.done = true;
            let reason = format!("gave up after {} lost components", self.max_recoveries);
            return vec![Command::Abort { component: culprit, reason }];
        }
        let peers: Vec<ComputeId> = compute.iter().flat_map(|&c| self.graph.peers(c).to_vec()).collect();
        compute.extend(peers);
        loop {
            let before = (compute.len(), memory.len());
            for &m in &memory {
                compute.extend(self.graph.accessors(m).iter().filter(|&&a| self.phase[a.0 as usize] != Phase::Waiting));
            }
            for &c in &compute {
                if self.phase[c.0 as usize] != Phase::Waiting {
                    // It may have written there: its run again must find
                    // the component as it was before it first ran.
                    memory.extend(self.graph.accesses(c).iter().copied());
                }
                // It needs what it accesses, and a span that ended is gone.
                memory.extend(self.graph.accesses(c).iter().filter(|&&m| !self.live[m.0 as usize]));
            }
            if (compute.len(), memory.len()) == before {
                break;
            }
        }
        for &c in &compute {
            let i = c.0 as usize;
            if self.phase[i] == Phase::Waiting {
                continue;
            }
            self.phase[i] = Phase::Waiting;
            self.attempt[i] += 1;
            self.outputs[i].iter_mut().for_each(|o| *o = None);
            self.instances_left[i] = self.graph.compute(c).parallelism;
        }
        let mut commands: Vec<Command> = memory.into_iter().map(|m| Command::Reset { memory: m }).collect();
        for command in &commands {
            if let Command::Reset { memory } = command {
                self.live[memory.0 as usize] = true;
            }
        }
        self.schedule(&mut commands);
        commands
    }

    /// Starts every waiting component whose upstream has finished, ends the
    /// spans no one will access again, and completes when all is done.
    fn schedule(&mut self, commands: &mut Vec<Command>) {
        for m in 0..self.live.len() {
            let memory = MemoryId(m as u32);
            if self.live[m] && self.graph.accessors(memory).iter().all(|a| self.phase[a.0 as usize] == Phase::Done) {
                self.live[m] = false;
                commands.push(Command::EndSpan { memory });
            }
        }
        for &c in self.graph.topological_order() {
            let i = c.0 as usize;
            if self.phase[i] != Phase::Waiting
                || !self.upstream[i].iter().all(|u| self.phase[u.0 as usize] == Phase::Done)
            {
                continue;
            }
            self.phase[i] = Phase::Running;
            let inputs = if self.graph.triggered_by(c).is_empty() { vec![self.input.clone()] } else { self.gather(c) };
            for instance in 0..self.graph.compute(c).parallelism {
                commands.push(Command::Start {
                    component: c,
                    instance,
                    attempt: self.attempt[i],
                    inputs: inputs.clone(),
                });
            }
        }
        if self.phase.iter().all(|p| *p == Phase::Done) {
            self.done = true;
            let outputs = self.graph.exit_points().flat_map(|e| self.outputs_of(e)).collect();
            commands.push(Command::Complete { outputs });
        }
    }

    fn outputs_of(&self, component: ComputeId) -> Vec<Vec<u8>> {
        self.outputs[component.0 as usize].iter().map(|o| o.clone().unwrap_or_default()).collect()
    }

    /// The inputs of `component`: its triggers' outputs in edge then instance order.
    fn gather(&self, component: ComputeId) -> Vec<Vec<u8>> {
        self.graph.triggered_by(component).iter().flat_map(|&p| self.outputs_of(p)).collect()
    }
}

/// Every component from which a trigger path leads to `component`.
fn upstream_of(graph: &ResourceGraph, component: ComputeId) -> Vec<ComputeId> {
    let mut seen = BTreeSet::new();
    let mut stack = graph.triggered_by(component).to_vec();
    while let Some(c) = stack.pop() {
        if seen.insert(c) {
            stack.extend_from_slice(graph.triggered_by(c));
        }
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    fn graph(text: &str) -> Arc<ResourceGraph> {
        Arc::new(resc_core::template::parse(text).expect("valid test template"))
    }

    const FAN: &str = r#"{"app":"t","budget_mib":64,
        "compute":[{"name":"a","code":"x"},{"name":"b","code":"x","parallelism":2},{"name":"c","code":"x"}],
        "memory":[{"name":"m","initial_mib":1,"increment_mib":1}],
        "edges":[{"kind":"trigger","from":"a","to":"b"},{"kind":"trigger","from":"b","to":"c"},
                 {"kind":"access","from":"a","to":"m"},{"kind":"access","from":"b","to":"m"}]}"#;

    fn start(component: ComputeId, instance: u32, attempt: u32, inputs: &[&[u8]]) -> Command {
        Command::Start { component, instance, attempt, inputs: inputs.iter().map(|i| i.to_vec()).collect() }
    }

    fn finished(component: ComputeId, instance: u32, attempt: u32, output: &[u8]) -> Event {
        Event::Finished { component, instance, attempt, output: output.to_vec() }
    }

    #[test]
    fn fan_out_and_fan_in_pass_outputs_and_end_spans() {
        let (a, b, c) = (ComputeId(0), ComputeId(1), ComputeId(2));
        let mut d = Driver::new(graph(FAN));
        assert_eq!(d.start(b"in"), vec![start(a, 0, 0, &[b"in"])]);
        let next = d.handle(finished(a, 0, 0, b"A"));
        assert_eq!(next, vec![start(b, 0, 0, &[b"A"]), start(b, 1, 0, &[b"A"])]);
        assert!(d.handle(finished(b, 1, 0, b"B1")).is_empty());
        // A duplicate completion changes nothing.
        assert!(d.handle(finished(b, 1, 0, b"B1")).is_empty());
        let next = d.handle(finished(b, 0, 0, b"B0"));
        assert_eq!(next, vec![Command::EndSpan { memory: MemoryId(0) }, start(c, 0, 0, &[b"B0", b"B1"])]);
        let next = d.handle(finished(c, 0, 0, b"C"));
        assert_eq!(next, vec![Command::Complete { outputs: vec![b"C".to_vec()] }]);
        assert!(d.is_done());
    }

    #[test]
    fn a_code_failure_aborts_once() {
        let g = graph(r#"{"app":"t","budget_mib":64,"compute":[{"name":"a","code":"x"}]}"#);
        let mut d = Driver::new(g);
        d.start(b"");
        let a = ComputeId(0);
        let next = d.handle(Event::Failed { component: a, instance: 0, attempt: 0, reason: "boom".into() });
        assert_eq!(next, vec![Command::Abort { component: a, reason: "boom".into() }]);
        assert!(d.handle(finished(a, 0, 0, b"")).is_empty());
    }

    #[test]
    fn a_lost_instance_reruns_its_whole_component_and_stale_events_are_ignored() {
        let c = ComputeId(1);
        let g = graph(
            r#"{"app":"t","budget_mib":64,
            "compute":[{"name":"a","code":"x"},{"name":"b","code":"x","parallelism":2}],
            "edges":[{"kind":"trigger","from":"a","to":"b"}]}"#,
        );
        let mut d = Driver::new(g);
        d.start(b"in");
        d.handle(finished(ComputeId(0), 0, 0, b"A"));
        assert!(d.handle(finished(c, 1, 0, b"B1")).is_empty());
        let next = d.handle(Event::Lost { component: c, instance: 0, attempt: 0, loss: Loss::Compute });
        assert_eq!(next, vec![start(c, 0, 1, &[b"A"]), start(c, 1, 1, &[b"A"])], "both instances run again");
        assert!(d.handle(finished(c, 0, 0, b"stale")).is_empty(), "the discarded attempt's completion is ignored");
        assert_eq!(d.recoveries(), 1);
    }

    #[test]
    fn a_lost_instance_resets_the_memory_it_wrote_and_its_writers_run_again() {
        let (a, b) = (ComputeId(0), ComputeId(1));
        let mut d = Driver::new(graph(FAN));
        d.start(b"in");
        d.handle(finished(a, 0, 0, b"A"));
        let next = d.handle(Event::Lost { component: b, instance: 0, attempt: 0, loss: Loss::Compute });
        assert_eq!(next, vec![Command::Reset { memory: MemoryId(0) }, start(a, 0, 1, &[b"in"])]);
    }

    #[test]
    fn a_lost_memory_component_resets_it_and_reruns_its_finished_writer() {
        let (a, b) = (ComputeId(0), ComputeId(1));
        let mut d = Driver::new(graph(FAN));
        d.start(b"in");
        d.handle(finished(a, 0, 0, b"A"));
        let next = d.handle(Event::Lost { component: b, instance: 1, attempt: 0, loss: Loss::Memory(MemoryId(0)) });
        assert_eq!(next, vec![Command::Reset { memory: MemoryId(0) }, start(a, 0, 1, &[b"in"])]);
        // b waits for a's new run before it starts again.
        let next = d.handle(finished(a, 0, 1, b"A"));
        assert_eq!(next, vec![start(b, 0, 1, &[b"A"]), start(b, 1, 1, &[b"A"])]);
    }

    #[test]
    fn recovery_gives_up_after_its_bound() {
        let a = ComputeId(0);
        let g = graph(r#"{"app":"t","budget_mib":64,"compute":[{"name":"a","code":"x"}]}"#);
        let mut d = Driver::new(g).with_max_recoveries(2);
        d.start(b"");
        for attempt in 0..2 {
            let next = d.handle(Event::Lost { component: a, instance: 0, attempt, loss: Loss::Compute });
            assert_eq!(next, vec![start(a, 0, attempt + 1, &[b""])]);
        }
        let next = d.handle(Event::Lost { component: a, instance: 0, attempt: 2, loss: Loss::Compute });
        assert!(matches!(next.as_slice(), [Command::Abort { .. }]));
        assert!(d.is_done());
    }

    /// Graphs whose memory components outlive their writers (so a late loss
    /// needs the writers again), with parallel instances and message peers.
    const GRAPHS: [&str; 3] = [
        // LR's shape: load → split → train ×3 → validate, three memory components.
        r#"{"app":"lr","budget_mib":64,
            "compute":[{"name":"load","code":"x"},{"name":"split","code":"x"},
                       {"name":"train","code":"x","parallelism":3},{"name":"validate","code":"x"}],
            "memory":[{"name":"data","initial_mib":1,"increment_mib":1},
                      {"name":"shards","initial_mib":1,"increment_mib":1},
                      {"name":"model","initial_mib":1,"increment_mib":1}],
            "edges":[{"kind":"trigger","from":"load","to":"split"},{"kind":"trigger","from":"split","to":"train"},
                     {"kind":"trigger","from":"train","to":"validate"},
                     {"kind":"access","from":"load","to":"data"},{"kind":"access","from":"split","to":"data"},
                     {"kind":"access","from":"split","to":"shards"},{"kind":"access","from":"train","to":"shards"},
                     {"kind":"access","from":"train","to":"model"},{"kind":"access","from":"validate","to":"model"},
                     {"kind":"access","from":"validate","to":"data"}]}"#,
        // A chain whose first component's memory is read by the last.
        r#"{"app":"chain","budget_mib":64,
            "compute":[{"name":"s0","code":"x"},{"name":"s1","code":"x"},{"name":"s2","code":"x"},{"name":"s3","code":"x"}],
            "memory":[{"name":"m","initial_mib":1,"increment_mib":1}],
            "edges":[{"kind":"trigger","from":"s0","to":"s1"},{"kind":"trigger","from":"s1","to":"s2"},
                     {"kind":"trigger","from":"s2","to":"s3"},
                     {"kind":"access","from":"s0","to":"m"},{"kind":"access","from":"s3","to":"m"}]}"#,
        // A diamond whose middle components exchange messages.
        r#"{"app":"diamond","budget_mib":64,
            "compute":[{"name":"a","code":"x"},{"name":"b","code":"x","parallelism":2},{"name":"c","code":"x"},
                       {"name":"d","code":"x"}],
            "memory":[{"name":"m","initial_mib":1,"increment_mib":1}],
            "edges":[{"kind":"trigger","from":"a","to":"b"},{"kind":"trigger","from":"a","to":"c"},
                     {"kind":"trigger","from":"b","to":"d"},{"kind":"trigger","from":"c","to":"d"},
                     {"kind":"message","from":"b","to":"c"},
                     {"kind":"access","from":"a","to":"m"},{"kind":"access","from":"d","to":"m"}]}"#,
    ];

    /// What the simulated platform does at one step.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// Run the `pick`-th running instance to its end.
        Run { pick: usize },
        /// Lose the `pick`-th running instance's compute component, after
        /// it wrote its memory (the worst case) or before.
        LoseCompute { pick: usize, after_writes: bool },
        /// Lose a memory component the `pick`-th running instance accesses.
        LoseMemory { pick: usize, which: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => any::<usize>().prop_map(|pick| Step::Run { pick }),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, after_writes)| Step::LoseCompute { pick, after_writes }),
            2 => (any::<usize>(), any::<usize>()).prop_map(|(pick, which)| Step::LoseMemory { pick, which }),
        ]
    }

    /// A deterministic stand-in for the components: each writes a value
    /// derived from its inputs into the memory components it accesses, reads
    /// what components upstream of it wrote there, and outputs a digest of both.
    struct Simulation {
        graph: Arc<ResourceGraph>,
        upstream: Vec<Vec<ComputeId>>,
        memory: BTreeMap<MemoryId, BTreeMap<(ComputeId, u32), u64>>,
        ended: BTreeSet<MemoryId>,
        running: VecDeque<(ComputeId, u32, u32, Vec<Vec<u8>>)>,
        outputs: Option<Vec<Vec<u8>>>,
    }

    fn digest(parts: impl IntoIterator<Item = u64>) -> u64 {
        parts.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, p| (h ^ p).wrapping_mul(0x0000_0100_0000_01b3))
    }

    impl Simulation {
        fn new(graph: Arc<ResourceGraph>) -> Self {
            let upstream =
                (0..graph.compute_components().len() as u32).map(|c| upstream_of(&graph, ComputeId(c))).collect();
            Simulation {
                graph,
                upstream,
                memory: BTreeMap::new(),
                ended: BTreeSet::new(),
                running: VecDeque::new(),
                outputs: None,
            }
        }

        fn apply(&mut self, commands: Vec<Command>) -> Result<(), TestCaseError> {
            for command in commands {
                match command {
                    Command::Start { component, instance, attempt, inputs } => {
                        for m in self.graph.accesses(component) {
                            prop_assert!(!self.ended.contains(m), "{component:?} started on the ended {m:?}");
                        }
                        self.running.push_back((component, instance, attempt, inputs));
                    }
                    Command::Reset { memory } => {
                        self.memory.remove(&memory);
                        self.ended.remove(&memory);
                    }
                    Command::EndSpan { memory } => {
                        self.ended.insert(memory);
                    }
                    Command::Complete { outputs } => self.outputs = Some(outputs),
                    Command::Abort { reason, .. } => return Err(TestCaseError::fail(format!("aborted: {reason}"))),
                }
            }
            Ok(())
        }

        /// Runs an instance's effects; returns its output.
        fn run(&mut self, component: ComputeId, instance: u32, inputs: &[Vec<u8>]) -> Vec<u8> {
            let value = digest(
                inputs.iter().flatten().map(|&b| u64::from(b)).chain([u64::from(component.0), u64::from(instance)]),
            );
            let mut read = Vec::new();
            for &m in self.graph.accesses(component) {
                let contents = self.memory.entry(m).or_default();
                read.extend(
                    contents
                        .iter()
                        .filter(|((w, _), _)| self.upstream[component.0 as usize].contains(w))
                        .map(|(_, v)| *v),
                );
                contents.insert((component, instance), value);
            }
            digest(read.into_iter().chain([value])).to_le_bytes().to_vec()
        }
    }

    /// Runs `graph` under `steps` (then to the end without faults); returns the outputs.
    fn simulate(graph: &Arc<ResourceGraph>, steps: &[Step]) -> Result<(Vec<Vec<u8>>, u32), TestCaseError> {
        let mut driver = Driver::new(graph.clone());
        let mut sim = Simulation::new(graph.clone());
        sim.apply(driver.start(b"input"))?;
        let mut steps = steps.iter().copied();
        for _ in 0..10_000 {
            if sim.outputs.is_some() {
                return Ok((sim.outputs.unwrap_or_default(), driver.recoveries()));
            }
            let step = steps.next().unwrap_or(Step::Run { pick: 0 });
            let n = sim.running.len();
            prop_assert!(n > 0, "nothing runs and the invocation is not complete");
            let pick = match step {
                Step::Run { pick } | Step::LoseCompute { pick, .. } | Step::LoseMemory { pick, .. } => pick % n,
            };
            let Some((component, instance, attempt, inputs)) = sim.running.remove(pick) else { continue };
            let event = match step {
                Step::Run { .. } => {
                    Event::Finished { component, instance, attempt, output: sim.run(component, instance, &inputs) }
                }
                Step::LoseCompute { after_writes, .. } => {
                    if after_writes {
                        sim.run(component, instance, &inputs);
                    }
                    Event::Lost { component, instance, attempt, loss: Loss::Compute }
                }
                Step::LoseMemory { which, .. } => {
                    let accessed = graph.accesses(component);
                    let live: Vec<MemoryId> = accessed.iter().copied().filter(|m| !sim.ended.contains(m)).collect();
                    if live.is_empty() {
                        Event::Lost { component, instance, attempt, loss: Loss::Compute }
                    } else {
                        // The platform hears of it (a missed heartbeat); the
                        // instance that was using it is discarded with it.
                        let m = live[which % live.len()];
                        sim.memory.remove(&m);
                        sim.apply(driver.lose_memory(m))?;
                        continue;
                    }
                }
            };
            sim.apply(driver.handle(event))?;
        }
        Err(TestCaseError::fail("the invocation did not complete in 10,000 steps"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Whatever is lost and whenever, the invocation completes with the
        /// outputs of a run without faults.
        #[test]
        fn recovery_reproduces_the_fault_free_outputs(which in 0..GRAPHS.len(), steps in proptest::collection::vec(step(), 0..40)) {
            let g = graph(GRAPHS[which]);
            let (clean, _) = simulate(&g, &[])?;
            let (recovered, _) = simulate(&g, &steps)?;
            prop_assert_eq!(recovered, clean);
        }
    }
}
