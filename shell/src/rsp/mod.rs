//! kdbg's own GDB Remote Serial Protocol client (gdbstub is server-side
//! only): framing in [`packet`], byte streams in [`transport`], the
//! connection with acks, no-ack mode, timeouts and asynchronous packets in
//! [`client`], and typed requests (registers, memory, breakpoints) in
//! [`target`].

pub mod client;
pub mod packet;
pub mod serial;
pub mod target;
pub mod tdesc;
pub mod transport;

pub use client::{Async, Client, Features, Interrupter, RspError};
pub use target::{BreakKind, StopReply};
pub use transport::Endpoint;
