//! How the kernel dies: every death (an unclaimed CPU exception, a Rust
//! panic, a double fault, a stack overflow) enters the GDB stub with a trap
//! frame, like Linux's kgdb on an oops or `panic()`.
//!
//! - A trap: [`crate::dispatch::fatal`] calls [`die`] with the trap's frame.
//! - A panic: [`panic`] formats the message into a fixed buffer (no heap),
//!   then executes an `int3` that the #BP dispatcher hands to [`die`]: the
//!   frame is the panic handler's own registers, so a debugger's `bt` goes
//!   through `core::panicking` to the function that panicked.
//!
//! [`die`] records the death in the stub (the first one wins), prints the
//! console lines (`FATAL: ...`, the register dump, `kdbg: kernel died
//! (...); waiting for a debugger on COM2`), and stays in the stub as the
//! policy (`kdbg.ondeath=`) says. A death while handling a death (a panic
//! inside the stub, a fault while printing) prints a minimal register dump
//! without any lock and stops the machine.
//!
//! Nothing here allocates, and no lock is waited for.

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use noprobe::noprobe;

use arch::TrapFrame;
use stub::death::{Death, Kind, OnDeath, Outcome};

use crate::cmdline::Crash;
use crate::exit::{ExitCode, qemu_exit};
use crate::kallsyms::Located;
use crate::println;

/// The end of RAM (from the boot loader), for a debugger that dumps the
/// machine's memory into a core file (`dump core`): found by symbol.
#[unsafe(no_mangle)]
pub static KDBG_RAM_END: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// A panic waits for its `int3` to reach [`take_panic`].
static PANIC_PENDING: AtomicBool = AtomicBool::new(false);
/// The panic's record, filled before the `int3` (one panic only: a second
/// one is a recursion and never gets here).
static PANIC_DEATH: spin::Mutex<Option<Death>> = spin::Mutex::new(None);

/// The `kdbg.crash=` kind (for the crash hooks in the allocator and the
/// stub's kernel operations).
static CRASH: AtomicU8 = AtomicU8::new(0);
const CRASH_ALLOC: u8 = 1;
const CRASH_STUB: u8 = 2;
/// Armed by the crasher task: the next allocation panics.
pub static ALLOC_BOMB: AtomicBool = AtomicBool::new(false);

/// Remembers which crash hooks the command line armed.
pub fn set_crash(c: Option<Crash>) {
    let v = match c {
        Some(Crash::Alloc) => CRASH_ALLOC,
        Some(Crash::Stub) => CRASH_STUB,
        _ => 0,
    };
    CRASH.store(v, Ordering::Relaxed);
}

/// `kdbg.crash=stub`: called from the stub's kernel operations; panics
/// (index out of bounds) once the kernel is dying, i.e. inside the stub's
/// death path.
#[inline(always)]
pub fn stub_crash_hook() {
    if CRASH.load(Ordering::Relaxed) == CRASH_STUB {
        stub_crash();
    }
}

#[cold]
#[inline(never)]
#[noprobe]
fn stub_crash() {
    if stub::death::dead() {
        let table = [0u8; 4];
        let i = core::hint::black_box(table.len() + 1);
        core::hint::black_box(table[i]);
    }
}

/// `kdbg.crash=alloc`: called by the allocator with its lock held.
#[inline(never)]
#[noprobe]
pub fn alloc_crash_hook() {
    if ALLOC_BOMB.swap(false, Ordering::Relaxed) {
        let table = [0u8; 4];
        let i = core::hint::black_box(table.len() + 3);
        core::hint::black_box(table[i]);
    }
}

/// The kernel panicked.
#[cold]
#[noprobe]
pub fn panic(info: &PanicInfo) -> ! {
    arch::cpu::disable_interrupts();
    let mut d = Death::new(Kind::Panic);
    let _ = write!(d.msg, "{}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(d.location, "{}:{}:{}", l.file(), l.line(), l.column());
    }
    d.task = crate::sched::current_id();
    if stub::death::dead() {
        recursion_dump(None, &d);
    }
    if let Some(mut slot) = PANIC_DEATH.try_lock() {
        *slot = Some(d);
    }
    PANIC_PENDING.store(true, Ordering::Release);
    // SAFETY: int3 traps to the kernel's #BP dispatcher, which sees
    // PANIC_PENDING first and never returns here (the kernel dies there).
    unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
    // The dispatcher did not take it (cannot happen): die without a frame.
    recursion_dump(None, &d)
}

/// The #BP dispatcher's first question: is this the panic's `int3`?
#[noprobe]
#[inline]
pub fn take_panic() -> Option<Death> {
    // A plain load first: every int3 asks.
    if !PANIC_PENDING.load(Ordering::Relaxed) || !PANIC_PENDING.swap(false, Ordering::AcqRel) {
        return None;
    }
    PANIC_DEATH.try_lock().and_then(|d| *d)
}

/// The IDT register the `df` crash narrowed, put back when the kernel dies.
pub static SAVED_IDTR: spin::Mutex<Option<[u8; 10]>> = spin::Mutex::new(None);

