//! Selftest suite `stub`: what the GDB stub relies on, on the live kernel —
//! fault-safe memory access over the real page tables, the debug registers
//! (an execute breakpoint and a write watchpoint really trap), the monitor
//! command rows, and the event stream's record encoding of a real probe hit.

use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use arch::TrapFrame;
use arch::debugreg::{Condition, Slot, Slots};
use arch::mem::MemError;

use super::{Case, Suite, TestResult};

/// The suite, in order.
pub static SUITE: Suite = Suite {
    name: "stub",
    cases: &[
        Case {
            name: "mem_read_mapped_unmapped_noncanonical",
            run: mem_read,
        },
        Case {
            name: "mem_write_refuses_read_only",
            run: mem_write_read_only,
        },
        Case {
            name: "hw_execute_breakpoint_traps",
            run: hw_execute_breakpoint,
        },
        Case {
            name: "hw_write_watchpoint_traps",
            run: hw_write_watchpoint,
        },
        Case {
            name: "monitor_rows_parse",
            run: monitor_rows,
        },
        Case {
            name: "monitor_refusals_are_error_rows",
            run: monitor_refusals,
        },
        Case {
            name: "kprobe_event_record_round_trips",
            run: kprobe_event_record,
        },
    ],
};

global_asm!(
    ".pushsection .text.kdbg_selftest_stub, \"ax\", @progbits",
    // returns rdi + 1
    ".globl st_stub_inc",
    ".type st_stub_inc, @function",
    "st_stub_inc:",
    "lea rax, [rdi + 1]",
    "ret",
    ".size st_stub_inc, . - st_stub_inc",
    // *rdi = rsi (a 3-byte store, then ret at +3)
    ".globl st_stub_store",
    ".type st_stub_store, @function",
    "st_stub_store:",
    "mov [rdi], rsi",
    "ret",
    ".size st_stub_store, . - st_stub_store",
    ".popsection",
);

unsafe extern "C" {
    fn st_stub_inc(x: u64) -> u64;
    fn st_stub_store(p: *mut u64, v: u64);
}

fn check(ok: bool, msg: &'static str) -> TestResult {
    if ok { Ok(()) } else { Err(msg.into()) }
}

static DATA: AtomicU64 = AtomicU64::new(0x1122_3344_5566_7788);

fn mem_read() -> TestResult {
    let mut b = [0u8; 8];
    arch::mem::read(DATA.as_ptr() as u64, &mut b).map_err(|_| "a static could not be read")?;
    check(
        u64::from_le_bytes(b) == 0x1122_3344_5566_7788,
        "read returned other bytes",
    )?;
    check(
        arch::mem::read(0, &mut b) == Err(MemError::Unmapped),
        "page 0 must be unmapped and refused",
    )?;
    check(
        arch::mem::read(0x0000_7f00_0000_0000, &mut b) == Err(MemError::Unmapped),
        "a high user address must be refused",
    )?;
    check(
        arch::mem::read(0xdead_beef_0000_0000, &mut b) == Err(MemError::NonCanonical),
        "a non-canonical address must be refused",
    )?;
    let mut w = [0x99u8; 8];
    arch::mem::write(DATA.as_ptr() as u64, &w).map_err(|_| "a static could not be written")?;
    check(
        DATA.load(Ordering::SeqCst) == 0x9999_9999_9999_9999,
        "write did not land",
    )?;
    w = 0x1122_3344_5566_7788u64.to_le_bytes();
    arch::mem::write(DATA.as_ptr() as u64, &w).map_err(|_| "restore failed")?;
    Ok(())
}

fn mem_write_read_only() -> TestResult {
    let f = st_stub_inc as *const () as u64;
    let t = arch::mem::translate(f).map_err(|_| "kernel text is not mapped?")?;
    if t.writable {
        // Text mapped writable: nothing to refuse (the stub then writes
        // text directly); still prove the read side works.
        let mut b = [0u8; 1];
        arch::mem::read(f, &mut b).map_err(|_| "text unreadable")?;
        return Ok(());
    }
    check(
        arch::mem::write(f, &[0xCC]) == Err(MemError::ReadOnly),
        "a write to read-only text must be refused, not fault",
    )?;
    // SAFETY: calling a selftest asm function with the C ABI.
    check(unsafe { st_stub_inc(1) } == 2, "text changed")
}

static DB_HITS: AtomicU64 = AtomicU64::new(0);

fn on_db(frame: &mut TrapFrame, _depth: usize) -> bool {
    DB_HITS.fetch_add(1, Ordering::SeqCst);
    arch::debugreg::clear_dr6();
    // Resume the faulting instruction without re-hitting an execute slot.
    frame.rflags |= arch::frame::rflags::RF;
    true
}

fn with_slot(slot: Slot, expect_rip: u64, run: impl FnOnce()) -> Result<u64, &'static str> {
    DB_HITS.store(0, Ordering::SeqCst);
    let registered = crate::dispatch::expect(crate::dispatch::Expected {
        vector: arch::trap::DEBUG,
        rip: expect_rip,
        handler: on_db,
    });
    if !registered {
        return Err("expected-trap table full");
    }
    let mut slots = Slots::new();
    slots.add(slot).map_err(|_| "slot refused")?;
    // SAFETY: the slot covers a selftest function / static only; the #DB
    // lands in the expected-trap handler registered above.
    unsafe { slots.load() };
    run();
    // SAFETY: clearing every slot.
    unsafe { Slots::new().load() };
    crate::dispatch::unexpect(arch::trap::DEBUG, expect_rip);
    Ok(DB_HITS.load(Ordering::SeqCst))
}

