//! The other CPUs: finding them (ACPI MADT), starting them (INIT-SIPI-SIPI
//! through the real-mode trampoline, `arch::smpboot`), their timers, and
//! the inter-processor interrupts the kernel uses.
//!
//! Bring-up (CPU 0, task context, after the scheduler and the PIT run):
//! the local APIC of CPU 0 is enabled and its timer calibrated against the
//! PIT; then, one AP at a time: a 64 KiB boot stack and the AP's IST stacks
//! are allocated, the trampoline is installed with them, INIT, 10 ms,
//! STARTUP (and a second STARTUP if the CPU is not up after another tick).
//! The AP loads the shared GDT (its own TSS: the task register names the
//! CPU), the IDT, enables its APIC, becomes its idle task in the
//! scheduler, marks itself online, starts its APIC timer at [`timer::HZ`]
//! and idles: from its first tick on it runs tasks.
//!
//! Vectors: [`TIMER_VECTOR`] (the APs' local timer), [`RESCHED_VECTOR`]
//! (run the scheduler now), [`CALL_VECTOR`] (run a function, the caller
//! may wait), NMI (text-patching syncs and the debugger's stop, see
//! `stub::allstop`).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use arch::TrapFrame;
use arch::percpu::{MAX_CPUS, cpu_id};
use noprobe::noprobe;

use crate::timer;

/// The APs' local APIC timer.
pub const TIMER_VECTOR: u64 = 0x40;
/// Reschedule IPI.
pub const RESCHED_VECTOR: u64 = 0x41;
/// Call-function IPI.
pub const CALL_VECTOR: u64 = 0x42;
/// The APIC's error interrupt.
pub const ERROR_VECTOR: u64 = arch::apic::ERROR_VECTOR as u64;
/// The APIC's spurious interrupt (no EOI).
pub const SPURIOUS_VECTOR: u64 = arch::apic::SPURIOUS_VECTOR as u64;

/// APIC timer counts per scheduler tick (calibrated on CPU 0).
static TIMER_COUNT: AtomicU32 = AtomicU32::new(0);
/// The AP being started has reached its idle loop.
static AP_UP: AtomicBool = AtomicBool::new(false);
/// Each AP's IST stacks (allocated by CPU 0 before the start).
static AP_IST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// CPUs the firmware lists (1 until [`init`] found more).
static PRESENT: AtomicUsize = AtomicUsize::new(1);

/// Reschedule IPIs sent and received; call-function IPIs run.
pub static RESCHED_SENT: AtomicU64 = AtomicU64::new(0);
pub static RESCHED_RECEIVED: AtomicU64 = AtomicU64::new(0);
pub static CALLS_RUN: AtomicU64 = AtomicU64::new(0);
/// APIC timer ticks per CPU.
pub static AP_TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

const AP_STACK_SIZE: usize = 64 * 1024;

/// CPUs the firmware lists.
pub fn present() -> usize {
    PRESENT.load(Ordering::Relaxed)
}

/// Finds the other CPUs and starts them. Returns how many CPUs are online.
pub fn init() -> usize {
    let Some(cpus) = arch::acpi::cpus() else {
        return 1;
    };
    PRESENT.store(cpus.count.max(1), Ordering::Relaxed);
    if cpus.count <= 1 {
        return 1;
    }
    arch::apic::enable();
    let bsp = arch::apic::id();
    arch::percpu::set_boot_apic_id(bsp);
    calibrate();
    let mut next_cpu = 1;
    for &apic_id in cpus.ids() {
        if apic_id == bsp || next_cpu >= MAX_CPUS {
            continue;
        }
        if start_ap(next_cpu, apic_id) {
            next_cpu += 1;
        } else {
            crate::println!("smp: the CPU with APIC id {apic_id} did not start");
        }
    }
    arch::percpu::online_count()
}

/// Waits until the PIT tick counter moves `n` times.
fn wait_ticks(n: u64) {
    let start = timer::ticks();
    while timer::ticks() < start + n {
        arch::cpu::enable_interrupts_and_halt();
    }
}

fn calibrate() {
    // Start on a tick edge, count 5 ticks.
    wait_ticks(1);
    arch::apic::timer_calibration_start();
    wait_ticks(5);
    let per_tick = arch::apic::timer_elapsed() / 5;
    TIMER_COUNT.store(per_tick.max(1000), Ordering::Relaxed);
}

fn start_ap(cpu: usize, apic_id: u32) -> bool {
    let Some(stack) = alloc_leaked(AP_STACK_SIZE) else {
        return false;
    };
    let Some(ist) = alloc_leaked(arch::trap::CPU_IST_BYTES) else {
        return false;
    };
    if let Some(a) = AP_IST.get(cpu) {
        a.store(ist, Ordering::Release);
    }
    AP_UP.store(false, Ordering::Release);
    let top = (stack + AP_STACK_SIZE as u64) & !0xF;
    // SAFETY: page 8 (0x8000) is identity-mapped RAM the kernel does not
    // use otherwise; the previous AP has left the trampoline (AP_UP).
    unsafe { arch::smpboot::install(top, ap_entry, cpu as u64) };
    arch::smpboot::send_init(apic_id);
    wait_ticks(1);
    arch::smpboot::send_startup(apic_id);
    for attempt in 0..2 {
        for _ in 0..100 {
            if AP_UP.load(Ordering::Acquire) {
                return true;
            }
            wait_ticks(1);
        }
        if attempt == 0 {
            arch::smpboot::send_startup(apic_id);
        }
    }
    AP_UP.load(Ordering::Acquire)
}

