//! The kdbg host shell as a library: the binary `kdbg` is a thin `main`
//! over [`cli::main`].

pub mod addr2line;
pub mod capture;
pub mod cli;
pub mod cmd;
pub mod coredump;
pub mod disas;
pub mod events;
pub mod exec;
pub mod guestmem;
pub mod image;
pub mod output;
pub mod qemu;
pub mod record;
pub mod regs;
pub mod render;
pub mod repl;
pub mod ringconsumer;
pub mod rsp;
pub mod session;
