//! Test doubles shared by the operator's integration tests.
pub mod cluster;
