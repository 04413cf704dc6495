//! The probe state machine over a simulated CPU: fake memory, fake symbols,
//! fake trap frames. Each test drives the hooks the way the CPU would
//! (int3 trap with `rip` past the int3, the slot's tail trap, a fault at the
//! slot) and checks frames, handler calls and counters.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use arch::TrapFrame;
use arch::frame::rflags::IF;

use super::*;

/// The fake function `work` at FUNC:
///   +0x00 55                    push rbp               out of line (boostable)
///   +0x01 48 89 e5              mov rbp, rsp           out of line
///   +0x04 48 8b 05 f5 0f 00 00  mov rax, [rip+0xff5]   RIP-relative load
///   +0x0b 74 02                 je +2                  emulated
///   +0x0d 31 c0                 xor eax, eax
///   +0x0f 5d                    pop rbp
///   +0x10 c3                    ret                    emulated
///   +0x11 cc                    int3                   refused
///   +0x12 0f 0b                 ud2                    refused
const FUNC: u64 = 0x10_0000;
const CODE: [u8; 0x14] = [
    0x55, 0x48, 0x89, 0xe5, 0x48, 0x8b, 0x05, 0xf5, 0x0f, 0x00, 0x00, 0x74, 0x02, 0x31, 0xc0, 0x5d,
    0xc3, 0xcc, 0x0f, 0x0b,
];
const BLACK: u64 = 0x11_0000;
const SLOTS: u64 = 0x20_0000;
const TRAMP: u64 = 0x30_0000;
const STACK: u64 = 0x7000_0000;
const PAD: u64 = 0x30_0100;

struct Fake {
    mem: BTreeMap<u64, u8>,
    cpu: usize,
    task: u32,
    tsc: u64,
    text_writes: usize,
}

thread_local! {
    static FAKE: RefCell<Fake> = const { RefCell::new(Fake { mem: BTreeMap::new(), cpu: 0, task: 1, tsc: 0, text_writes: 0 }) };
    static CORE_UNDER_TEST: RefCell<Option<&'static Core>> = const { RefCell::new(None) };
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn log(s: String) {
    LOG.with(|l| l.borrow_mut().push(s));
}
fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

fn poke(addr: u64, bytes: &[u8]) {
    FAKE.with(|f| {
        let mut f = f.borrow_mut();
        for (i, &b) in bytes.iter().enumerate() {
            f.mem.insert(addr + i as u64, b);
        }
    });
}
fn peek(addr: u64) -> u8 {
    FAKE.with(|f| f.borrow().mem.get(&addr).copied().unwrap_or(0xee))
}
fn peek_u64(addr: u64) -> u64 {
    let mut b = [0u8; 8];
    assert!(fake_read(addr, &mut b));
    u64::from_le_bytes(b)
}

fn fake_read(addr: u64, buf: &mut [u8]) -> bool {
    FAKE.with(|f| {
        let f = f.borrow();
        for (i, b) in buf.iter_mut().enumerate() {
            match f.mem.get(&(addr + i as u64)) {
                Some(v) => *b = *v,
                None => return false,
            }
        }
        true
    })
}
fn fake_write(addr: u64, buf: &[u8]) -> bool {
    FAKE.with(|f| {
        let mut f = f.borrow_mut();
        if (0..buf.len()).any(|i| !f.mem.contains_key(&(addr + i as u64))) {
            return false;
        }
        for (i, &b) in buf.iter().enumerate() {
            f.mem.insert(addr + i as u64, b);
        }
        true
    })
}
fn fake_write_text(addr: u64, buf: &[u8]) {
    FAKE.with(|f| f.borrow_mut().text_writes += 1);
    poke(addr, buf);
}
fn sym(name: &str) -> Option<Symbol> {
    match name {
        "work" => Some(Symbol {
            start: FUNC,
            size: CODE.len() as u64,
            name: "work",
        }),
        "black" => Some(Symbol {
            start: BLACK,
            size: 4,
            name: "black",
        }),
        _ => None,
    }
}
fn sym_at(addr: u64) -> Option<Symbol> {
    ["work", "black"]
        .into_iter()
        .filter_map(sym)
        .find(|s| s.contains(addr))
}

/// The fake kernel: every method over the thread's fake machine.
struct FakeHost;

impl Host for FakeHost {
    fn is_text(&self, a: u64) -> bool {
        (FUNC..FUNC + 0x10_0000).contains(&a) || (BLACK..BLACK + 4).contains(&a)
    }
    fn is_blacklisted(&self, a: u64) -> bool {
        (BLACK..BLACK + 4).contains(&a)
    }
    fn cpu_id(&self) -> usize {
        FAKE.with(|f| f.borrow().cpu)
    }
    fn cpu_count(&self) -> usize {
        2
    }
    fn task_id(&self) -> u32 {
        FAKE.with(|f| f.borrow().task)
    }
    fn timestamp(&self) -> u64 {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            f.tsc += 10;
            f.tsc
        })
    }
    fn symbol_at(&self, addr: u64) -> Option<Symbol> {
        sym_at(addr)
    }
    fn symbol_named(&self, name: &str) -> Option<Symbol> {
        sym(name)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        fake_read(addr, buf)
    }
    fn write(&self, addr: u64, buf: &[u8]) -> bool {
        fake_write(addr, buf)
    }
    fn direct_stack(&self) -> bool {
        false
    }
    fn write_text(&self, addr: u64, bytes: &[u8]) {
        fake_write_text(addr, bytes)
    }
    fn refetch_text(&self, _addr: u64) {}
    fn slot_area(&self) -> (u64, usize) {
        (SLOTS, 16 * arch::slots::SLOT_SIZE)
    }
    fn trampoline(&self) -> u64 {
        TRAMP
    }
    fn optimize_probes(&self) -> bool {
        // The fake text is far from the detour code: these tests cover the
        // int3 paths (the kernel selftest `optprobe` covers the jumps).
        false
    }
    fn step_pad(&self) -> u64 {
        PAD
    }
    fn fatal(&self, msg: &'static str) -> ! {
        panic!("fatal: {msg}")
    }
}

