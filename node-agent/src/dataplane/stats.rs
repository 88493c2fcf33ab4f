//! Placeholder.
pub struct Stats;
pub struct Counter;
