//! The start-up test of the paper's §6.2.2: compute components in a chain,
//! each sleeping a fixed time and passing its input on.

use super::{decode, encode};
use resc_core::runtime::{CodeError, Context};
use resc_core::sandbox::CodeRegistry;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The chain's input, passed from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainJob {
    /// How long each step sleeps, in milliseconds.
    pub sleep_ms: u64,
}

/// One step: sleep, then pass the input on unchanged.
pub fn step(ctx: &mut Context) -> Result<Vec<u8>, CodeError> {
    let job: ChainJob = decode(ctx.name(), ctx.input())?;
    std::thread::sleep(Duration::from_millis(job.sleep_ms));
    encode(&job)
}

/// Registers the chain's code piece as `chain.step`.
pub fn register(registry: &mut CodeRegistry) {
    registry.register("chain.step", step);
}