/// A fresh core over fresh fake memory (leaked: handlers find it by a
/// thread-local `&'static`).
fn setup() -> &'static Core {
    FAKE.with(|f| {
        *f.borrow_mut() = Fake {
            mem: BTreeMap::new(),
            cpu: 0,
            task: 1,
            tsc: 0,
            text_writes: 0,
        };
    });
    poke(FUNC, &CODE);
    poke(BLACK, &[0x90, 0x90, 0x90, 0xc3]);
    poke(SLOTS, &[0xcc; 16 * arch::slots::SLOT_SIZE]);
    poke(TRAMP, &[0xcc]);
    poke(STACK - 0x1000, &[0u8; 0x2000]);
    // Built on a thread with a large stack: `Box::new` of the per-CPU
    // rings goes through the stack in debug builds.
    let core: &'static Core = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| -> &'static Core { Box::leak(Box::new(Core::new())) })
        .expect("spawn")
        .join()
        .expect("build the core");
    core.init(&FakeHost);
    CORE_UNDER_TEST.with(|c| *c.borrow_mut() = Some(core));
    take_log();
    core
}

fn core() -> &'static Core {
    CORE_UNDER_TEST.with(|c| c.borrow().unwrap())
}

/// The frame of an int3 hit at `addr` (rip past the int3).
fn trap_at(addr: u64) -> TrapFrame {
    TrapFrame {
        rip: addr + 1,
        rsp: STACK,
        rflags: 0x202,
        vector: 3,
        rax: 7,
        rdi: 11,
        ..Default::default()
    }
}

fn pre(p: &Probe, f: &mut TrapFrame) -> bool {
    log(format!("pre {} rip={:#x}", p.id().0, f.rip));
    false
}
fn post(p: &Probe, f: &mut TrapFrame) {
    log(format!("post {} rip={:#x}", p.id().0, f.rip));
}
fn handlers() -> Kprobe {
    Kprobe {
        pre_handler: Some(pre),
        post_handler: Some(post),
        fault_handler: None,
        data: 0,
    }
}

#[test]
fn out_of_line_with_post_handler_takes_two_traps() {
    let c = setup();
    let id = c
        .register_kprobe(At::Symbol("work", 1), handlers())
        .unwrap();
    assert_eq!(peek(FUNC + 1), 0xcc, "armed");
    let info = c.info(id).unwrap();
    assert_eq!(info.path, ExecPath::OutOfLine);
    let mut f = trap_at(FUNC + 1);
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(take_log(), [format!("pre {} rip={:#x}", id.0, FUNC + 2)]);
    assert_eq!(f.rip, SLOTS, "runs the slot");
    assert_eq!(f.rflags & IF, 0, "with interrupts off");
    // The slot holds the original instruction, then int3.
    assert_eq!(
        [
            peek(SLOTS),
            peek(SLOTS + 1),
            peek(SLOTS + 2),
            peek(SLOTS + 3)
        ],
        [0x48, 0x89, 0xe5, 0xcc]
    );
    // The CPU runs `mov rbp, rsp` and traps on the tail int3.
    f.rbp = f.rsp;
    f.rip = SLOTS + 4;
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(f.rip, FUNC + 4, "continues after the probed instruction");
    assert_eq!(f.rflags & IF, IF, "IF restored");
    assert_eq!(take_log(), [format!("post {} rip={:#x}", id.0, FUNC + 4)]);
    assert_eq!(c.info(id).unwrap().hits, 1);
    assert_eq!(c.info(id).unwrap().nmissed, 0);
}

