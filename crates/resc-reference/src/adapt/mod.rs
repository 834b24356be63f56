//! Adaptation (paper §5.3): the adjuster that right-sizes components from
//! their usage history ([`resc_core::usage`]), the watermark controller
//! that aggregates and disaggregates applications on the balanced pool, the
//! [`Adaptive`](adaptive::Adaptive) runner that applies both to invocations
//! on the embedded platform, and the demos (`resc demo adjust`, `resc demo
//! adapt`).

pub mod adaptive;
pub mod adjust;
pub mod profiles;
pub mod scenario;
pub mod watermark;
