//! The ReSC reference platform.
#![deny(unsafe_code)]

pub mod alloc_meter;
pub mod driver;
pub mod embedded;
pub mod metering;
pub mod apps;
pub mod demo;
pub mod svg;
