//! RBAC reasoning used by the escalation checks: pure functions over `PolicyRule`s,
//! with no I/O, so every decision can be unit- and property-tested.
pub mod covers;

pub use covers::{covers, rule_is_covered, uncovered};
