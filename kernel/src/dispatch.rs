//! The trap dispatcher: every vector's entry stub (arch::trap) lands here
//! with the interrupted context's [`TrapFrame`].
//!
//! - #BP: the probe core, then the kernel's own int3 sites (selftests), then
//!   the GDB stub; an int3 nobody claims is fatal, never silently resumed.
//! - #DB: the probe core, then the kernel's own sites, then the stub, else
//!   fatal.
//! - other exceptions: the probe core's fault hook first (faults in
//!   out-of-line slots and handlers), then the kernel's fixups (selftests),
//!   else the kernel dies into the stub ([`crate::death`]): a register dump
//!   with `function+offset`, then the `kdbg.ondeath=` policy.
//! - IRQ 0: timer tick, then the scheduler. IRQ 3 (COM2): the stub.
//! - `int 0x81`: voluntary task switch.
//!
//! Nothing here can be probed.

use core::sync::atomic::{AtomicU64, Ordering};

use arch::TrapFrame;
use arch::trap::{self as entry, IRQ_BASE, MAX_DEPTH, YIELD_VECTOR};

use crate::kallsyms::Located;
use crate::println;
use noprobe::noprobe;

/// IRQ line of COM2 (the stub's UART).
const COM2_IRQ: u8 = arch::uart::COM2_IRQ;
/// IRQ line of COM1 (console input is read and dropped).
const COM1_IRQ: u8 = arch::uart::COM1_IRQ;

/// A trap the kernel itself expects (selftests): `handler` runs when the
/// trap with `vector` happens at `rip` (for #BP: the address of the int3).
/// Returns `true` when it handled the trap.
#[derive(Clone, Copy)]
pub struct Expected {
    pub vector: u64,
    pub rip: u64,
    pub handler: fn(&mut TrapFrame, usize) -> bool,
}

const MAX_EXPECTED: usize = 8;

static EXPECTED: crate::sync::IrqMutex<[Option<Expected>; MAX_EXPECTED]> =
    crate::sync::IrqMutex::new([None; MAX_EXPECTED]);

/// Traps dispatched per class (for selftests and `tasks`-like statistics).
pub static INT3_COUNT: AtomicU64 = AtomicU64::new(0);

/// Registers an expected trap site. Returns `false` when the table is full.
pub fn expect(e: Expected) -> bool {
    let mut t = EXPECTED.lock();
    for slot in t.iter_mut() {
        if slot.is_none() {
            *slot = Some(e);
            return true;
        }
    }
    false
}

/// Removes the expected trap site at (`vector`, `rip`).
pub fn unexpect(vector: u64, rip: u64) {
    let mut t = EXPECTED.lock();
    for slot in t.iter_mut() {
        if matches!(slot, Some(e) if e.vector == vector && e.rip == rip) {
            *slot = None;
        }
    }
}

#[noprobe]
fn expected(frame: &mut TrapFrame, depth: usize) -> bool {
    let rip = if frame.vector == entry::BREAKPOINT {
        frame.rip.wrapping_sub(1)
    } else {
        frame.rip
    };
    let found = EXPECTED.try_lock().and_then(|t| {
        t.iter()
            .flatten()
            .find(|e| e.vector == frame.vector && e.rip == rip)
            .copied()
    });
    match found {
        Some(e) => (e.handler)(frame, depth),
        None => false,
    }
}

/// Installs the dispatcher, the GDT/TSS/IDT and the PICs (all lines masked).
pub fn init() {
    entry::set_handler(dispatch);
    // SAFETY: early boot, interrupts off, handler installed just above.
    unsafe {
        entry::init();
        arch::pic::init();
    }
}

/// Routes the UART interrupts: COM2 to the stub, COM1 input drained.
pub fn enable_serial_irqs() {
    arch::pic::unmask(COM2_IRQ);
}

#[noprobe]
fn dispatch(frame: &mut TrapFrame, depth: usize) {
    if depth >= MAX_DEPTH {
        fatal(
            frame,
            "trap nesting too deep (a trap inside a trap handler, repeatedly)",
        );
    }
    // The probe hit path first, in a function of its own: the rest of the
    // dispatcher's register pressure stays out of every probe hit.
    if frame.vector == entry::BREAKPOINT {
        breakpoint(frame, depth);
    } else {
        dispatch_other(frame, depth);
    }
}

#[noprobe]
#[inline(never)]
fn breakpoint(frame: &mut TrapFrame, depth: usize) {
    if let Some(d) = crate::death::take_panic() {
        crate::death::die(frame, d);
    }
    INT3_COUNT.fetch_add(1, Ordering::Relaxed);
    // The kernel's own expected sites before the stub: with gdb
    // attached the stub would claim any int3 as a SIGTRAP stop.
    // First of all, the temporary int3 of a live multi-byte patch
    // (arch::text::poke_bp) in progress on another CPU.
    if arch::text::on_breakpoint(frame)
        || probes::hooks::breakpoint(frame)
        || expected(frame, depth)
        || stub::hooks::breakpoint(frame)
    {
        return;
    }
    fatal(frame, "int3 that no probe, debugger or kernel site owns");
}

