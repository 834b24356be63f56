//! The resource graph: compute and memory components and the edges between them.
//!
//! A [`ResourceGraph`] is always valid: it is only built by
//! [`ResourceGraph::from_template`], which refuses trigger cycles, unknown or
//! duplicate names, unaccessed memory components, zero or inconsistent sizes
//! and edges of the wrong kind, each with its own [`GraphError`].

mod error;
mod span;

pub use error::{ComponentKind, EdgeEnd, GraphError, Site};
pub use span::MemorySpan;

use crate::ids::{ComputeId, MemoryId};
use crate::resources::MIB;
use crate::template::{ComputeSpec, EdgeSpec, MemorySpec, Template};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// The kind of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// Compute → compute: the output of `from` is the input of `to`.
    Trigger,
    /// Compute → memory: `from` reads and writes `to`.
    Access,
    /// Compute → compute: `from` and `to` exchange messages while both run.
    Message,
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EdgeKind::Trigger => "trigger",
            EdgeKind::Access => "access",
            EdgeKind::Message => "message",
        })
    }
}

/// A virtual compute component: a code piece with its CPU and parallelism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeComponent {
    /// Unique name within the application.
    pub name: String,
    /// The code piece it runs, as registered with the platform.
    pub code: String,
    /// CPU per instance, in thousandths of a core.
    pub millicores: u32,
    /// How many parallel instances run (N ≥ 1).
    pub parallelism: u32,
}

/// A virtual memory component: a data object that grows on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryComponent {
    /// Unique name within the application.
    pub name: String,
    /// Size of the first physical allocation, in bytes.
    pub initial_bytes: u64,
    /// Size added each time a write goes past the end, in bytes.
    pub increment_bytes: u64,
}

/// A validated resource graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceGraph {
    app: String,
    budget_bytes: u64,
    compute: Vec<ComputeComponent>,
    memory: Vec<MemoryComponent>,
    edges: Vec<(EdgeKind, Endpoint, Endpoint)>,
    triggers_out: Vec<Vec<ComputeId>>,
    triggers_in: Vec<Vec<ComputeId>>,
    accesses: Vec<Vec<MemoryId>>,
    accessors: Vec<Vec<ComputeId>>,
    peers: Vec<Vec<ComputeId>>,
    topological: Vec<ComputeId>,
    stages: Vec<u32>,
    spans: Vec<MemorySpan>,
}

/// One end of a stored edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Compute(ComputeId),
    Memory(MemoryId),
}

/// A component looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentRef {
    /// A compute component.
    Compute(ComputeId),
    /// A memory component.
    Memory(MemoryId),
}

const MAX_NAME: usize = 64;

