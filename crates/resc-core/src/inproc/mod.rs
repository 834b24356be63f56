//! In-process implementations of every trait: what the embedded platform
//! assembles, and what each conformance suite runs against.

mod fabric;
mod memory;
mod sandbox;
mod trigger_log;

pub use fabric::InProcessFabric;
pub use memory::InProcessMemory;
pub use sandbox::ThreadSandbox;
pub use trigger_log::InMemoryTriggerLog;