#[test]
fn boosted_probe_takes_one_trap_and_keeps_no_state() {
    let c = setup();
    let id = c
        .register_kprobe(
            At::Addr(FUNC),
            Kprobe {
                pre_handler: Some(pre),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(c.info(id).unwrap().path, ExecPath::Boosted);
    let mut f = trap_at(FUNC);
    assert!(c.on_breakpoint(&mut f));
    // IF was set: the sti variant (insn; sti; jmp back), entered with IF clear.
    assert_eq!(f.rip, SLOTS + 64);
    assert_eq!(f.rflags & IF, 0);
    assert_eq!(
        [peek(SLOTS + 64), peek(SLOTS + 65), peek(SLOTS + 66)],
        [0x55, 0xfb, 0xe9]
    );
    let rel = i32::from_le_bytes([
        peek(SLOTS + 67),
        peek(SLOTS + 68),
        peek(SLOTS + 69),
        peek(SLOTS + 70),
    ]);
    assert_eq!(
        (SLOTS + 71).wrapping_add_signed(rel.into()),
        FUNC + 1,
        "jumps back"
    );
    let mut g = trap_at(FUNC);
    g.rflags = 0x2;
    assert!(c.on_breakpoint(&mut g));
    assert_eq!(g.rip, SLOTS + 32, "IF clear: the plain variant");
    assert_eq!([peek(SLOTS + 32), peek(SLOTS + 33)], [0x55, 0xe9]);
    assert!(!c.kcbs[0].busy(), "no second trap pending");
    // Adding a post handler at the same address un-boosts the point.
    let id2 = c.register_kprobe(At::Addr(FUNC), handlers()).unwrap();
    assert_eq!(c.info(id).unwrap().path, ExecPath::OutOfLine);
    let mut h = trap_at(FUNC);
    assert!(c.on_breakpoint(&mut h));
    assert_eq!(h.rip, SLOTS);
    h.rip = SLOTS + 2;
    assert!(c.on_breakpoint(&mut h));
    assert_eq!(h.rip, FUNC + 1);
    assert_eq!(c.info(id).unwrap().hits, 3);
    assert_eq!(c.info(id2).unwrap().hits, 1);
}

#[test]
fn emulated_ret_and_jcc() {
    let c = setup();
    let ret = c
        .register_kprobe(At::Symbol("work", 0x10), handlers())
        .unwrap();
    let jcc = c
        .register_kprobe(At::Symbol("work", 0xb), handlers())
        .unwrap();
    assert_eq!(c.info(ret).unwrap().path, ExecPath::Emulated);
    poke(STACK, &0xdead_beef_u64.to_le_bytes());
    let mut f = trap_at(FUNC + 0x10);
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(f.rip, 0xdead_beef);
    assert_eq!(f.rsp, STACK + 8);
    assert_eq!(take_log().len(), 2, "pre and post ran");
    // je taken (ZF=1) and not taken.
    let mut t = trap_at(FUNC + 0xb);
    t.rflags |= arch::frame::rflags::ZF;
    assert!(c.on_breakpoint(&mut t));
    assert_eq!(t.rip, FUNC + 0xf);
    let mut n = trap_at(FUNC + 0xb);
    assert!(c.on_breakpoint(&mut n));
    assert_eq!(n.rip, FUNC + 0xd);
    assert_eq!(c.info(jcc).unwrap().hits, 2);
}

#[test]
fn rip_relative_instruction_is_retargeted_in_the_slot() {
    let c = setup();
    c.register_kprobe(At::Symbol("work", 4), handlers())
        .unwrap();
    // The slot's copy addresses the same absolute target FUNC+0xb+0xff5.
    let disp = i32::from_le_bytes([
        peek(SLOTS + 3),
        peek(SLOTS + 4),
        peek(SLOTS + 5),
        peek(SLOTS + 6),
    ]);
    assert_eq!(
        (SLOTS + 7).wrapping_add_signed(disp.into()),
        FUNC + 0xb + 0xff5
    );
}

fn nested_pre(p: &Probe, f: &mut TrapFrame) -> bool {
    log(format!("outer pre {}", p.id().0));
    // The handler "calls" code probed at FUNC+0x10 (emulated ret) and FUNC+1.
    poke(STACK - 0x100, &0x1234_u64.to_le_bytes());
    let mut inner = trap_at(FUNC + 0x10);
    inner.rsp = STACK - 0x100;
    assert!(core().on_breakpoint(&mut inner));
    assert_eq!(
        inner.rip, 0x1234,
        "the re-entered instruction still executes"
    );
    let mut inner2 = trap_at(FUNC + 1);
    assert!(core().on_breakpoint(&mut inner2));
    assert_eq!(inner2.rip, SLOTS + 128, "out of line, no handlers");
    inner2.rip = core().table.get(FUNC + 1).unwrap().slot.unwrap().trap_rip;
    assert!(core().on_breakpoint(&mut inner2));
    assert_eq!(inner2.rip, FUNC + 4);
    assert_eq!(
        core().kcbs[0].cur().state,
        kcb::State::Active,
        "outer level restored"
    );
    f.rax = 99;
    false
}

#[test]
fn hits_inside_a_handler_are_missed_and_counted() {
    let c = setup();
    let outer = c
        .register_kprobe(
            At::Addr(FUNC),
            Kprobe {
                pre_handler: Some(nested_pre),
                ..Default::default()
            },
        )
        .unwrap();
    let ret = c
        .register_kprobe(At::Symbol("work", 0x10), handlers())
        .unwrap();
    let mov = c
        .register_kprobe(At::Symbol("work", 1), handlers())
        .unwrap();
    let mut f = trap_at(FUNC);
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(
        take_log(),
        [format!("outer pre {}", outer.0)],
        "inner handlers did not run"
    );
    assert_eq!(f.rax, 99);
    assert_eq!(c.info(ret).unwrap().nmissed, 1);
    assert_eq!(c.info(mov).unwrap().nmissed, 1);
    assert_eq!(c.info(ret).unwrap().hits, 0);
    assert_eq!(c.info(outer).unwrap().hits, 1);
}

#[test]
fn double_reentry_is_fatal() {
    let c = setup();
    c.register_kprobe(At::Symbol("work", 1), handlers())
        .unwrap();
    c.register_kprobe(At::Symbol("work", 4), handlers())
        .unwrap();
    // Force a re-entered state, then hit again (as an NMI would).
    let point = c.table.get(FUNC + 1).unwrap();
    c.kcbs[0].set_cur(kcb::Level::at(kcb::State::Reenter, point));
    let r = std::panic::catch_unwind(|| {
        let mut f = trap_at(FUNC + 4);
        core().on_breakpoint(&mut f)
    });
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("double re-entry"), "{msg}");
}

#[test]
fn foreign_int3_is_not_ours_and_vanished_probe_retries() {
    let c = setup();
    let mut f = trap_at(FUNC + 0x11);
    assert!(
        !c.on_breakpoint(&mut f),
        "a kernel int3 goes to the stub / fatal path"
    );
    assert_eq!(f.rip, FUNC + 0x12);
    // An int3 hit racing with unregistration: the byte is back, retry it.
    let mut g = trap_at(FUNC + 1);
    assert!(c.on_breakpoint(&mut g));
    assert_eq!(g.rip, FUNC + 1);
}

#[test]
fn refusals_have_their_own_errors() {
    let c = setup();
    let k = Kprobe::default;
    assert_eq!(
        c.register_kprobe(At::Addr(FUNC + 2), k()),
        Err(ProbeError::NotBoundary)
    );
    assert_eq!(
        c.register_kprobe(At::Symbol("work", 0x40), k()),
        Err(ProbeError::PastEnd)
    );
    assert_eq!(
        c.register_kprobe(At::Symbol("nope", 0), k()),
        Err(ProbeError::UnknownSymbol)
    );
    assert_eq!(
        c.register_kprobe(At::Addr(0x5000), k()),
        Err(ProbeError::NotText)
    );
    assert_eq!(
        c.register_kprobe(At::Addr(BLACK + 1), k()),
        Err(ProbeError::Blacklisted)
    );
    assert_eq!(
        c.register_kprobe(At::Symbol("work", 0x11), k()),
        Err(ProbeError::Refused(Refusal::Int3))
    );
    assert_eq!(
        c.register_kprobe(At::Symbol("work", 0x12), k()),
        Err(ProbeError::Refused(Refusal::Ud))
    );
    assert_eq!(
        c.register_jprobe(At::Symbol("work", 1), 0, 0),
        Err(ProbeError::NotFunctionEntry)
    );
    assert_eq!(c.count(), 0);
}

#[test]
fn analysis_reads_through_other_probes_int3() {
    let c = setup();
    c.register_kprobe(At::Addr(FUNC), Kprobe::default())
        .unwrap();
    c.register_kprobe(At::Addr(FUNC + 1), Kprobe::default())
        .unwrap();
    // With int3 at +0 and +1 the decode from the start must still find +4.
    let id = c
        .register_kprobe(At::Addr(FUNC + 4), Kprobe::default())
        .unwrap();
    assert!(c.info(id).is_some());
    assert_eq!(
        c.register_kprobe(At::Addr(FUNC + 2), Kprobe::default()),
        Err(ProbeError::NotBoundary)
    );
}

#[test]
fn enable_disable_unregister_restore_the_text() {
    let c = setup();
    let a = c.register_kprobe(At::Addr(FUNC + 1), handlers()).unwrap();
    let b = c.register_kprobe(At::Addr(FUNC + 1), handlers()).unwrap();
    c.disable(a).unwrap();
    assert_eq!(peek(FUNC + 1), 0xcc, "b still enabled");
    let mut f = trap_at(FUNC + 1);
    assert!(c.on_breakpoint(&mut f));
    f.rip = SLOTS + 4;
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(
        take_log(),
        [
            format!("pre {} rip={:#x}", b.0, FUNC + 2),
            format!("post {} rip={:#x}", b.0, FUNC + 4)
        ]
    );
    c.disable(b).unwrap();
    assert_eq!(peek(FUNC + 1), 0x48, "all disabled: original byte back");
    c.enable(a).unwrap();
    assert_eq!(peek(FUNC + 1), 0xcc);
    c.unregister(a).unwrap();
    assert_eq!(peek(FUNC + 1), 0x48, "b is disabled");
    c.unregister(b).unwrap();
    assert_eq!(peek(FUNC + 1), 0x48);
    assert!(c.table.get(FUNC + 1).is_none());
    assert_eq!(c.unregister(b), Err(ProbeError::NoSuchProbe));
    assert_eq!(c.free_slots(), 16, "slot freed");
}

#[test]
fn ten_thousand_register_unregister_cycles() {
    let c = setup();
    for i in 0..10_000u64 {
        let off = [0u64, 1, 4, 0xb, 0x10][(i % 5) as usize];
        let id = c.register_kprobe(At::Addr(FUNC + off), handlers()).unwrap();
        c.unregister(id).unwrap();
    }
    assert_eq!(c.free_slots(), 16);
    assert_eq!(c.count(), 0);
    assert_eq!(
        &FAKE.with(|f| f
            .borrow()
            .mem
            .range(FUNC..FUNC + 0x14)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()),
        &CODE
    );
}

fn fixup(p: &Probe, f: &mut TrapFrame, vector: u64) -> bool {
    log(format!(
        "fault {} vector={vector} rip={:#x}",
        p.id().0,
        f.rip
    ));
    f.rax = 0xbad;
    f.rip = p.addr() + 7;
    true
}

#[test]
fn fault_in_the_out_of_line_instruction() {
    let c = setup();
    // Unhandled: the fault is made to look as if it happened in place.
    let id = c.register_kprobe(At::Addr(FUNC + 4), handlers()).unwrap();
    let mut f = trap_at(FUNC + 4);
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(f.rflags & IF, 0);
    f.vector = 14;
    assert!(!c.on_fault(&mut f));
    assert_eq!(f.rip, FUNC + 4);
    assert_eq!(f.rflags & IF, IF);
    assert!(!c.kcbs[0].busy());
    c.unregister(id).unwrap();
    take_log();
    // Handled by the probe's fault handler.
    let id = c
        .register_kprobe(
            At::Addr(FUNC + 4),
            Kprobe {
                fault_handler: Some(fixup),
                ..handlers()
            },
        )
        .unwrap();
    let mut f = trap_at(FUNC + 4);
    assert!(c.on_breakpoint(&mut f));
    let slot = f.rip;
    f.vector = 14;
    assert!(c.on_fault(&mut f));
    assert_eq!(f.rip, FUNC + 0xb);
    assert_eq!(f.rax, 0xbad);
    let log = take_log();
    assert_eq!(
        log[1],
        format!("fault {} vector=14 rip={:#x}", id.0, FUNC + 4)
    );
    // A fault elsewhere is not ours.
    let mut g = TrapFrame {
        rip: slot + 1000,
        vector: 14,
        ..Default::default()
    };
    assert!(!c.on_fault(&mut g));
}

fn ret_handler(ctx: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    log(format!(
        "ret {} rax={} rip={:#x} data={}",
        ctx.probe.0, f.rax, f.rip, ctx.data[0]
    ));
    0
}
fn entry_handler(ctx: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    ctx.data[0] = f.rdi as u8;
    i32::from(f.rdi == 0)
}

/// Simulates `call work` from `caller` with `rdi` at stack `sp`.
fn enter(c: &Core, sp: u64, caller: u64, rdi: u64) -> TrapFrame {
    poke(sp, &caller.to_le_bytes());
    let mut f = trap_at(FUNC);
    f.rsp = sp;
    f.rdi = rdi;
    assert!(c.on_breakpoint(&mut f));
    f
}

/// Simulates `ret` at `sp` returning `rax`: where the CPU goes next.
fn leave(c: &Core, sp: u64, rax: u64) -> TrapFrame {
    let target = peek_u64(sp);
    let mut f = TrapFrame {
        rip: 0,
        rsp: sp + 8,
        rax,
        rflags: 0x202,
        ..Default::default()
    };
    if target == TRAMP {
        c.on_return(&mut f);
    } else {
        f.rip = target;
    }
    f
}

#[test]
fn kretprobe_nested_returns_in_order_with_real_addresses() {
    let c = setup();
    let rp = Kretprobe {
        handler: Some(ret_handler),
        entry_handler: Some(entry_handler),
        maxactive: 3,
        data_size: 8,
        data: 0,
    };
    let id = c.register_kretprobe(At::Symbol("work", 0), rp).unwrap();
    assert_eq!(
        c.register_kretprobe(At::Symbol("work", 1), rp),
        Err(ProbeError::NotFunctionEntry)
    );
    // Recursion depth 4 with 3 instances: the innermost call is missed.
    let sps = [STACK - 0x100, STACK - 0x200, STACK - 0x300, STACK - 0x400];
    for (i, &sp) in sps.iter().enumerate() {
        enter(c, sp, 0xc0de_0000 + i as u64, 10 + i as u64);
    }
    assert_eq!(peek_u64(sps[0]), TRAMP);
    assert_eq!(
        peek_u64(sps[3]),
        0xc0de_0003,
        "no instance left: not hijacked"
    );
    assert_eq!(c.info(id).unwrap().nmissed, 1);
    // Stack trace of a hijacked frame maps back.
    assert_eq!(c.real_return_address(1, sps[1], TRAMP), 0xc0de_0001);
    for (i, &sp) in sps.iter().enumerate().rev() {
        let f = leave(c, sp, 100 + i as u64);
        assert_eq!(f.rip, 0xc0de_0000 + i as u64, "returns to the real caller");
    }
    assert_eq!(
        take_log(),
        [
            format!("ret {} rax=102 rip={:#x} data=12", id.0, 0xc0de_0002_u64),
            format!("ret {} rax=101 rip={:#x} data=11", id.0, 0xc0de_0001_u64),
            format!("ret {} rax=100 rip={:#x} data=10", id.0, 0xc0de_0000_u64),
        ]
    );
    assert_eq!(c.info(id).unwrap().free_instances, 3);
    // entry_handler returning non-zero (rdi == 0) skips this call.
    enter(c, sps[0], 0xc0de, 0);
    assert_eq!(peek_u64(sps[0]), 0xc0de);
    assert_eq!(c.info(id).unwrap().free_instances, 3);
}

#[test]
fn two_kretprobes_on_one_function_and_task_exit_and_unregister() {
    let c = setup();
    let rp = Kretprobe {
        handler: Some(ret_handler),
        maxactive: 2,
        data_size: 1,
        ..Default::default()
    };
    let a = c.register_kretprobe(At::Addr(FUNC), rp).unwrap();
    let b = c.register_kretprobe(At::Addr(FUNC), rp).unwrap();
    enter(c, STACK - 0x100, 0xaaaa, 1);
    let f = leave(c, STACK - 0x100, 5);
    assert_eq!(f.rip, 0xaaaa);
    assert_eq!(
        take_log(),
        [
            format!("ret {} rax=5 rip=0xaaaa data=0", b.0),
            format!("ret {} rax=5 rip=0xaaaa data=0", a.0)
        ]
    );
    // Task 1 enters and exits without returning: reclaimed.
    enter(c, STACK - 0x100, 0xaaaa, 1);
    assert_eq!(c.info(a).unwrap().free_instances, 1);
    c.task_exit(1);
    assert_eq!(c.info(a).unwrap().free_instances, 2);
    assert_eq!(c.info(b).unwrap().free_instances, 2);
    // Task 2 enters; the probes go away; its return still lands right.
    FAKE.with(|f| f.borrow_mut().task = 2);
    enter(c, STACK - 0x200, 0xbbbb, 1);
    c.unregister(a).unwrap();
    c.unregister(b).unwrap();
    assert_eq!(peek(FUNC), 0x55);
    let f = leave(c, STACK - 0x200, 6);
    assert_eq!(f.rip, 0xbbbb);
    assert!(take_log().is_empty(), "gone probes run no handler");
}

extern "C" fn jhandler(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, mut h: u64) -> u64 {
    log(format!("jprobe {a} {b} {c} {d} {e} {f} {g} {h}"));
    h += 1; // writes its copy only
    h
}

#[test]
fn jprobe_sees_register_and_stack_arguments() {
    let c = setup();
    let id = c
        .register_jprobe(At::Symbol("work", 0), jhandler as *const () as usize, 0)
        .unwrap();
    assert_eq!(
        c.register_jprobe(At::Symbol("work", 0), jhandler as *const () as usize, 0),
        Err(ProbeError::JprobeExists)
    );
    poke(STACK, &0x1111_u64.to_le_bytes());
    poke(STACK + 8, &7u64.to_le_bytes());
    poke(STACK + 16, &8u64.to_le_bytes());
    let mut f = trap_at(FUNC);
    (f.rdi, f.rsi, f.rdx, f.rcx, f.r8, f.r9) = (1, 2, 3, 4, 5, 6);
    let before = f;
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(take_log(), ["jprobe 1 2 3 4 5 6 7 8"]);
    assert_eq!(f.args(), before.args(), "registers untouched");
    assert_eq!(peek_u64(STACK + 16), 8, "stack untouched");
    assert_eq!(c.info(id).unwrap().kind, ProbeKind::Jprobe);
}

#[test]
fn capture_records_fetches_faults_and_counts_drops() {
    let c = setup();
    poke(0x50_0000, b"/etc/motd\0");
    let spec = proto::CaptureSpec::parse("stack=16 fetch=str32@arg0,u32@arg1+4,u64@arg2").unwrap();
    let id = c
        .capture_entry(At::Symbol("work", 0), spec, None, None)
        .unwrap();
    poke(0x50_0100, &[1, 2, 3, 4, 0x78, 0x56, 0x34, 0x12]);
    poke(STACK + 8, &[9u8; 16]);
    let mut f = trap_at(FUNC);
    (f.rdi, f.rsi, f.rdx) = (0x50_0000, 0x50_0100, 0xdead_0000);
    assert!(c.on_breakpoint(&mut f));
    let mut records = Vec::new();
    assert_eq!(c.drain(&mut |r| records.push(r.to_vec())), 1);
    let proto::Record::Event(ev) = proto::Record::decode(&records[0]).unwrap() else {
        panic!("not an event");
    };
    assert_eq!(ev.probe_id, id.0);
    assert_eq!(ev.kind, proto::EventKind::JprobeEntry);
    assert_eq!(ev.args[0], 0x50_0000);
    let r = ev.results();
    assert_eq!(ev.string_bytes(&r[0]), b"/etc/motd");
    assert_eq!(r[1], proto::FetchResult::Value(0x1234_5678));
    assert_eq!(r[2], proto::FetchResult::Fault { addr: 0xdead_0000 });
    assert_eq!(ev.stack(), &[9u8; 16]);
    // Flood: produced == delivered + dropped, drops per probe exact.
    for _ in 0..1000 {
        let mut f = trap_at(FUNC);
        (f.rdi, f.rsi, f.rdx) = (0x50_0000, 0x50_0100, 0xdead_0000);
        assert!(c.on_breakpoint(&mut f));
    }
    let delivered = c.drain(&mut |_| {});
    let s = c.ring_stats();
    assert_eq!(s.produced, 1001);
    assert_eq!(s.produced, s.delivered + s.dropped);
    assert_eq!(s.delivered, 1 + delivered as u64);
    assert_eq!(c.info(id).unwrap().dropped, s.dropped);
    assert!(s.dropped > 0);
}

#[test]
fn return_capture_records_return_value_args_and_duration() {
    let c = setup();
    let id = c
        .capture_return(
            At::Symbol("work", 0),
            None,
            proto::CaptureSpec::default(),
            None,
            None,
        )
        .unwrap();
    assert_eq!(c.info(id).unwrap().maxactive, 10);
    enter(c, STACK - 0x100, 0xcafe, 42);
    let f = leave(c, STACK - 0x100, (-2i64) as u64);
    assert_eq!(f.rip, 0xcafe);
    let mut rec = Vec::new();
    c.drain(&mut |r| rec.push(proto::Record::decode(r).unwrap()));
    let proto::Record::Event(ev) = rec[0] else {
        panic!()
    };
    assert_eq!(ev.kind, proto::EventKind::KretprobeReturn);
    assert_eq!(ev.ret, Some((-2i64) as u64));
    assert_eq!(ev.args[0], 42);
    assert!(ev.duration.unwrap() > 0);
}

static HITS: AtomicUsize = AtomicUsize::new(0);
fn count(_: &Probe, _: &mut TrapFrame) -> bool {
    HITS.fetch_add(1, Ordering::Relaxed);
    false
}

#[test]
fn unregister_from_a_handler_is_refused() {
    let c = setup();
    fn evil(_: &Probe, _: &mut TrapFrame) -> bool {
        assert_eq!(core().unregister(ProbeId(1)), Err(ProbeError::InHandler));
        assert_eq!(
            core().register_kprobe(At::Addr(FUNC + 4), Kprobe::default()),
            Err(ProbeError::InHandler)
        );
        count(
            &core().table.get(FUNC).unwrap().probes[0],
            &mut TrapFrame::default(),
        )
    }
    c.register_kprobe(
        At::Addr(FUNC),
        Kprobe {
            pre_handler: Some(evil),
            ..Default::default()
        },
    )
    .unwrap();
    let before = HITS.load(Ordering::Relaxed);
    let mut f = trap_at(FUNC);
    assert!(c.on_breakpoint(&mut f));
    assert!(HITS.load(Ordering::Relaxed) > before);
}

#[test]
fn debugger_single_step_through_probes_ends_at_the_real_next_instruction() {
    let c = setup();
    let tf = arch::frame::rflags::TF;
    let jcc = c
        .register_kprobe(At::Symbol("work", 0xb), handlers())
        .unwrap();
    let push = c
        .register_kprobe(
            At::Addr(FUNC),
            Kprobe {
                pre_handler: Some(pre),
                ..Default::default()
            },
        )
        .unwrap();
    let mov = c.register_kprobe(At::Addr(FUNC + 1), handlers()).unwrap();
    // Emulated: through the step pad, whose #DB lands at the branch target.
    let mut f = trap_at(FUNC + 0xb);
    f.rflags |= tf | arch::frame::rflags::ZF;
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(f.rip, PAD);
    f.rip = PAD + 1;
    assert!(!c.on_debug(&mut f), "the stub reports the step");
    assert_eq!(f.rip, FUNC + 0xf);
    assert!(!c.kcbs[0].busy());
    // Boostable, but stepping: the trapping variant, and the #DB after the
    // slot's instruction ends the step at the next instruction.
    let mut g = trap_at(FUNC);
    g.rflags |= tf;
    assert!(c.on_breakpoint(&mut g));
    assert_eq!(g.rip, SLOTS, "not boosted: the trapping variant");
    assert_eq!(g.rflags & tf, tf);
    g.rip += 1; // `push rbp` executed
    assert!(!c.on_debug(&mut g));
    assert_eq!(g.rip, FUNC + 1);
    assert_eq!(g.rflags & IF, IF);
    // Out of line with a post handler.
    take_log();
    let mut h = trap_at(FUNC + 1);
    h.rflags |= tf;
    assert!(c.on_breakpoint(&mut h));
    h.rip += 3;
    assert!(!c.on_debug(&mut h));
    assert_eq!(h.rip, FUNC + 4);
    assert_eq!(take_log().len(), 2, "pre and post ran once");
    assert!(!c.kcbs[0].busy());
    for id in [jcc, push, mov] {
        c.unregister(id).unwrap();
    }
}

#[test]
fn gdb_breakpoints_share_the_int3_with_probes() {
    let c = setup();
    // gdb alone.
    c.gdb_insert(FUNC + 0xd).unwrap();
    assert_eq!(peek(FUNC + 0xd), 0xcc);
    assert_eq!(c.original_byte(FUNC + 0xd), Some(0x31));
    let mut f = trap_at(FUNC + 0xd);
    assert!(!c.on_breakpoint(&mut f), "gdb's: the stub takes it");
    // A probe under gdb's breakpoint: decoded through it; gdb stops first.
    let id = c.register_kprobe(At::Addr(FUNC + 0xd), handlers()).unwrap();
    let mut f = trap_at(FUNC + 0xd);
    assert!(!c.on_breakpoint(&mut f));
    c.gdb_remove(FUNC + 0xd).unwrap();
    assert_eq!(peek(FUNC + 0xd), 0xcc, "the probe keeps its int3");
    let mut f = trap_at(FUNC + 0xd);
    assert!(c.on_breakpoint(&mut f), "now the probe's");
    f.rip = c.table.get(FUNC + 0xd).unwrap().slot.unwrap().trap_rip;
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(f.rip, FUNC + 0xf);
    // gdb on a probed address, probe removed first: gdb's int3 stays.
    c.gdb_insert(FUNC + 0xd).unwrap();
    c.unregister(id).unwrap();
    assert_eq!(peek(FUNC + 0xd), 0xcc);
    assert_eq!(c.original_byte(FUNC + 0xd), Some(0x31));
    c.gdb_remove(FUNC + 0xd).unwrap();
    assert_eq!(peek(FUNC + 0xd), 0x31);
    assert_eq!(c.original_byte(FUNC + 0xd), None);
}

#[test]
fn gdb_breakpoint_conditions_run_in_the_trap() {
    use crate::cond::StopCond;
    use proto::bytecode::{Writer, op};
    let c = setup();
    let at = FUNC + 0xd; // xor eax, eax: out of line, boostable
    let cond = |n: u64| {
        let mut w = Writer::new();
        w.reg(5).konst(n).op(op::EQ);
        w.finish().unwrap()
    };
    // Set before the breakpoint: waits for it.
    c.gdb_set_cond(at, Some(StopCond::new([cond(5)], 0, false)))
        .unwrap();
    assert_eq!(peek(at), 0x31, "no breakpoint yet");
    c.gdb_insert(at).unwrap();
    assert_eq!(peek(at), 0xcc);
    // rdi = 11: false, resumes through the slot without the stub.
    let mut f = trap_at(at);
    assert!(c.on_breakpoint(&mut f), "false: handled in the trap");
    assert_ne!(f.rip, at + 1, "sent to the slot");
    assert!(f.rip >= SLOTS, "boosted into the slot");
    finish_slot(c, at, &mut f);
    // rdi = 5: true, the stub stops.
    let mut f = trap_at(at);
    f.rdi = 5;
    assert!(!c.on_breakpoint(&mut f));
    // A faulting condition counts and does not stop.
    let mut w = Writer::new();
    w.konst(0xdead_0000).load(8, false);
    c.gdb_set_cond(at, Some(StopCond::new([w.finish().unwrap()], 0, false)))
        .unwrap();
    let mut f = trap_at(at);
    assert!(c.on_breakpoint(&mut f));
    finish_slot(c, at, &mut f);
    // Ignore count: two true hits skipped, the third stops.
    c.gdb_set_cond(at, Some(StopCond::new([cond(11)], 2, false)))
        .unwrap();
    let mut stops = 0;
    for _ in 0..4 {
        let mut f = trap_at(at);
        if !c.on_breakpoint(&mut f) {
            stops += 1;
        }
        finish_slot(c, at, &mut f);
    }
    assert_eq!(stops, 2, "hits 3 and 4 stop");
    let mut rows = Vec::new();
    c.gdb_conds(&mut |i| rows.push(*i)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].hits,
            rows[0].false_hits,
            rows[0].faults,
            rows[0].ignored,
            rows[0].ignore
        ),
        (7, 1, 1, 2, 0),
        "counters carry over a new condition"
    );
    // The condition survives a lift (z0/Z0 to step over it).
    c.gdb_remove(at).unwrap();
    assert_eq!(peek(at), 0x31);
    assert!(
        c.table.get(at).is_none(),
        "the point went with the breakpoint"
    );
    c.gdb_insert(at).unwrap();
    let mut f = trap_at(at);
    f.rdi = 1;
    assert!(c.on_breakpoint(&mut f), "still conditional");
    finish_slot(c, at, &mut f);
    // A probe there too: a false condition runs the probe as usual.
    let id = c.register_kprobe(At::Addr(at), handlers()).unwrap();
    take_log();
    let mut f = trap_at(at);
    f.rdi = 1;
    assert!(c.on_breakpoint(&mut f));
    finish_slot(c, at, &mut f);
    assert!(!take_log().is_empty(), "the probe's handler ran");
    c.unregister(id).unwrap();
    assert_eq!(peek(at), 0xcc, "gdb's breakpoint stays");
    let mut f = trap_at(at);
    f.rdi = 1;
    assert!(c.on_breakpoint(&mut f), "and stays conditional");
    finish_slot(c, at, &mut f);
    // Ending the condition: gdb's plain breakpoint again.
    c.gdb_set_cond(at, None).unwrap();
    let mut f = trap_at(at);
    assert!(!c.on_breakpoint(&mut f));
    assert_eq!(peek(at), 0xcc);
    c.gdb_remove(at).unwrap();
    assert_eq!(peek(at), 0x31);
    // Refused where no point can be: a blacklisted address.
    assert_eq!(
        c.gdb_set_cond(BLACK, Some(StopCond::new([cond(1)], 0, false))),
        Err(ProbeError::Blacklisted)
    );
}

