//! The kdbg host shell as a library: the binary `kdbg` is a thin `main`
//! over [`cli::main`]. See DESIGN.md section 6.

pub mod rsp;
