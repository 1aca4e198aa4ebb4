//! Policy decisions, free of I/O: whether some AccessPolicy allows a request
//! (`evaluate`) and whether its approvals suffice (`approval`).

pub mod approval;
pub mod delegation;
pub mod evaluate;
pub mod standing_privilege;

pub use evaluate::{Allowed, ClusterFacts, Evaluation, evaluate};