/// Zeroed, 4 KiB-aligned memory owned for ever.
fn alloc_leaked(size: usize) -> Option<u64> {
    let layout = core::alloc::Layout::from_size_align(size, 4096).ok()?;
    // SAFETY: a non-zero size layout; the memory is never freed.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    (!p.is_null()).then_some(p as u64)
}

/// First Rust code of an AP, on its boot stack, interrupts off.
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    let ist = AP_IST.get(cpu).map_or(0, |a| a.load(Ordering::Acquire));
    // SAFETY: this AP, once, interrupts off; CPU 0 set up the GDT and IDT;
    // `ist` was allocated for this CPU alone.
    unsafe { arch::trap::init_cpu(cpu, ist) };
    arch::apic::enable();
    crate::sched::register_idle(cpu);
    arch::percpu::set_online(cpu, arch::apic::id());
    arch::debugreg::follow();
    arch::apic::timer_periodic(TIMER_VECTOR as u8, TIMER_COUNT.load(Ordering::Relaxed));
    AP_UP.store(true, Ordering::Release);
    loop {
        arch::cpu::enable_interrupts_and_halt();
    }
}

/// The interrupt vectors of this module (from the dispatcher).
#[noprobe]
pub fn interrupt(frame: &mut TrapFrame, vector: u64) {
    match vector {
        TIMER_VECTOR => {
            if let Some(t) = AP_TICKS.get(cpu_id()) {
                t.fetch_add(1, Ordering::Relaxed);
            }
            arch::apic::eoi();
            arch::debugreg::follow();
            crate::sched::switch(frame);
        }
        RESCHED_VECTOR => {
            RESCHED_RECEIVED.fetch_add(1, Ordering::Relaxed);
            arch::apic::eoi();
            crate::sched::switch(frame);
        }
        CALL_VECTOR => {
            arch::apic::eoi();
            run_call();
        }
        ERROR_VECTOR => arch::apic::eoi(),
        _ => {}
    }
}

/// Sends a reschedule IPI to one CPU that runs its idle task (a task just
/// became ready). Nothing with one CPU.
pub fn kick_idle_cpu() {
    if arch::percpu::online_count() <= 1 {
        return;
    }
    let me = cpu_id();
    for c in arch::percpu::others() {
        let cur = crate::sched::current_on(c);
        if cur == crate::sched::IDLE_TASK || cur >= crate::sched::AP_IDLE_BASE {
            if c != me {
                reschedule(c);
            }
            return;
        }
    }
}

/// A reschedule IPI to `cpu`.
pub fn reschedule(cpu: usize) {
    if !arch::percpu::is_online(cpu) {
        return;
    }
    RESCHED_SENT.fetch_add(1, Ordering::Relaxed);
    arch::apic::send_fixed(arch::percpu::apic_id(cpu), RESCHED_VECTOR as u8);
}

/// One call-function request per target CPU.
struct Call {
    func: AtomicUsize,
    arg: AtomicU64,
    /// Bumped by the target when the function returned.
    done: AtomicU64,
    /// Bumped by the caller for each request.
    seq: AtomicU64,
}

static CALLS: [Call; MAX_CPUS] = [const {
    Call {
        func: AtomicUsize::new(0),
        arg: AtomicU64::new(0),
        done: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Serialises callers of [`call_on`] (one request per target at a time).
static CALL_LOCK: crate::sync::IrqMutex<()> = crate::sync::IrqMutex::new(());

#[noprobe]
fn run_call() {
    let Some(c) = CALLS.get(cpu_id()) else {
        return;
    };
    let seq = c.seq.load(Ordering::Acquire);
    if c.done.load(Ordering::Acquire) >= seq {
        return;
    }
    let f = c.func.load(Ordering::Acquire);
    let arg = c.arg.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: `func` was stored from a `fn(u64)` by `call_on`.
        let f: fn(u64) = unsafe { core::mem::transmute::<usize, fn(u64)>(f) };
        f(arg);
        CALLS_RUN.fetch_add(1, Ordering::Relaxed);
    }
    c.done.store(seq, Ordering::Release);
}

/// Runs `f(arg)` on CPU `cpu` from its call-function IPI (interrupts off
/// there) and, with `wait`, returns after it returned. Task context only
/// (the caller must not hold locks the function takes). `false` when the
/// CPU is offline, is this one, or did not answer within a second.
pub fn call_on(cpu: usize, f: fn(u64), arg: u64, wait: bool) -> bool {
    if cpu == cpu_id() || !arch::percpu::is_online(cpu) {
        return false;
    }
    let Some(c) = CALLS.get(cpu) else {
        return false;
    };
    let seq = {
        let _one = CALL_LOCK.lock();
        // The previous request to this CPU must be done before its slot is reused.
        let prev = c.seq.load(Ordering::Acquire);
        let start = arch::cpu::rdtsc();
        while c.done.load(Ordering::Acquire) < prev {
            if arch::cpu::rdtsc().wrapping_sub(start) > CALL_TIMEOUT_TSC {
                return false;
            }
            core::hint::spin_loop();
        }
        c.func.store(f as usize, Ordering::Release);
        c.arg.store(arg, Ordering::Release);
        let seq = prev + 1;
        c.seq.store(seq, Ordering::Release);
        arch::apic::send_fixed(arch::percpu::apic_id(cpu), CALL_VECTOR as u8);
        seq
    };
    if !wait {
        return true;
    }
    let start = arch::cpu::rdtsc();
    while c.done.load(Ordering::Acquire) < seq {
        if arch::cpu::rdtsc().wrapping_sub(start) > CALL_TIMEOUT_TSC {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// How long [`call_on`] waits for the target, in TSC ticks (a second or more).
const CALL_TIMEOUT_TSC: u64 = 4_000_000_000;
