//! The GDB stub's view of this kernel ([`stub::KernelOps`]): tasks and their
//! saved registers, kallsyms, text writes, and what gdb's `kill` does.
//! Installed once at boot by [`init`] (owned by the stub's engineer, like
//! `probe_platform.rs` is the probe core's).

use arch::TrapFrame;
use noprobe::noprobe;
use stub::{KernelOps, TaskInfo};

#[noprobe]
fn current_task() -> u32 {
    crate::death::stub_crash_hook();
    crate::sched::current_id()
}

#[noprobe]
fn for_each_task(f: &mut dyn FnMut(TaskInfo<'_>)) {
    crate::sched::for_each_task(&mut |t| {
        f(TaskInfo {
            id: t.id,
            name: t.name,
            state: t.state.name(),
        })
    });
}

#[noprobe]
fn saved_frame(id: u32) -> Option<TrapFrame> {
    crate::sched::saved_frame(id)
}

#[noprobe]
fn set_saved_frame(id: u32, frame: &TrapFrame) -> bool {
    crate::sched::set_saved_frame(id, frame)
}

#[noprobe]
fn symbol_named(name: &str) -> Option<u64> {
    crate::kallsyms::find(name).map(|s| s.start)
}

#[noprobe]
fn symbol_at(addr: u64) -> Option<(&'static str, u64)> {
    crate::kallsyms::lookup(addr).map(|s| (s.name, s.start))
}

#[noprobe]
fn write_text(addr: u64, bytes: &[u8]) {
    // SAFETY: gdb writes whole bytes it asked for (int3 for breakpoints and
    // their originals back, or a user's `set *(char*)ADDR = ...`); the CPU
    // is stopped in the stub, so nothing executes the bytes meanwhile.
    unsafe { arch::text::write(addr, bytes) }
}

fn timer() -> (u64, u64) {
    (crate::timer::ticks(), crate::timer::HZ)
}

/// gdb's `kill`: QEMU exits with the "success" status after a console line
/// saying so (the kernel cannot be restarted in place).
fn kill() -> ! {
    // The stopped context may hold the console lock: bypass it.
    crate::console::emergency_write("kdbg: killed by the debugger\n");
    crate::exit::qemu_exit(crate::exit::ExitCode::Success)
}

/// Starts the stub on COM2 (the kernel's trap dispatcher and COM2 interrupt
/// must be set up; interrupts may still be off). Prints why when there is
/// no COM2.
pub fn init() {
    let ops = KernelOps {
        current_task,
        for_each_task,
        saved_frame,
        set_saved_frame,
        symbol_named,
        symbol_at,
        write_text,
        timer,
        kill,
    };
    if let Err(e) = stub::init(ops) {
        crate::println!("kdbg stub: not started ({e:?}): the machine has no COM2 (use -M pc)");
    }
}