/// Ends a hit that went out of line (the slot's tail trap), if it did.
fn finish_slot(c: &Core, at: u64, f: &mut TrapFrame) {
    if c.kcbs[0].busy() {
        f.rip = c.table.get(at).unwrap().slot.unwrap().trap_rip;
        assert!(c.on_breakpoint(f));
    }
}

#[test]
fn watchpoint_trap_after_a_slot_instruction_reports_the_real_place() {
    let c = setup();
    // Boosted (sti variant): a #DB after `push rbp` in the slot.
    c.register_kprobe(
        At::Addr(FUNC),
        Kprobe {
            pre_handler: Some(pre),
            ..Default::default()
        },
    )
    .unwrap();
    let mut f = trap_at(FUNC);
    assert!(c.on_breakpoint(&mut f));
    assert_eq!(f.rip, SLOTS + 64);
    f.rip += 1;
    assert!(!c.on_debug(&mut f));
    assert_eq!(f.rip, FUNC + 1);
    assert_eq!(f.rflags & IF, IF, "the skipped sti's effect restored");
    // Trapping variant (post handler): the #DB before the tail int3.
    c.register_kprobe(At::Addr(FUNC + 1), handlers()).unwrap();
    let mut g = trap_at(FUNC + 1);
    assert!(c.on_breakpoint(&mut g));
    let slot = g.rip;
    g.rip = slot + 3;
    take_log();
    assert!(!c.on_debug(&mut g));
    assert_eq!(g.rip, FUNC + 4);
    assert_eq!(take_log().len(), 1, "post handler ran");
    assert!(!c.kcbs[0].busy());
}

