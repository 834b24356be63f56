//! The ReSC reference platform: one assembly of the `resc-core` traits.
//!
//! - [`embedded::EmbeddedPlatform`]: an in-process cluster of racks × nodes
//!   with compute, memory and balanced pools that deploys resource graphs and
//!   runs invocations end to end, disaggregated ([`invoke`]) or aggregated
//!   into one function-centric sandbox ([`invoke_aggregated`]);
//! - [`driver`]: the sans-IO invocation state machine (trigger fan-out and
//!   fan-in, memory spans), with serializable messages;
//! - [`metering`] and [`alloc_meter`]: allocated and used GiB·s per
//!   component, with used bytes measured by a counting allocator;
//! - [`apps`]: the logistic-regression and chain applications;
//! - [`demo`] and [`svg`]: what `resc demo` runs and draws.
//!
//! [`invoke`]: embedded::EmbeddedPlatform::invoke
//! [`invoke_aggregated`]: embedded::EmbeddedPlatform::invoke_aggregated
//!
//! ```
//! use resc_reference::alloc_meter::{PlatformAllocator, PLATFORM_ALLOCATOR};
//! use resc_reference::embedded::{EmbeddedPlatform, PlatformConfig};
//! use resc_core::runtime::Context;
//! use resc_core::sandbox::CodeRegistry;
//!
//! // Metering charges each compute component's allocations, and under
//! // memory pressure they swap: the binary installs the platform's allocator.
//! #[global_allocator]
//! static ALLOCATOR: PlatformAllocator = PLATFORM_ALLOCATOR;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut code = CodeRegistry::new();
//!     code.register("hello.greet", |ctx: &mut Context| {
//!         let mut note = ctx.channel("note")?;
//!         note.write(0, b"hello, ")?;
//!         note.write(7, ctx.input())?;
//!         let mut out = vec![0; note.len() as usize];
//!         note.read(0, &mut out)?;
//!         Ok(out)
//!     });
//!     let platform = EmbeddedPlatform::new(PlatformConfig::default(), code)?;
//!     let app = platform.deploy(resc_core::template::parse(r#"{
//!       "app": "hello", "budget_mib": 256,
//!       "compute": [{ "name": "greet", "code": "hello.greet" }],
//!       "memory": [{ "name": "note", "initial_mib": 64, "increment_mib": 64 }],
//!       "edges": [{ "kind": "access", "from": "greet", "to": "note" }]
//!     }"#)?)?;
//!     let report = platform.invoke(&app, b"world")?;
//!     assert_eq!(report.outputs, vec![b"hello, world".to_vec()]);
//!     println!("allocated {:.6} GiB·s", report.usage.total().allocated_gib_s);
//!     Ok(())
//! }
//! ```
#![deny(unsafe_code)]

pub mod adapt;
pub mod alloc_meter;
pub mod apps;
pub mod bench;
pub mod demo;
pub mod driver;
pub mod durable;
pub mod embedded;
pub mod metering;
pub mod svg;
pub mod trigger_log;
