//! `serve` mode: the workload tasks run forever, the stub waits for a
//! debugger on COM2, and task 0 prints one activity line per second.

use core::sync::atomic::Ordering;

use crate::cmdline::{Cmdline, Crash};
use crate::workloads::{self, STATS};
use crate::{println, sched, timer};

pub fn run(cmd: Cmdline) -> ! {
    let n = workloads::start_workers();
    println!(
        "serve: {n} workload tasks started (spawn_task, sys_open, sum8, fib, handle_request, insn_*); debugger on COM2{}",
        if cmd.truth {
            "; ground truth on debugcon"
        } else {
            ""
        }
    );
    match cmd.crash {
        Some(Crash::InvalidOpcode) => {
            sched::sleep_ticks(timer::HZ / 10);
            crash();
        }
        Some(Crash::StackOverflow) => {
            let _ = sched::spawn("stack-smasher", smash_stack, 0);
        }
        None => {}
    }
    loop {
        sched::sleep_ticks(timer::HZ);
        sched::reap();
        if !cmd.quiet {
            let (s, ms) = timer::uptime_secs_f();
            println!(
                "[{s:5}.{:02}] activity: spawn_task={} sys_open={} (failed {}) sum8={} fib={} handle_request={} insn={} switches={}",
                ms / 10,
                STATS.spawn_task.load(Ordering::Relaxed),
                STATS.sys_open.load(Ordering::Relaxed),
                STATS.sys_open_failed.load(Ordering::Relaxed),
                STATS.sum8.load(Ordering::Relaxed),
                STATS.fib.load(Ordering::Relaxed),
                STATS.handle_request.load(Ordering::Relaxed),
                STATS.insn.load(Ordering::Relaxed),
                sched::switches(),
            );
        }
    }
}

/// `kdbg.crash`: executes `ud2`, which nobody claims: the kernel's fatal
/// path runs (the stub sees it first, then the register dump and exit 37).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash() {
    // SAFETY: ud2 raises #UD; the fatal path never returns here.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}

fn crash() {
    crate::println!("serve: kdbg.crash: crashing on purpose");
    kdbg_crash();
}

/// `kdbg.crash=stack`: overwrites this task's stack canary (what a stack
/// overflow does first) and keeps running until the scheduler notices.
fn smash_stack(_: u64) {
    crate::println!("serve: kdbg.crash=stack: overwriting the stack canary");
    if let Some(bottom) = sched::current_stack_bottom() {
        // SAFETY: the lowest word of this task's own, live stack allocation.
        unsafe { core::ptr::write_volatile(bottom as *mut u64, 0) };
    }
    loop {
        core::hint::spin_loop();
    }
}
