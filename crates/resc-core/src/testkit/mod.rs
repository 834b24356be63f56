//! Conformance suites for the traits (object_store's pattern): generic checks
//! that every backend — this workspace's and an integrator's — must pass.
