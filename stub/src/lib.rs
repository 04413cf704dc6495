//! The in-kernel GDB stub: gdbstub `Target` over the trap frame, monitor commands.
#![cfg_attr(not(test), no_std)]
pub mod hooks;
