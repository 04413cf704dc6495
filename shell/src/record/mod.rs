//! Events that are not lost: incremental aggregation over every event
//! ([`agg`]), per-probe `printf` formats ([`printf`]), recordings of every
//! delivered event to a file and their reports ([`file`], [`report`]), and
//! rate-limited drop summaries ([`drops`]). Design: docs/RECORDING.md.

pub mod agg;
pub mod drops;
pub mod file;
pub mod printf;
pub mod report;
