//! The invocation driver: a sans-IO state machine that turns completion
//! events into commands (start an instance, end a memory span, finish).
//!
//! It does no I/O and reads no clock, so the embedded executor, a
//! multi-process assembly and a deterministic simulation can all drive it.
//! Its messages are plain serializable types.

use resc_core::graph::ResourceGraph;
use resc_core::ids::{ComputeId, MemoryId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An instance finished with an output.
    Finished {
        /// The component.
        component: ComputeId,
        /// The instance.
        instance: u32,
        /// Its output.
        output: Vec<u8>,
    },
    /// An instance failed.
    Failed {
        /// The component.
        component: ComputeId,
        /// The instance.
        instance: u32,
        /// Why.
        reason: String,
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
        /// The outputs of the instances that trigger it, or the invocation's input.
        inputs: Vec<Vec<u8>>,
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
    /// A component failed; the invocation stops.
    Abort {
        /// The component.
        component: ComputeId,
        /// Why.
        reason: String,
    },
}

/// One invocation's progress.
#[derive(Debug)]
pub struct Driver {
    graph: Arc<ResourceGraph>,
    outputs: Vec<Vec<Option<Vec<u8>>>>,
    instances_left: Vec<u32>,
    triggers_left: Vec<usize>,
    accessors_left: Vec<usize>,
    components_left: usize,
    done: bool,
}

impl Driver {
    /// A driver for one invocation of `graph`.
    pub fn new(graph: Arc<ResourceGraph>) -> Self {
        let compute = graph.compute_components();
        Driver {
            outputs: compute.iter().map(|c| vec![None; c.parallelism as usize]).collect(),
            instances_left: compute.iter().map(|c| c.parallelism).collect(),
            triggers_left: (0..compute.len() as u32).map(|c| graph.triggered_by(ComputeId(c)).len()).collect(),
            accessors_left: (0..graph.memory_components().len() as u32)
                .map(|m| graph.accessors(MemoryId(m)).len())
                .collect(),
            components_left: compute.len(),
            done: false,
            graph,
        }
    }

    /// Whether the invocation completed or aborted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The commands that start the invocation with `input`.
    pub fn start(&mut self, input: &[u8]) -> Vec<Command> {
        let entries: Vec<ComputeId> = self.graph.entry_points().collect();
        let mut commands = Vec::new();
        for component in entries {
            self.start_all(component, &[input.to_vec()], &mut commands);
        }
        commands
    }

    fn start_all(&self, component: ComputeId, inputs: &[Vec<u8>], commands: &mut Vec<Command>) {
        let n = self.graph.compute(component).parallelism;
        for instance in 0..n {
            commands.push(Command::Start { component, instance, inputs: inputs.to_vec() });
        }
    }

    /// Advances on an event and returns what to do next.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        if self.done {
            return Vec::new();
        }
        match event {
            Event::Failed { component, reason, .. } => {
                self.done = true;
                vec![Command::Abort { component, reason }]
            }
            Event::Finished { component, instance, output } => self.finished(component, instance, output),
        }
    }

    fn finished(&mut self, component: ComputeId, instance: u32, output: Vec<u8>) -> Vec<Command> {
        let c = component.0 as usize;
        // Events may come from other processes: ignore ones naming nothing known.
        let Some(slot) = self.outputs.get_mut(c).and_then(|o| o.get_mut(instance as usize)) else {
            return Vec::new();
        };
        if slot.is_some() {
            return Vec::new(); // a duplicate completion (at-least-once delivery)
        }
        *slot = Some(output);
        self.instances_left[c] -= 1;
        if self.instances_left[c] > 0 {
            return Vec::new();
        }
        let mut commands = Vec::new();
        for &memory in self.graph.accesses(component) {
            let m = memory.0 as usize;
            self.accessors_left[m] -= 1;
            if self.accessors_left[m] == 0 {
                commands.push(Command::EndSpan { memory });
            }
        }
        for &next in self.graph.triggers(component) {
            let n = next.0 as usize;
            self.triggers_left[n] -= 1;
            if self.triggers_left[n] == 0 {
                let inputs = self.gather(next);
                self.start_all(next, &inputs, &mut commands);
            }
        }
        self.components_left -= 1;
        if self.components_left == 0 {
            self.done = true;
            let outputs = self.graph.exit_points().flat_map(|e| self.outputs_of(e)).collect();
            commands.push(Command::Complete { outputs });
        }
        commands
    }

    fn outputs_of(&self, component: ComputeId) -> Vec<Vec<u8>> {
        self.outputs[component.0 as usize].iter().map(|o| o.clone().unwrap_or_default()).collect()
    }

    /// The inputs of `component`: its triggers' outputs in edge then instance order.
    fn gather(&self, component: ComputeId) -> Vec<Vec<u8>> {
        self.graph.triggered_by(component).iter().flat_map(|&p| self.outputs_of(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(text: &str) -> Arc<ResourceGraph> {
        Arc::new(resc_core::template::parse(text).expect("valid test template"))
    }

    #[test]
    fn fan_out_and_fan_in_pass_outputs_and_end_spans() {
        let g = graph(
            r#"{"app":"t","budget_mib":64,
            "compute":[{"name":"a","code":"x"},{"name":"b","code":"x","parallelism":2},{"name":"c","code":"x"}],
            "memory":[{"name":"m","initial_mib":1,"increment_mib":1}],
            "edges":[{"kind":"trigger","from":"a","to":"b"},{"kind":"trigger","from":"b","to":"c"},
                     {"kind":"access","from":"a","to":"m"},{"kind":"access","from":"b","to":"m"}]}"#,
        );
        let (a, b, c) = (ComputeId(0), ComputeId(1), ComputeId(2));
        let mut d = Driver::new(g);
        assert_eq!(d.start(b"in"), vec![Command::Start { component: a, instance: 0, inputs: vec![b"in".to_vec()] }]);
        let next = d.handle(Event::Finished { component: a, instance: 0, output: b"A".to_vec() });
        assert_eq!(
            next,
            vec![
                Command::Start { component: b, instance: 0, inputs: vec![b"A".to_vec()] },
                Command::Start { component: b, instance: 1, inputs: vec![b"A".to_vec()] },
            ]
        );
        assert!(d.handle(Event::Finished { component: b, instance: 1, output: b"B1".to_vec() }).is_empty());
        // A duplicate completion changes nothing.
        assert!(d.handle(Event::Finished { component: b, instance: 1, output: b"B1".to_vec() }).is_empty());
        let next = d.handle(Event::Finished { component: b, instance: 0, output: b"B0".to_vec() });
        assert_eq!(
            next,
            vec![
                Command::EndSpan { memory: MemoryId(0) },
                Command::Start { component: c, instance: 0, inputs: vec![b"B0".to_vec(), b"B1".to_vec()] },
            ]
        );
        let next = d.handle(Event::Finished { component: c, instance: 0, output: b"C".to_vec() });
        assert_eq!(next, vec![Command::Complete { outputs: vec![b"C".to_vec()] }]);
        assert!(d.is_done());
    }

    #[test]
    fn a_failure_aborts_once() {
        let g = graph(r#"{"app":"t","budget_mib":64,"compute":[{"name":"a","code":"x"}]}"#);
        let mut d = Driver::new(g);
        d.start(b"");
        let a = ComputeId(0);
        let next = d.handle(Event::Failed { component: a, instance: 0, reason: "boom".into() });
        assert_eq!(next, vec![Command::Abort { component: a, reason: "boom".into() }]);
        assert!(d.handle(Event::Finished { component: a, instance: 0, output: vec![] }).is_empty());
    }
}
