//! x86_64 knowledge for kdbg, behind one boundary: nothing outside this crate
//! names an x86 instruction, a descriptor table or an I/O port.
//!
//! Host-testable parts (instruction analysis, relocation, emulation) are plain
//! Rust over byte slices and [`TrapFrame`]s; the parts that touch the machine
//! are `unsafe` and fenced.
#![cfg_attr(not(test), no_std)]
// Kernel-side crate: its paths never panic (test code may).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

extern crate alloc;

#[macro_use]
mod frame_asm;

pub mod boot;
pub mod cpu;
pub mod frame;
pub mod gdt;
pub mod idt;
pub mod insn;
pub mod intrinsics;
pub mod pic;
pub mod pit;
pub mod port;
pub mod trap;
pub mod uart;

pub use frame::TrapFrame;
pub mod acpi;
pub mod apic;
pub mod callout;
pub mod debugreg;
pub mod detour;
pub mod mem;
pub mod percpu;
pub mod slots;
pub mod smpboot;
pub mod text;
pub mod trampoline;