/// The largest size in MiB whose byte count fits in a `u64`.
const MAX_MIB: u64 = u64::MAX / MIB;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ResourceGraph {
    /// Validates a template and builds the graph from it.
    pub fn from_template(template: &Template) -> Result<Self, GraphError> {
        if !valid_name(&template.app) {
            return Err(GraphError::InvalidName { site: Site::App, name: template.app.clone() });
        }
        if template.budget_mib == 0 {
            return Err(GraphError::ZeroSize { site: Site::App, field: "budget_mib" });
        }
        let Some(budget_bytes) = template.budget_mib.checked_mul(MIB) else {
            return Err(GraphError::InconsistentSize {
                site: Site::App,
                field: "budget_mib",
                reason: format!("is {} MiB, above the largest possible budget of {} MiB", template.budget_mib, MAX_MIB),
            });
        };
        if template.compute.is_empty() {
            return Err(GraphError::NoCompute);
        }

        let mut names: HashMap<&str, (ComponentRef, Site)> = HashMap::new();
        let mut compute = Vec::with_capacity(template.compute.len());
        for (index, spec) in template.compute.iter().enumerate() {
            let site = Site::Compute { index, name: spec.name.clone() };
            register(&mut names, &spec.name, ComponentRef::Compute(ComputeId(index as u32)), &site)?;
            compute.push(compute_component(spec, &site)?);
        }
        let mut memory = Vec::with_capacity(template.memory.len());
        for (index, spec) in template.memory.iter().enumerate() {
            let site = Site::Memory { index, name: spec.name.clone() };
            register(&mut names, &spec.name, ComponentRef::Memory(MemoryId(index as u32)), &site)?;
            memory.push(memory_component(spec, &site, template.budget_mib)?);
        }

        let n = compute.len();
        let mut graph = ResourceGraph {
            app: template.app.clone(),
            budget_bytes,
            compute,
            memory,
            edges: Vec::with_capacity(template.edges.len()),
            triggers_out: vec![Vec::new(); n],
            triggers_in: vec![Vec::new(); n],
            accesses: vec![Vec::new(); n],
            accessors: vec![Vec::new(); template.memory.len()],
            peers: vec![Vec::new(); n],
            topological: Vec::new(),
            stages: Vec::new(),
            spans: Vec::new(),
        };
        for (index, edge) in template.edges.iter().enumerate() {
            graph.add_edge(index, edge, &names)?;
        }
        if let Some(index) = graph.accessors.iter().position(Vec::is_empty) {
            return Err(GraphError::UnaccessedMemory { index, name: graph.memory[index].name.clone() });
        }
        graph.order_triggers(template)?;
        graph.spans = span::infer(&graph);
        Ok(graph)
    }

    /// The template this graph was built from (field for field).
    pub fn to_template(&self) -> Template {
        let name = |e: Endpoint| match e {
            Endpoint::Compute(c) => self.compute[c.0 as usize].name.clone(),
            Endpoint::Memory(m) => self.memory[m.0 as usize].name.clone(),
        };
        Template {
            app: self.app.clone(),
            budget_mib: self.budget_bytes / MIB,
            compute: self
                .compute
                .iter()
                .map(|c| ComputeSpec {
                    name: c.name.clone(),
                    code: c.code.clone(),
                    cpu: f64::from(c.millicores) / 1000.0,
                    parallelism: c.parallelism,
                })
                .collect(),
            memory: self
                .memory
                .iter()
                .map(|m| MemorySpec {
                    name: m.name.clone(),
                    initial_mib: m.initial_bytes / MIB,
                    increment_mib: m.increment_bytes / MIB,
                })
                .collect(),
            edges: self
                .edges
                .iter()
                .map(|&(kind, from, to)| EdgeSpec { kind, from: name(from), to: name(to) })
                .collect(),
        }
    }

    fn add_edge(
        &mut self,
        index: usize,
        edge: &EdgeSpec,
        names: &HashMap<&str, (ComponentRef, Site)>,
    ) -> Result<(), GraphError> {
        let lookup = |end: EdgeEnd, name: &str| {
            names.get(name).map(|(r, _)| *r).ok_or_else(|| GraphError::UnknownComponent {
                edge: index,
                kind: edge.kind,
                end,
                name: name.to_owned(),
            })
        };
        let from = lookup(EdgeEnd::From, &edge.from)?;
        let to = lookup(EdgeEnd::To, &edge.to)?;
        let wrong = |end: EdgeEnd, name: &str, expected: ComponentKind, found: ComponentKind| {
            GraphError::WrongEdgeKind { edge: index, kind: edge.kind, end, name: name.to_owned(), expected, found }
        };
        let ComponentRef::Compute(source) = from else {
            return Err(wrong(EdgeEnd::From, &edge.from, ComponentKind::Compute, ComponentKind::Memory));
        };
        match (edge.kind, to) {
            (EdgeKind::Trigger, ComponentRef::Compute(target)) => {
                // A repeated trigger edge would deliver the same output twice.
                if self.triggers_out[source.0 as usize].contains(&target) {
                    return Err(GraphError::DuplicateTrigger {
                        edge: index,
                        from: edge.from.clone(),
                        to: edge.to.clone(),
                    });
                }
                self.triggers_out[source.0 as usize].push(target);
                self.triggers_in[target.0 as usize].push(source);
                self.edges.push((edge.kind, Endpoint::Compute(source), Endpoint::Compute(target)));
            }
            (EdgeKind::Message, ComponentRef::Compute(target)) => {
                push_unique(&mut self.peers[source.0 as usize], target);
                push_unique(&mut self.peers[target.0 as usize], source);
                self.edges.push((edge.kind, Endpoint::Compute(source), Endpoint::Compute(target)));
            }
            (EdgeKind::Access, ComponentRef::Memory(target)) => {
                push_unique(&mut self.accesses[source.0 as usize], target);
                push_unique(&mut self.accessors[target.0 as usize], source);
                self.edges.push((edge.kind, Endpoint::Compute(source), Endpoint::Memory(target)));
            }
            (EdgeKind::Trigger | EdgeKind::Message, ComponentRef::Memory(_)) => {
                return Err(wrong(EdgeEnd::To, &edge.to, ComponentKind::Compute, ComponentKind::Memory));
            }
            (EdgeKind::Access, ComponentRef::Compute(_)) => {
                return Err(wrong(EdgeEnd::To, &edge.to, ComponentKind::Memory, ComponentKind::Compute));
            }
        }
        Ok(())
    }

    /// Kahn's algorithm; on a cycle, walks it to name its members.
    fn order_triggers(&mut self, template: &Template) -> Result<(), GraphError> {
        let n = self.compute.len();
        let mut indegree: Vec<usize> = self.triggers_in.iter().map(Vec::len).collect();
        let mut stages = vec![0u32; n];
        let mut ready: Vec<ComputeId> = (0..n as u32).map(ComputeId).filter(|c| indegree[c.0 as usize] == 0).collect();
        ready.reverse();
        let mut order = Vec::with_capacity(n);
        while let Some(c) = ready.pop() {
            order.push(c);
            for &next in &self.triggers_out[c.0 as usize] {
                let i = next.0 as usize;
                stages[i] = stages[i].max(stages[c.0 as usize] + 1);
                indegree[i] -= 1;
                if indegree[i] == 0 {
                    ready.push(next);
                }
            }
        }
        if order.len() < n {
            return Err(self.cycle_error(&indegree, template));
        }
        self.topological = order;
        self.stages = stages;
        Ok(())
    }

    fn cycle_error(&self, indegree: &[usize], template: &Template) -> GraphError {
        // Every node left with indegree > 0 has a predecessor also left: walk
        // predecessors until a node repeats. The walk from that node's first
        // visit on is the cycle (what came before it only leads into it).
        let start = indegree.iter().position(|&d| d > 0).unwrap_or(0);
        let mut path = vec![start];
        let mut current = start;
        while let Some(prev) = self.triggers_in[current].iter().map(|p| p.0 as usize).find(|&p| indegree[p] > 0) {
            if let Some(pos) = path.iter().position(|&p| p == prev) {
                path.drain(..pos);
                break;
            }
            path.push(prev);
            current = prev;
        }
        // Predecessor order → trigger order.
        path.reverse();
        // The edge that closes the cycle is its member written last in the
        // template; start the cycle just after it so that it ends with it.
        let edge_of = |from: usize, to: usize| {
            let (from, to) = (&self.compute[from].name, &self.compute[to].name);
            template.edges.iter().rposition(|e| e.kind == EdgeKind::Trigger && &e.from == from && &e.to == to)
        };
        let len = path.len();
        let (last, closing) = (0..len)
            .filter_map(|i| edge_of(path[i], path[(i + 1) % len]).map(|edge| (i, edge)))
            .max_by_key(|&(_, edge)| edge)
            .unwrap_or((len.saturating_sub(1), 0));
        path.rotate_left((last + 1) % len.max(1));
        let mut cycle: Vec<String> = path.iter().map(|&i| self.compute[i].name.clone()).collect();
        if let Some(first) = cycle.first().cloned() {
            cycle.push(first);
        }
        GraphError::TriggerCycle { edge: closing, cycle }
    }

    /// The application's name.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The per-application cap on memory held at once by memory components, in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// All compute components, indexed by [`ComputeId`].
    pub fn compute_components(&self) -> &[ComputeComponent] {
        &self.compute
    }

    /// All memory components, indexed by [`MemoryId`].
    pub fn memory_components(&self) -> &[MemoryComponent] {
        &self.memory
    }

    /// One compute component.
    pub fn compute(&self, id: ComputeId) -> &ComputeComponent {
        &self.compute[id.0 as usize]
    }

    /// One memory component.
    pub fn memory(&self, id: MemoryId) -> &MemoryComponent {
        &self.memory[id.0 as usize]
    }

    /// Looks a component up by name.
    pub fn find(&self, name: &str) -> Option<ComponentRef> {
        if let Some(i) = self.compute.iter().position(|c| c.name == name) {
            return Some(ComponentRef::Compute(ComputeId(i as u32)));
        }
        self.memory.iter().position(|m| m.name == name).map(|i| ComponentRef::Memory(MemoryId(i as u32)))
    }

    /// Compute components no trigger edge leads to: they receive the invocation's input.
    pub fn entry_points(&self) -> impl Iterator<Item = ComputeId> + '_ {
        self.topological.iter().copied().filter(|c| self.triggers_in[c.0 as usize].is_empty())
    }

    /// Compute components no trigger edge leaves: their outputs are the invocation's output.
    pub fn exit_points(&self) -> impl Iterator<Item = ComputeId> + '_ {
        self.topological.iter().copied().filter(|c| self.triggers_out[c.0 as usize].is_empty())
    }

    /// Compute components in an order where every component comes after those that trigger it.
    pub fn topological_order(&self) -> &[ComputeId] {
        &self.topological
    }

    /// The longest trigger path from an entry point to `id` (entry points are stage 0).
    pub fn stage(&self, id: ComputeId) -> u32 {
        self.stages[id.0 as usize]
    }

    /// The components `id` triggers.
    pub fn triggers(&self, id: ComputeId) -> &[ComputeId] {
        &self.triggers_out[id.0 as usize]
    }

    /// The components that trigger `id`, in edge order.
    pub fn triggered_by(&self, id: ComputeId) -> &[ComputeId] {
        &self.triggers_in[id.0 as usize]
    }

    /// The memory components `id` accesses.
    pub fn accesses(&self, id: ComputeId) -> &[MemoryId] {
        &self.accesses[id.0 as usize]
    }

    /// The compute components that access `id`.
    pub fn accessors(&self, id: MemoryId) -> &[ComputeId] {
        &self.accessors[id.0 as usize]
    }

    /// The compute components `id` exchanges messages with (either direction).
    pub fn peers(&self, id: ComputeId) -> &[ComputeId] {
        &self.peers[id.0 as usize]
    }

    /// The inferred span of a memory component.
    pub fn span(&self, id: MemoryId) -> &MemorySpan {
        &self.spans[id.0 as usize]
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn register<'a>(
    names: &mut HashMap<&'a str, (ComponentRef, Site)>,
    name: &'a str,
    component: ComponentRef,
    site: &Site,
) -> Result<(), GraphError> {
    if !valid_name(name) {
        return Err(GraphError::InvalidName { site: site.clone(), name: name.to_owned() });
    }
    if let Some((_, first)) = names.get(name) {
        return Err(GraphError::DuplicateName { name: name.to_owned(), first: first.clone(), second: site.clone() });
    }
    names.insert(name, (component, site.clone()));
    Ok(())
}

