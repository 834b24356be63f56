//! ReSC core: the model, the traits and the runtime API of resource-centric
//! serverless computing.
//!
//! An application is a [`ResourceGraph`](graph::ResourceGraph) of compute
//! components (code pieces) and memory components (data objects), written as
//! a JSON [`template`]. The platform materializes virtual components as
//! fixed-size physical ones ([`size_class`]), places them
//! ([`scheduler::Scheduler`]), allocates memory ([`pool::MemoryPool`]),
//! reaches it ([`transport::Transport`]), runs code ([`sandbox::Sandbox`])
//! and records triggers durably ([`trigger_log::TriggerLog`]). Code pieces see
//! only the [`runtime`] API. Every trait has an in-process implementation in
//! [`inproc`], and, with the `testkit` feature, a conformance suite in
//! `testkit` that other backends run too.
//!
//! ```
//! use resc_core::template;
//!
//! let graph = template::parse(r#"{
//!   "app": "pipeline",
//!   "budget_mib": 512,
//!   "compute": [
//!     { "name": "produce", "code": "p.produce" },
//!     { "name": "consume", "code": "p.consume", "parallelism": 4 }
//!   ],
//!   "memory": [{ "name": "data", "initial_mib": 64, "increment_mib": 64 }],
//!   "edges": [
//!     { "kind": "trigger", "from": "produce", "to": "consume" },
//!     { "kind": "access", "from": "produce", "to": "data" },
//!     { "kind": "access", "from": "consume", "to": "data" }
//!   ]
//! }"#)?;
//! let data = graph.memory_components().iter().position(|m| m.name == "data").unwrap();
//! let span = graph.span(resc_core::ids::MemoryId(data as u32));
//! // `data` lives from `produce` (stage 0) to the end of `consume` (stage 1).
//! assert_eq!((span.first_stage, span.last_stage), (0, 1));
//! # Ok::<(), template::TemplateError>(())
//! ```
#![forbid(unsafe_code)]

pub mod graph;
pub mod ids;
pub mod inproc;
pub mod memory;
pub mod pool;
pub mod resources;
pub mod runtime;
pub mod sandbox;
pub mod scheduler;
pub mod size_class;
pub mod template;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transport;
pub mod trigger_log;
pub mod usage;
