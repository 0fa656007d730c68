//! Reading events: `source` (the event table, in global order, in batches after a checkpoint,
//! up to a bound) and `ordering` (the bound below which every event is final: `xid8`,
//! `gap-aware` or `serialized`); `one_pass` (the bulk replay's fixed range read with one
//! ordered cursor, batches cut from it); `access` (how the server serves each of these reads,
//! for `plan`).

pub mod access;
pub mod one_pass;
pub mod ordering;
pub mod source;
