//! The applications the demos run: their templates (the files under
//! `examples/`, embedded at build time) and their code pieces, which use only
//! the runtime API of `resc-core`.

pub mod chain;
pub mod lr;

/// `examples/lr.json`: logistic regression, 4 compute and 3 memory components.
pub const LR_TEMPLATE: &str = include_str!("../../../../examples/lr.json");

/// `examples/chain.json`: 10 compute components in a chain.
pub const CHAIN_TEMPLATE: &str = include_str!("../../../../examples/chain.json");

use resc_core::runtime::CodeError;

/// Decodes a JSON job or fails with a message naming the component.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(component: &str, bytes: &[u8]) -> Result<T, CodeError> {
    serde_json::from_slice(bytes).map_err(|e| CodeError::failed(format!("{component}: bad input: {e}")))
}

/// Encodes a JSON output.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodeError> {
    serde_json::to_vec(value).map_err(|e| CodeError::failed(format!("cannot encode output: {e}")))
}
