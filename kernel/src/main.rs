//! The kdbg reference kernel: boots in QEMU, runs workload tasks, hosts the
//! kdbg stub and the probe core, runs the in-kernel selftests.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod console;
mod exit;
mod heap;
mod intrinsics;
mod kallsyms;
mod sync;

use core::panic::PanicInfo;

/// The kernel version shown in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entered from the boot asm on the boot stack with the loader's eax and ebx.
extern "C" fn kernel_main(eax: u32, ebx: u32) -> ! {
    console::init();
    // SAFETY: eax/ebx come straight from the loader; its memory is intact.
    let info = unsafe { boot::BootInfo::from_loader(eax, ebx) };
    // SAFETY: first thing after the console; nothing has allocated yet.
    unsafe { heap::init() };
    println!(
        "kdbg reference kernel {VERSION} (boot: {}, cmdline: \"{}\")",
        info.loader.name(),
        info.cmdline()
    );
    let sym = kallsyms::lookup(kernel_main as *const () as u64);
    println!(
        "kallsyms: {} functions; kernel_main = {:?}",
        kallsyms::table().map_or(0, |t| t.len()),
        sym
    );
    exit::qemu_exit(exit::ExitCode::Success)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    arch::cpu::disable_interrupts();
    println!("\nKERNEL PANIC: {info}");
    exit::qemu_exit(exit::ExitCode::Fatal)
}
