//! The probe core's view of this kernel ([`probes::Platform`]): CPU and task
//! ids, time, kallsyms, what is text and what must never be probed, and
//! fault-safe memory access. Installed once at boot by [`init`].
//!
//! The blacklist is `crate::blacklist` (the linker script's noprobe range).

use noprobe::noprobe;
use probes::{Platform, Symbol};

#[noprobe]
fn is_text(addr: u64) -> bool {
    crate::blacklist::is_text(addr)
}

#[noprobe]
fn is_blacklisted(addr: u64) -> bool {
    crate::blacklist::is_blacklisted(addr)
}

fn symbol(s: crate::kallsyms::Symbol<'static>) -> Symbol {
    Symbol {
        start: s.start,
        size: s.size,
        name: s.name,
    }
}

#[noprobe]
fn symbol_at(addr: u64) -> Option<Symbol> {
    crate::kallsyms::lookup(addr).map(symbol)
}

#[noprobe]
fn symbol_named(name: &str) -> Option<Symbol> {
    crate::kallsyms::find(name).map(symbol)
}

#[noprobe]
fn read(addr: u64, buf: &mut [u8]) -> bool {
    arch::mem::read(addr, buf).is_ok()
}

#[noprobe]
fn write(addr: u64, buf: &[u8]) -> bool {
    arch::mem::write(addr, buf).is_ok()
}

#[noprobe]
fn write_text(addr: u64, bytes: &[u8]) {
    // SAFETY: the probe core writes only int3 bytes / original bytes at
    // instruction boundaries of kernel text and whole slots no CPU runs.
    unsafe { arch::text::write(addr, bytes) }
}

#[noprobe]
fn call_with_args(entry: u64, regs: &[u64; 6], stack: &[u64]) -> u64 {
    // SAFETY: jprobe handlers are registered as `extern "C"` functions with
    // the probed function's (integer) prototype.
    unsafe { arch::callout::call_with_args(entry, regs, stack) }
}

#[noprobe]
fn fatal(msg: &'static str) -> ! {
    arch::cpu::disable_interrupts();
    crate::println!("\nKERNEL FATAL (probe core): {msg}");
    crate::exit::qemu_exit(crate::exit::ExitCode::Fatal)
}

/// The kernel's probe platform.
pub fn platform() -> Platform {
    Platform {
        cpu_id: crate::sched::cpu_id,
        cpu_count: crate::sched::cpu_count,
        task_id: crate::sched::current_id,
        timestamp: arch::cpu::rdtsc,
        symbol_at,
        symbol_named,
        is_text,
        is_blacklisted,
        read,
        write,
        direct_stack: true,
        write_text,
        slot_area: arch::slots::area,
        trampoline: arch::trampoline::address,
        step_pad: arch::trampoline::step_pad,
        call_with_args,
        fatal,
    }
}

/// Installs the platform into the probe core.
pub fn init() {
    probes::init(platform());
}

/// Declares `pub static SUITE` of a probe-core selftest module whose cases
/// are `fn() -> Result<(), &'static str>`; each case makes sure the probe
/// core is initialised first.
#[macro_export]
macro_rules! probe_suite {
    ($suite:literal, $($case:ident),* $(,)?) => {
        pub static SUITE: $crate::selftest::Suite = $crate::selftest::Suite {
            name: $suite,
            cases: &[$($crate::selftest::Case {
                name: stringify!($case),
                run: || {
                    $crate::probe_platform::init();
                    $case().map_err(alloc::string::String::from)
                },
            }),*],
        };
    };
}