/// The kernel cannot continue: record, print, stay in the stub.
#[cold]
#[noprobe]
pub fn die(frame: &mut TrapFrame, mut d: Death) -> ! {
    arch::cpu::disable_interrupts();
    if let Some(idtr) = SAVED_IDTR.try_lock().and_then(|s| *s) {
        // SAFETY: the IDT register the kernel loaded at boot, saved before
        // the `df` crash narrowed its limit.
        unsafe { core::arch::asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack)) };
    }
    d.vector = frame.vector;
    d.error_code = frame.error_code;
    d.rip = frame.rip;
    if d.kind != Kind::Panic {
        d.task = crate::sched::current_id();
    }
    if frame.vector == arch::trap::PAGE_FAULT {
        d.cr2 = arch::cpu::read_cr2();
    }
    if stub::death::record(&d).is_err() {
        recursion_dump(Some(frame), &d);
    }
    println!();
    match d.kind {
        Kind::Panic => println!(
            "KERNEL PANIC in task {} at {}: {}",
            d.task,
            d.location.as_str(),
            d.msg.as_str()
        ),
        _ => {
            println!(
                "FATAL: {} (vector {}) in task {} at {}",
                d.msg.as_str(),
                frame.vector,
                d.task,
                Located(frame.rip)
            );
            if frame.vector == arch::trap::PAGE_FAULT {
                println!("  faulting address (cr2) {:#018x}", d.cr2);
            }
        }
    }
    crate::dispatch::dump(frame);
    let policy = stub::death::policy();
    if stub::attached() {
        println!("kdbg: kernel died ({d}); stopped in the debugger");
    } else if policy == OnDeath::Wait {
        println!("kdbg: kernel died ({d}); waiting for a debugger on COM2");
    }
    let outcome = stub::death::serve(frame);
    match outcome {
        Outcome::Exit => qemu_exit(ExitCode::Fatal),
        Outcome::Reboot => reboot(),
        Outcome::StubBusy => {
            crate::console::emergency_write(
                "kdbg: the debugger stub was busy when the kernel died; it cannot be entered\n",
            );
            stop(policy)
        }
    }
}

/// A death while handling a death: print what is known without any lock
/// (the dying code may hold the console's), then stop as the policy says
/// (`wait` halts: the stub cannot be entered again).
#[cold]
#[noprobe]
fn recursion_dump(frame: Option<&TrapFrame>, d: &Death) -> ! {
    arch::cpu::disable_interrupts();
    let mut u = crate::console::Emergency;
    let _ = write!(
        u,
        "\nkdbg: died again while handling a death ({d}, task {}); fallback register dump:\n",
        d.task
    );
    if let Some(first) = stub::death::death() {
        let _ = writeln!(u, "  first death: {first} (task {})", first.task);
    }
    match frame {
        Some(f) => {
            let _ = writeln!(
                u,
                "  vector {} error code {:#x} rip {:#018x} rsp {:#018x} rbp {:#018x}",
                f.vector, f.error_code, f.rip, f.rsp, f.rbp
            );
            let _ = writeln!(
                u,
                "  rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x} rsi {:#018x} rdi {:#018x}",
                f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi
            );
        }
        None => {
            let (rip, rsp, rbp): (u64, u64, u64);
            // SAFETY: reads the instruction pointer and two registers; no
            // memory is touched.
            unsafe {
                core::arch::asm!(
                    "lea {rip}, [rip]",
                    "mov {rsp}, rsp",
                    "mov {rbp}, rbp",
                    rip = out(reg) rip,
                    rsp = out(reg) rsp,
                    rbp = out(reg) rbp,
                    options(nomem, nostack, preserves_flags)
                )
            };
            let _ = writeln!(
                u,
                "  rip {rip:#018x} rsp {rsp:#018x} rbp {rbp:#018x} (in the panic handler)"
            );
            // Return addresses near the stack top: symbols are safe to
            // look up (kallsyms is read-only data, no lock).
            let mut shown = 0;
            for i in 0..128u64 {
                let Ok(word) = arch::mem::read_u64(rsp.wrapping_add(8 * i)) else {
                    break;
                };
                if crate::blacklist::is_text(word) {
                    let _ = writeln!(u, "    [rsp+{:#05x}] {}", 8 * i, Located(word));
                    shown += 1;
                    if shown == 8 {
                        break;
                    }
                }
            }
        }
    }
    stop(stub::death::policy())
}

/// The end of a death the stub cannot serve.
#[noprobe]
fn stop(policy: OnDeath) -> ! {
    match policy {
        OnDeath::Reboot => reboot(),
        OnDeath::Exit => qemu_exit(ExitCode::Fatal),
        OnDeath::Wait => {
            crate::console::emergency_write("kdbg: machine halted\n");
            loop {
                arch::cpu::disable_interrupts();
                arch::cpu::halt();
            }
        }
    }
}

/// Resets the machine through the keyboard controller (QEMU with
/// `-no-reboot` exits instead).
#[noprobe]
fn reboot() -> ! {
    crate::console::emergency_write("kdbg: rebooting\n");
    // SAFETY: 0xfe on port 0x64 pulses the CPU reset line (8042).
    unsafe { arch::port::outb(0x64, 0xfe) };
    loop {
        arch::cpu::disable_interrupts();
        arch::cpu::halt();
    }
}