fn hw_execute_breakpoint() -> TestResult {
    let f = st_stub_inc as *const () as u64;
    let mut r = 0;
    let hits = with_slot(
        Slot {
            addr: f,
            cond: Condition::Execute,
            len: 1,
        },
        f,
        || {
            // SAFETY: calling a selftest asm function with the C ABI.
            r = unsafe { st_stub_inc(41) };
        },
    )?;
    check(hits == 1, "execute breakpoint did not trap exactly once")?;
    check(r == 42, "function result changed by the breakpoint")
}

fn hw_write_watchpoint() -> TestResult {
    let target = DATA.as_ptr();
    let after_store = st_stub_store as *const () as u64 + 3;
    let hits = with_slot(
        Slot {
            addr: target as u64,
            cond: Condition::Write,
            len: 8,
        },
        after_store,
        // SAFETY: `target` is a valid, aligned u64 (an atomic's storage).
        || unsafe { st_stub_store(target, 7) },
    )?;
    check(
        hits == 1,
        "write watchpoint did not trap exactly once after the store",
    )?;
    check(
        DATA.swap(0x1122_3344_5566_7788, Ordering::SeqCst) == 7,
        "store lost",
    )
}

/// Collects monitor output.
struct Text {
    buf: [u8; 4096],
    len: usize,
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let dst = self
            .buf
            .get_mut(self.len..self.len + s.len())
            .ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl Text {
    fn run(cmd: &str) -> Result<Text, &'static str> {
        let mut t = Text {
            buf: [0; 4096],
            len: 0,
        };
        stub::monitor(cmd, &mut t).map_err(|_| "monitor output overflowed")?;
        Ok(t)
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(self.buf.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

fn monitor_rows() -> TestResult {
    let t = Text::run("tasks")?;
    let me = crate::sched::current_id();
    let mut found_me = false;
    for line in t.as_str().lines() {
        let row =
            proto::reply::TaskRow::parse(line).map_err(|_| "a tasks line is not a task row")?;
        if row.id == me {
            found_me = row.current;
        }
    }
    check(found_me, "tasks does not mark this task current")?;
    let t = Text::run("help")?;
    check(t.as_str().contains("kprobe LOC"), "help lacks kprobe")?;
    let t = Text::run("lookup st_stub_inc+1")?;
    let row = proto::reply::Row::parse(t.as_str()).ok_or("lookup gave no row")?;
    check(row.kind == "sym", "lookup row kind")?;
    check(
        row.num("addr") == Some(st_stub_inc as *const () as u64 + 1),
        "lookup address wrong",
    )?;
    check(
        row.get("name") == Some("st_stub_inc+0x1"),
        "lookup name wrong",
    )?;
    let t = Text::run("events")?;
    proto::reply::EventsRow::parse(t.as_str().lines().next().unwrap_or(""))
        .map_err(|_| "events row")?;
    Ok(())
}

fn monitor_refusals() -> TestResult {
    for (cmd, code) in [
        ("frobnicate", "unknown-command"),
        ("kprobe", "bad-arguments"),
        ("kprobe no_such_function_xyz", "unknown-symbol"),
        ("jprobe st_stub_inc fetch=u64@arg9", "bad-capture"),
        ("probe delete 999999", "no-such-probe"),
    ] {
        let t = Text::run(cmd)?;
        let e =
            proto::reply::ErrorRow::parse(t.as_str().trim_end()).map_err(|_| "not an error row")?;
        check(e.code.as_str() == code, "wrong error code")?;
        check(!e.msg.is_empty(), "error without a message")?;
    }
    Ok(())
}

fn kprobe_event_record() -> TestResult {
    let t = Text::run("kprobe st_stub_inc")?;
    let row = proto::reply::Row::parse(t.as_str()).ok_or("kprobe gave no row")?;
    check(row.kind == "ok", "kprobe st_stub_inc refused")?;
    let id = row.num("id").ok_or("no id")? as u32;
    // SAFETY: calling a selftest asm function with the C ABI.
    let r = unsafe { st_stub_inc(0x41) };
    let mut seen = 0;
    let mut good = true;
    stub::events::drain(
        proto::command::StreamMode::Record,
        usize::MAX,
        &mut |line| {
            let mut buf = alloc::string::String::new();
            let _ = line.write_to(&mut buf);
            let text = buf.as_str();
            match proto::Record::decode_line(text) {
                Ok(proto::Record::Event(e)) if e.probe_id == id => {
                    seen += 1;
                    good &= e.kind == proto::EventKind::Kprobe
                        && e.ip == st_stub_inc as *const () as u64
                        && e.args[0] == 0x41;
                }
                Ok(_) => {}
                Err(_) => good = false,
            }
        },
    );
    let mut cmd = Text {
        buf: [0; 4096],
        len: 0,
    };
    write!(cmd, "probe delete {id}").map_err(|_| "format")?;
    let del = Text::run(cmd.as_str())?;
    check(del.as_str().starts_with("ok"), "probe delete failed")?;
    check(r == 0x42, "probed function result changed")?;
    check(seen == 1, "expected exactly one event record for the hit")?;
    check(good, "event record fields wrong or record undecodable")
}
