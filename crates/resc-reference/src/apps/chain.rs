//! The start-up test of the paper's §6.2.2: compute components in a chain,
//! each sleeping a fixed time and passing its input on.

use super::{decode, encode};
use resc_core::runtime::{CodeError, Context};
use resc_core::sandbox::{CodePiece, CodeRegistry};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
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

/// Registers `chain.step` with a load of `load` per sandbox environment: a
/// stand-in for what a cold start costs beyond the environment itself
/// (starting a language runtime and importing the code), which the paper's
/// Python code pieces pay and these Rust ones do not.
pub fn register_with_load(registry: &mut CodeRegistry, load: Duration) {
    registry.register_loader("chain.step", move || {
        std::thread::sleep(load);
        let piece: Arc<dyn CodePiece> = Arc::new(step);
        Ok(piece)
    });
}
