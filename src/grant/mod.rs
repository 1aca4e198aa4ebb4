//! What a grant is made of (`plan`), decided from the request alone, and
//! which objects are a grant's (`ownership`); the reconciler in `controller`
//! makes and revokes them.

pub mod ownership;
pub mod plan;

pub use plan::{Holders, Managed, Part, Plan, Stage, plan};
