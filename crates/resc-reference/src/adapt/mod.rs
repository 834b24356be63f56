//! Adaptation (paper §5.3): the adjuster that right-sizes components from
//! their usage history ([`resc_core::usage`]), and its simulation on
//! synthetic memory profiles (`resc demo adjust`).

pub mod adjust;
pub mod profiles;