#[noprobe]
#[inline(never)]
fn dispatch_other(frame: &mut TrapFrame, depth: usize) {
    let vector = frame.vector;
    match vector {
        entry::DEBUG => {
            if probes::hooks::debug(frame) || expected(frame, depth) || stub::hooks::debug(frame) {
                return;
            }
            fatal(frame, "debug exception nobody owns");
        }
        entry::NMI => {
            // Text-patching syncs and the debugger's stop-the-world; with
            // one CPU nobody sends NMIs, so one is still fatal there.
            if stub::hooks::nmi(frame) || arch::percpu::online_count() > 1 {
                return;
            }
            fatal(frame, "NMI");
        }
        v if v < 32 => {
            if probes::hooks::fault(frame) || expected(frame, depth) {
                return;
            }
            if v == entry::PAGE_FAULT
                && let Some((id, name)) = crate::sched::guard_owner(arch::cpu::read_cr2())
            {
                let mut why = stub::death::FixedText::<96>::new();
                let _ = core::fmt::Write::write_fmt(
                    &mut why,
                    format_args!("kernel stack overflow: task {id} ({name}) hit its guard page"),
                );
                fatal_kind(frame, stub::death::Kind::StackOverflow, why.as_str());
            }
            fatal(frame, exception_name(v));
        }
        v if (IRQ_BASE..IRQ_BASE + 16).contains(&v) => irq(frame, (v - IRQ_BASE) as u8),
        YIELD_VECTOR => crate::sched::switch(frame),
        crate::smp::TIMER_VECTOR
        | crate::smp::RESCHED_VECTOR
        | crate::smp::CALL_VECTOR
        | crate::smp::ERROR_VECTOR => crate::smp::interrupt(frame, vector),
        crate::smp::SPURIOUS_VECTOR => {}
        _ => {
            if expected(frame, depth) {
                return;
            }
            fatal(frame, "unexpected interrupt vector");
        }
    }
}

#[noprobe]
fn irq(frame: &mut TrapFrame, line: u8) {
    if (line == 7 || line == 15) && arch::pic::is_spurious(line) {
        return;
    }
    match line {
        arch::pit::IRQ => {
            crate::timer::on_tick();
            arch::pic::end_of_interrupt(line);
            arch::debugreg::follow();
            stub::poll();
            if stub::hooks::rx_pending() {
                stub::hooks::serial_irq(frame);
            }
            crate::sched::switch(frame);
        }
        COM2_IRQ => {
            stub::hooks::serial_irq(frame);
            arch::pic::end_of_interrupt(line);
        }
        COM1_IRQ => {
            let com1 = arch::uart::Uart::new(arch::uart::COM1);
            while com1.try_read_byte().is_some() {}
            arch::pic::end_of_interrupt(line);
        }
        _ => arch::pic::end_of_interrupt(line),
    }
}

#[noprobe]
pub fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "#DE divide error",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating point",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating point",
        _ => "CPU exception",
    }
}

/// The kernel cannot continue: the death enters the stub (see
/// [`crate::death`]): console lines, a register dump, then the
/// `kdbg.ondeath=` policy (wait for a debugger, exit QEMU with status 37,
/// or reboot).
#[cold]
#[noprobe]
pub fn fatal(frame: &mut TrapFrame, why: &str) -> ! {
    let kind = if frame.vector == entry::DOUBLE_FAULT {
        stub::death::Kind::DoubleFault
    } else {
        stub::death::Kind::Trap
    };
    fatal_kind(frame, kind, why)
}

/// [`fatal`] with the kind of death named (a stack overflow).
#[cold]
#[noprobe]
pub fn fatal_kind(frame: &mut TrapFrame, kind: stub::death::Kind, why: &str) -> ! {
    use core::fmt::Write;
    let mut d = stub::death::Death::new(kind);
    let _ = d.msg.write_str(why);
    if kind == stub::death::Kind::StackOverflow && frame.vector < 32 {
        // The trap's own name as well (`#PF page fault` on a guard page).
        let _ = write!(d.msg, " ({})", exception_name(frame.vector));
    }
    match frame.vector {
        entry::PAGE_FAULT => {
            let _ = write!(
                d.msg,
                " at {:#x} (error code {:#x})",
                arch::cpu::read_cr2(),
                frame.error_code
            );
        }
        v if entry::has_error_code(v as usize) => {
            let _ = write!(d.msg, " (error code {:#x})", frame.error_code);
        }
        _ => {}
    }
    crate::death::die(frame, d)
}

/// Prints the registers of `frame`.
#[noprobe]
pub fn dump(f: &TrapFrame) {
    println!(
        "  rip {:#018x} rsp {:#018x} rflags {:#010x} cs {:#x} ss {:#x}",
        f.rip, f.rsp, f.rflags, f.cs, f.ss
    );
    println!(
        "  rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}",
        f.rax, f.rbx, f.rcx, f.rdx
    );
    println!(
        "  rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}",
        f.rsi, f.rdi, f.rbp, f.r8
    );
    println!(
        "  r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}",
        f.r9, f.r10, f.r11, f.r12
    );
    println!(
        "  r13 {:#018x} r14 {:#018x} r15 {:#018x}",
        f.r13, f.r14, f.r15
    );
    // No frame pointers: show the words near the top of the stack that point
    // into kernel text (return addresses, most likely), innermost first.
    println!("  stack words pointing into kernel text (likely return addresses):");
    let mut shown = 0;
    for i in 0..256u64 {
        let at = f.rsp.wrapping_add(8 * i);
        let Ok(word) = arch::mem::read_u64(at) else {
            break;
        };
        if crate::blacklist::is_text(word) {
            println!("    [rsp+{:#05x}] {:#018x} {}", 8 * i, word, Located(word));
            shown += 1;
            if shown == 12 {
                break;
            }
        }
    }
}
