//! What the stub and the shell both speak.
//!
//! - [`command`]: the monitor command grammar (`monitor kprobe sys_open`),
//!   carried by GDB `qRcmd` packets; [`command::parse`] and `Display` are
//!   inverse. [`command::COMMANDS`] is the command reference.
//! - [`fetch`]: the fetch program of capture probes (`fetch=u64@arg0+8,...`),
//!   validated, bounded ([`fetch::MAX_OPS`]) and `Copy`.
//! - [`reply`]: the replies, one `KIND key=value ...` row per line, typed row
//!   structs with `Display` (kernel) and `parse` (shell).
//! - [`event`]: the event record (probe hit) and its versioned, CRC-32
//!   checksummed binary encoding, sent as `kdbg-record:HEX` lines inside GDB
//!   `O` packets, or as readable `event ...` lines.
//!
//! Everything is `no_std`, allocation-free, and never panics on input: every
//! parser is exercised with garbage in its unit tests.
#![cfg_attr(not(test), no_std)]
// Kernel-side crate: its paths never panic (test code may).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod agent;
pub mod agg;
pub mod bytecode;
pub mod command;
pub mod event;
pub mod fetch;
pub mod hex;
pub mod reply;
pub mod thread;

pub use command::{Command, Loc, ParseError, ProbeAction, StreamMode, parse};
pub use event::{Event, EventKind, FetchResult, Record, RecordError};
pub use fetch::{Base, CaptureSpec, FetchError, FetchKind, FetchOp, FetchProgram, Reg};
pub use reply::{ErrorCode, ErrorRow, ProbeRow, Row};
