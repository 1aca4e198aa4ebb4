//! Tenants are adversaries too: attacks by people who hold ordinary rights
//! around a grant (their own requester role, approver rights, `edit` in a
//! namespace), each made with their own credentials (a ServiceAccount token,
//! or a user impersonated by the admin so the API server sees that user)
//! against the real operator under its shipped RBAC. One module per kind of
//! attack; every row names what it tries and what must stop it.
#[path = "../support/mod.rs"]
mod support;

mod owned_objects;
mod separation_of_duties;