#[test]
fn string_fetches_stop_at_unreadable_bytes_and_share_the_string_budget() {
    let c = setup();
    // "abcde" and then unmapped memory: the bytes before the hole, truncated.
    poke(0x60_0000, b"abcde");
    let long = [b'x'; 64];
    poke(0x61_0000, &long);
    poke(0x61_0040, &[0]);
    let spec =
        proto::CaptureSpec::parse("fetch=str64@arg0,str64@arg1,str64@arg1,str64@arg1").unwrap();
    let id = c
        .capture_entry(At::Symbol("work", 0), spec, None, None)
        .unwrap();
    let mut f = trap_at(FUNC);
    (f.rdi, f.rsi) = (0x60_0000, 0x61_0000);
    assert!(c.on_breakpoint(&mut f));
    let mut evs = Vec::new();
    c.drain(&mut |r| evs.push(proto::Record::decode(r).unwrap()));
    let proto::Record::Event(ev) = evs[0] else {
        panic!()
    };
    assert_eq!(ev.probe_id, id.0);
    let r = ev.results();
    assert_eq!(ev.string_bytes(&r[0]), b"abcde");
    assert_eq!(ev.string_bytes(&r[1]).len(), 64);
    // 128 string bytes per event: the third string is cut, the fourth empty.
    let total: usize = r.iter().map(|x| ev.string_bytes(x).len()).sum();
    assert!(total <= proto::event::MAX_STRING_BYTES);
    assert_eq!(r.len(), 4);
    assert!(ev.truncated);
}

