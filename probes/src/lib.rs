//! The probe core: kprobes, jprobes and kretprobes, arch-neutral.
#![cfg_attr(not(test), no_std)]

extern crate alloc;
pub mod hooks;
