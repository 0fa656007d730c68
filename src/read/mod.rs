//! Reading events: `source` (the event table, in global order, in batches after a checkpoint,
//! up to a bound) and `ordering` (the bound below which every event is final: `xid8`,
//! `gap-aware` or `serialized`).

pub mod ordering;
pub mod source;