#[test]
fn drain_at_most_takes_a_bounded_batch_and_keeps_the_counts_exact() {
    let c = setup();
    let spec = proto::CaptureSpec::parse("stack=16").unwrap();
    c.capture_entry(At::Symbol("work", 0), spec, None, None)
        .unwrap();
    for _ in 0..10 {
        let mut f = trap_at(FUNC);
        assert!(c.on_breakpoint(&mut f));
    }
    let mut got = 0;
    assert_eq!(c.drain_at_most(4, &mut |_| got += 1), 4);
    assert_eq!(got, 4);
    let s = c.ring_stats();
    assert_eq!((s.produced, s.delivered, s.dropped), (10, 4, 0));
    assert_eq!(c.drain_at_most(0, &mut |_| got += 1), 0);
    assert_eq!(c.drain_at_most(100, &mut |_| got += 1), 6);
    assert_eq!(got, 10);
    // A flood past the ring's capacity: bounded batches still account for
    // every record (produced == delivered + dropped once empty).
    for _ in 0..5000 {
        let mut f = trap_at(FUNC);
        assert!(c.on_breakpoint(&mut f));
    }
    while c.drain_at_most(16, &mut |_| {}) > 0 {}
    let s = c.ring_stats();
    assert_eq!(s.produced, 5010);
    assert_eq!(s.produced, s.delivered + s.dropped);
    assert!(s.dropped > 0);
}

