//! TODO(layout): describe `pipeline`.

pub(crate) mod batches;
pub(crate) mod cancel_requests;
pub mod checks;
pub mod clone;
pub(crate) mod lanes;
pub(crate) mod old_generation;
pub(crate) mod partial;
pub mod plan;
pub mod preflight;
pub mod shape;
pub mod swap;
pub mod validate;
pub mod write_targets;
