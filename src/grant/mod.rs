//! What a grant is made of (`plan`), decided from the request alone; the
//! reconciler in `controller` makes and revokes it.

pub mod plan;

pub use plan::{Holders, Managed, Part, Plan, Stage, plan};
