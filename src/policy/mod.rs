//! Policy decisions, free of I/O: whether some AccessPolicy allows a request
//! (`evaluate`), whether its approvals suffice (`approval`), whether a live
//! grant may be extended (`extension`), and how risky an
//! identity's standing rights are (`standing_privilege`, `risk`), and whether
//! a Pod may act as an agent pinned to its workload (`workload`).

pub mod approval;
pub mod delegation;
pub mod evaluate;
pub mod extension;
pub mod risk;
pub mod role_content;
pub mod standing_privilege;
pub mod workload;

pub use evaluate::{Allowed, ClusterFacts, Evaluation, evaluate};
