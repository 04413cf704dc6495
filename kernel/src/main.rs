//! The kdbg reference kernel: boots in QEMU, runs workload tasks, hosts the
//! kdbg stub and the probe core, runs the in-kernel selftests.
//!
//! Boot order (see [`kernel_main`]): console, trap tables, heap, banner,
//! command line, scheduler and timer, debugger, then the mode (`serve`,
//! `selftest`, `bench`; see [`cmdline`]).
#![no_std]
#![no_main]
// Kernel: its paths never panic.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

extern crate alloc;

mod bench;
mod blacklist;
mod boot;
mod cmdline;
mod console;
mod death;
mod dispatch;
mod exit;
mod guard;
mod heap;
mod host;
mod intrinsics;
mod kallsyms;
mod sched;
mod selftest;
mod serve;
mod smp;
mod sync;
mod timer;
mod workloads;

use core::panic::PanicInfo;

use cmdline::{Cmdline, Mode};
use exit::{ExitCode, qemu_exit};
use noprobe::noprobe;

/// The kernel version shown in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The command line, copied out of loader memory for the kernel's lifetime.
static BOOT_INFO: spin::Once<boot::BootInfo> = spin::Once::new();

/// Entered from the boot asm on the boot stack with the loader's eax and ebx.
extern "C" fn kernel_main(eax: u32, ebx: u32) -> ! {
    console::init();
    dispatch::init();
    // SAFETY: eax/ebx come straight from the loader; its memory is intact.
    let info = BOOT_INFO.call_once(|| unsafe { boot::BootInfo::from_loader(eax, ebx) });
    // SAFETY: nothing has allocated yet; the RAM after the image is free.
    if let Err(heap::HeapError::TooLittleRam(_, need)) = unsafe { heap::init(info.ram_end) } {
        println!(
            "kdbg: not enough RAM: the kernel needs {} MiB (QEMU: -m 128M)",
            need.div_ceil(1 << 20)
        );
        qemu_exit(ExitCode::Failure);
    }
    println!(
        "kdbg reference kernel {VERSION} (boot: {}, cmdline: \"{}\")",
        info.loader.name(),
        info.cmdline()
    );

    let cmd = match Cmdline::parse(info.cmdline()) {
        Ok(c) => c,
        Err(e) => {
            match e {
                cmdline::CmdlineError::Unknown(w) => {
                    println!("kdbg: unknown command-line word `{w}`")
                }
                cmdline::CmdlineError::TwoModes(w) => {
                    println!("kdbg: `{w}` is a second mode; give one mode")
                }
                cmdline::CmdlineError::EmptySuiteList => {
                    println!("kdbg: `selftest=` needs suite names")
                }
                cmdline::CmdlineError::BadCrash(w) => {
                    println!("kdbg: unknown crash kind in `{w}`")
                }
                cmdline::CmdlineError::BadOnDeath(w) => {
                    println!("kdbg: `{w}`: the policy is one of wait, exit, reboot")
                }
                cmdline::CmdlineError::BadIdle(w) => {
                    println!("kdbg: `{w}` needs a number of seconds (kdbg.idle=30)")
                }
            }
            println!("kdbg: {}", cmdline::ACCEPTED);
            qemu_exit(ExitCode::Failure)
        }
    };
    workloads::truth::set_enabled(cmd.truth);
    stub::death::set_policy(cmd.on_death());
    if let Some(end) = info.ram_end {
        death::KDBG_RAM_END.store(end, core::sync::atomic::Ordering::Relaxed);
    }
    death::set_crash(cmd.crash);

    sched::init();
    timer::start();
    sched::start();
    arch::cpu::enable_interrupts();
    let cpus = smp::init();
    if cpus > 1 {
        println!("smp: {cpus} CPUs online");
    }

    // The probe core and the debugger start here.
    host::init();
    stub::machine::set_idle_timeout_secs(cmd.idle_secs);
    dispatch::enable_serial_irqs();
    if cmd.wait {
        println!("kdbg: waiting for a debugger on COM2 (kdbg.wait)");
        stub::wait_for_debugger();
    }

    match cmd.mode {
        Mode::Serve => serve::run(cmd),
        Mode::Selftest(filter) => selftest::run(filter),
        Mode::Bench => bench::run(),
    }
}

/// A Rust panic: the kernel dies into the stub (see [`death::panic`]).
#[panic_handler]
#[noprobe]
fn panic(info: &PanicInfo) -> ! {
    death::panic(info)
}