fn compute_component(spec: &ComputeSpec, site: &Site) -> Result<ComputeComponent, GraphError> {
    if spec.code.trim().is_empty() {
        return Err(GraphError::InconsistentSize {
            site: site.clone(),
            field: "code",
            reason: "must name a registered code piece".into(),
        });
    }
    if !spec.cpu.is_finite() || spec.cpu <= 0.0 {
        return Err(GraphError::ZeroSize { site: site.clone(), field: "cpu" });
    }
    let millicores = spec.cpu * 1000.0;
    if millicores > f64::from(u32::MAX) || (millicores - millicores.round()).abs() > 1e-6 || millicores.round() < 1.0 {
        return Err(GraphError::InconsistentSize {
            site: site.clone(),
            field: "cpu",
            reason: format!("{} is not a whole number of millicores (at most 3 decimals, at least 0.001)", spec.cpu),
        });
    }
    if spec.parallelism == 0 {
        return Err(GraphError::ZeroSize { site: site.clone(), field: "parallelism" });
    }
    Ok(ComputeComponent {
        name: spec.name.clone(),
        code: spec.code.clone(),
        millicores: millicores.round() as u32,
        parallelism: spec.parallelism,
    })
}

fn memory_component(spec: &MemorySpec, site: &Site, budget_mib: u64) -> Result<MemoryComponent, GraphError> {
    for (field, value) in [("initial_mib", spec.initial_mib), ("increment_mib", spec.increment_mib)] {
        if value == 0 {
            return Err(GraphError::ZeroSize { site: site.clone(), field });
        }
        if value > budget_mib {
            return Err(GraphError::InconsistentSize {
                site: site.clone(),
                field,
                reason: format!("is {value} MiB, above the application's budget_mib of {budget_mib} MiB"),
            });
        }
    }
    Ok(MemoryComponent {
        name: spec.name.clone(),
        initial_bytes: spec.initial_mib * MIB,
        increment_bytes: spec.increment_mib * MIB,
    })
}

#[cfg(test)]
mod tests;
