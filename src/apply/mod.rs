//! TODO(layout): describe `apply`.

pub mod external;
pub(crate) mod rust;
pub mod sql;
pub mod write_guard;
