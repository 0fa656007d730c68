//! TODO(layout): describe `read`.

pub mod ordering;
pub mod source;