#[test]
fn drain_merges_the_cpus_rings_by_timestamp() {
    let c = setup();
    let spec = proto::CaptureSpec::parse("").unwrap();
    c.capture_entry(At::Symbol("work", 0), spec, None, None)
        .unwrap();
    // Hits on CPU 1, 0, 0, 1, 0: each takes the next timestamp.
    for cpu in [1, 0, 0, 1, 0] {
        FAKE.with(|f| f.borrow_mut().cpu = cpu);
        let mut f = trap_at(FUNC);
        assert!(c.on_breakpoint(&mut f));
    }
    FAKE.with(|f| f.borrow_mut().cpu = 0);
    let mut evs = Vec::new();
    assert_eq!(
        c.drain(&mut |r| {
            if let proto::Record::Event(ev) = proto::Record::decode(r).unwrap() {
                evs.push((ev.cpu, ev.tsc));
            }
        }),
        5
    );
    let cpus: Vec<u8> = evs.iter().map(|e| e.0).collect();
    assert_eq!(cpus, vec![1, 0, 0, 1, 0], "{evs:?}");
    assert!(evs.windows(2).all(|w| w[0].1 < w[1].1), "{evs:?}");
    let s = c.ring_stats();
    assert_eq!((s.produced, s.delivered, s.dropped), (5, 5, 0));
}

