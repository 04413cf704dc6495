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
        Some(Crash::StackOverflow) => {
            let _ = sched::spawn("stack-smasher", smash_stack, 0);
        }
        Some(kind) => {
            let _ = sched::spawn("crasher", crasher, kind as u64);
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

/// `kdbg.crash`: executes `ud2`, which nobody claims: the kernel dies
/// into the stub.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash() {
    // SAFETY: ud2 raises #UD; the fatal path never returns here.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}

/// `kdbg.crash=panic`: an index out of bounds (a Rust panic).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash_panic(index: u64) -> u8 {
    let table = [1u8, 2, 3, 4];
    table[index as usize]
}

/// `kdbg.crash=gp`: loads a selector beyond the GDT into ds: #GP with the
/// selector as its error code.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash_gp() {
    // SAFETY: the load faults (#GP(0xfff8)); the fatal path never returns.
    unsafe { core::arch::asm!("mov ax, 0xfff8", "mov ds, ax", out("ax") _, options(nostack)) };
}

/// `kdbg.crash=pf`: reads a field of a "struct" at address 0x10 (page 0 is
/// not mapped): #PF with cr2 = 0x18.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash_pf(base: u64) -> u64 {
    // SAFETY: not safe at all: page 0 is unmapped and the read faults; the
    // fatal path never returns.
    unsafe { core::ptr::read_volatile((base + 8) as *const u64) }
}

/// `kdbg.crash=de`: divides by zero with `div` (#DE).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash_de(divisor: u64) -> u64 {
    let q: u64;
    // SAFETY: div by a zero register raises #DE; the fatal path never returns.
    unsafe {
        core::arch::asm!(
            "xor edx, edx",
            "div {d}",
            d = in(reg) divisor,
            inout("rax") 100u64 => q,
            out("rdx") _,
            options(nomem, nostack)
        )
    };
    q
}

/// `kdbg.crash=df`: narrows the IDT so the #PF gate is beyond its limit,
/// then faults: delivering the #PF raises #GP, and #PF + #GP is a double
/// fault (its gate, vector 8, is still inside the limit; it runs on its
/// own IST stack). The kernel's death path reloads the full IDT.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash_df(base: u64) -> u64 {
    let mut idtr = [0u8; 10];
    // SAFETY: sidt stores the 10-byte IDT register into `idtr`.
    unsafe { core::arch::asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack)) };
    if let Some(mut s) = crate::death::SAVED_IDTR.try_lock() {
        *s = Some(idtr);
    }
    let mut narrow = idtr;
    // Limit: vectors 0..=13 (16 bytes each) stay.
    narrow[0..2].copy_from_slice(&(14u16 * 16 - 1).to_le_bytes());
    // SAFETY: the same IDT with a shorter limit; the fault below ends the
    // kernel (death reloads `idtr`).
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) narrow.as_ptr(), options(readonly, nostack));
        core::ptr::read_volatile((base + 8) as *const u64)
    }
}

/// `kdbg.crash=overflow`: recursion without end: the task runs into the
/// guard page below its stack.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash_recurse(depth: u64) -> u64 {
    let pad = core::hint::black_box([depth; 32]);
    if depth > 1 << 40 {
        return 0;
    }
    kdbg_crash_recurse(depth + 1).wrapping_add(pad[(depth % 32) as usize])
}

/// `kdbg.crash=alloc`: the next allocation panics inside the allocator
/// (its lock held).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_crash_alloc() -> usize {
    crate::death::ALLOC_BOMB.store(true, Ordering::Relaxed);
    let v: alloc::vec::Vec<u8> = alloc::vec::Vec::with_capacity(64);
    core::hint::black_box(v).capacity()
}

/// The `crasher` task: waits for the workers to run, then dies as asked.
fn crasher(kind: u64) {
    sched::sleep_ticks(timer::HZ / 10);
    crate::println!("serve: kdbg.crash: crashing on purpose");
    let k = core::hint::black_box(kind);
    match k {
        k if k == Crash::InvalidOpcode as u64 => kdbg_crash(),
        k if k == Crash::Panic as u64 => {
            core::hint::black_box(kdbg_crash_panic(core::hint::black_box(7)));
        }
        k if k == Crash::GeneralProtection as u64 => kdbg_crash_gp(),
        k if k == Crash::PageFault as u64 => {
            core::hint::black_box(kdbg_crash_pf(core::hint::black_box(0x10)));
        }
        k if k == Crash::DivideError as u64 => {
            core::hint::black_box(kdbg_crash_de(core::hint::black_box(0)));
        }
        k if k == Crash::DoubleFault as u64 => {
            core::hint::black_box(kdbg_crash_df(core::hint::black_box(0x10)));
        }
        k if k == Crash::Recursion as u64 => {
            core::hint::black_box(kdbg_crash_recurse(0));
        }
        k if k == Crash::Alloc as u64 => {
            core::hint::black_box(kdbg_crash_alloc());
        }
        // `stub`: any death will do; the stub's path panics.
        _ => kdbg_crash(),
    }
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
