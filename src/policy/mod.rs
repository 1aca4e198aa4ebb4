//! Policy decisions, free of I/O: whether some AccessPolicy allows a request
//! (`evaluate`) and whether its approvals suffice (`approval`).

pub mod approval;
pub mod evaluate;

pub use evaluate::{Allowed, ClusterFacts, Evaluation, evaluate};