#[test]
fn stack_capture_with_a_fetch_records_both_and_an_unreadable_stack_records_none() {
    let c = setup();
    let words: Vec<u8> = (1u8..=24).collect();
    poke(STACK + 8, &words);
    poke(0x60_0000, b"hi\0");
    let spec = proto::CaptureSpec::parse("fetch=str16@arg0 stack=16").unwrap();
    c.capture_entry(At::Symbol("work", 0), spec, None, None)
        .unwrap();
    let mut f = trap_at(FUNC);
    f.rdi = 0x60_0000;
    assert!(c.on_breakpoint(&mut f));
    // The same hit with the stack pointer in unmapped memory.
    let mut g = trap_at(FUNC);
    g.rdi = 0x60_0000;
    g.rsp = 0x7f_0000_0000;
    assert!(c.on_breakpoint(&mut g));
    let mut evs = Vec::new();
    c.drain(&mut |r| evs.push(proto::Record::decode(r).unwrap()));
    assert_eq!(evs.len(), 2);
    let proto::Record::Event(a) = evs[0] else {
        panic!("not an event: {:?}", evs[0])
    };
    assert_eq!(a.stack(), &words[..16]);
    assert_eq!(a.string_bytes(&a.results()[0]), b"hi");
    let proto::Record::Event(b) = evs[1] else {
        panic!("not an event: {:?}", evs[1])
    };
    assert!(b.stack().is_empty());
    assert_eq!(b.string_bytes(&b.results()[0]), b"hi");
}
