//! The stub against the defects a protocol fuzzer found (issue 20): each
//! test drives the real stub in QEMU over its raw line and failed before
//! the fix. The fuzzer itself is `stub_fuzz.rs`.

use std::time::Duration;

use tests::Qemu;
use tests::rsp::{Raw, elf_address, packet, workload_total};

const BOOT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_millis(300);

fn boot() -> Qemu {
    let mut vm = Qemu::boot("").expect("boot the kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts");
    vm.wait_for_stub_port(BOOT).expect("stub port");
    vm
}

fn connect(vm: &mut Qemu) -> Raw {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    Raw::connect(addr).expect("connect to the stub")
}

/// `c`, let the kernel run, Ctrl-C: no stop reply may arrive before the
/// Ctrl-C, and the workload counters grew meanwhile.
fn runs_until_interrupted(s: &mut Raw, stats: u64) {
    let before = workload_total(s, stats);
    s.send("c");
    let quiet = std::time::Instant::now() + Duration::from_millis(1500);
    while let Some(p) = s.next(quiet.saturating_duration_since(std::time::Instant::now())) {
        // Probe events stream while the kernel runs; anything else is a stop.
        assert!(
            tests::rsp::is_console(&p),
            "the kernel stopped by itself after `c`: {:?}",
            String::from_utf8_lossy(&p)
        );
    }
    let stop = s.interrupt();
    assert!(stop.starts_with("T02"), "Ctrl-C stop: {stop}");
    let after = workload_total(s, stats);
    assert!(after > before, "workloads did not run: {before} -> {after}");
}

/// rip of the stopped thread (gdb's x86_64 `g` layout: 16 GPRs, then rip).
fn rip(s: &mut Raw) -> u64 {
    let g = s.ask("g");
    let bytes = tests::rsp::unhex(g.as_bytes().get(256..272).expect("rip in g"));
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

#[test]
fn a_step_interrupted_by_ctrl_c_does_not_stay_armed() {
    let mut vm = boot();
    let kernel = vm.config().kernel.clone();
    let stats = elf_address(&kernel, "&kernel::workloads::STATS");
    // The idle loop is `sti; hlt; jmp idle`. A step of `hlt` runs with
    // interrupts on (it waits for one), so a Ctrl-C sent with the step is
    // taken before the step completes: the kernel stops (T02) with the
    // step's TF armed. Every kind of stop must end the step.
    let idle = tests::rsp::symbol(&kernel, "kernel::sched::idle").expect("idle");
    let hlt = idle + 1;
    let mut s = connect(&mut vm);
    s.attach();
    let mut interrupted = 0;
    for _ in 0..40 {
        if interrupted >= 3 {
            break;
        }
        // Stop in the idle loop (where the kernel spends most of its time).
        let pc = rip(&mut s);
        if !(idle..idle + 4).contains(&pc) {
            runs_until_interrupted(&mut s, stats);
            continue;
        }
        // Step to the hlt (jmp -> sti -> hlt).
        for _ in 0..3 {
            if rip(&mut s) == hlt {
                break;
            }
            assert!(s.ask("s").starts_with('T'));
        }
        if rip(&mut s) != hlt {
            runs_until_interrupted(&mut s, stats);
            continue;
        }
        s.send_raw(&[packet(b"s").as_slice(), b"\x03"].concat());
        let stop = s.reply();
        assert!(stop.starts_with('T'), "stop: {stop}");
        if stop.starts_with("T02") {
            interrupted += 1;
        }
        // Whatever the step did, `c` runs the kernel until the next
        // Ctrl-C: no leftover step stops it one instruction later.
        runs_until_interrupted(&mut s, stats);
    }
    assert!(
        interrupted > 0,
        "no step of hlt was interrupted by its Ctrl-C: the test did not test the case"
    );
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn memory_reads_are_capped_at_packet_size_and_never_mix_data_and_error() {
    let mut vm = boot();
    let fib = elf_address(&vm.config().kernel, "&kernel::workloads::fib");
    let mut s = connect(&mut vm);
    let sup = s.attach();
    assert!(sup.contains("PacketSize=1000;"), "{sup}");
    let max_hex = 0x1000;
    // Larger than a packet: one packet of data (gdb asks for the rest).
    for len in ["10000", "ffffffffffffffff", "801"] {
        let r = s.ask(&format!("m{fib:x},{len}"));
        assert_eq!(r.len(), max_hex, "m{fib:x},{len}: {} hex digits", r.len());
        assert!(r.bytes().all(|c| c.is_ascii_hexdigit()), "{r}");
    }
    // The old stream-forever case: a reply arrives at once and the kernel
    // is fine.
    let r = s.ask("m100000,ffffffffffffffff");
    assert_eq!(r.len(), max_hex);
    // Exactly a packet.
    assert_eq!(s.ask(&format!("m{fib:x},800")).len(), max_hex);
    // Length 0: no bytes (as gdbserver answers).
    assert_eq!(s.ask(&format!("m{fib:x},0")), "");
    // An unmapped tail: the readable bytes, no error after them. RAM is
    // identity-mapped up to 4 GiB.
    let r = s.ask("mfffffc00,800");
    assert_eq!(r.len(), 0x400 * 2, "readable prefix only: {r}");
    assert!(r.bytes().all(|c| c.is_ascii_hexdigit()), "{r}");
    let r = s.ask("mfffff000,2000");
    assert_eq!(r.len(), max_hex, "{r}");
    let r = s.ask("mffffffff,10");
    assert_eq!(r.len(), 2, "{r}");
    // Nothing readable: an error, never a partial packet.
    assert!(s.ask("m100000000,10").starts_with('E'));
    assert!(s.ask("mf00,200").starts_with('E'), "page 0 is unmapped");
    // Across a page boundary inside RAM: all of it.
    let r = s.ask("m1ff800,1000");
    assert_eq!(r.len(), max_hex);
    s.send("c");
    std::thread::sleep(SETTLE);
    s.interrupt();
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn packet_size_is_what_the_stub_accepts_and_bare_vcont_is_an_error() {
    let mut vm = boot();
    let mut s = connect(&mut vm);
    let sup = s.attach();
    let size = sup
        .split(';')
        .find_map(|f| f.strip_prefix("PacketSize="))
        .and_then(|v| usize::from_str_radix(v, 16).ok())
        .expect("PacketSize in qSupported");
    // A monitor command whose packet is exactly PacketSize bytes from `$`
    // to the checksum: accepted (an error row for the padding, then OK).
    let monitor_packet = |total: usize| {
        let text_len = (total - 4 - "qRcmd,".len()) / 2;
        let text = format!("help{}", " ".repeat(text_len - 4));
        let body = format!("qRcmd,{}", tests::rsp::hex(text.as_bytes()));
        let p = packet(body.as_bytes());
        assert_eq!(p.len(), total);
        p
    };
    s.send_raw(&monitor_packet(size));
    let mut console = String::new();
    let r = s.reply_with_console(&mut console);
    assert_eq!(r, "OK", "a packet of exactly PacketSize bytes: {r}");
    // Two bytes more (hex pairs): NAKed.
    s.send_raw(&monitor_packet(size + 2));
    s.expect_byte(b'-');
    assert!(s.ask("?").starts_with('T'));

    // A bare vCont names no action: an error, the kernel stays stopped.
    for bare in ["vCont", "vCont;"] {
        assert_eq!(s.ask(bare), "E16", "{bare}");
    }
    assert!(
        s.next(Duration::from_millis(800)).is_none(),
        "a bare vCont resumed the kernel"
    );
    assert!(s.ask("?").starts_with('T'));
    assert!(s.ask("vCont?").starts_with("vCont"));
    s.send("vCont;c");
    std::thread::sleep(SETTLE);
    s.interrupt();
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn breakpoints_and_watchpoints_on_the_debugger_itself_are_refused() {
    let mut vm = boot();
    let kernel = vm.config().kernel.clone();
    let stats = elf_address(&kernel, "&kernel::workloads::STATS");
    let fib = elf_address(&kernel, "&kernel::workloads::fib");
    let sym = |name: &str| {
        tests::rsp::symbol(&kernel, name).unwrap_or_else(|| panic!("{name} in the kernel"))
    };
    let stop = sym("stub::machine::Session::stop");
    let writer = sym("stub::conn::write_packet");
    let session = sym("stub::machine::SESSION");
    let buffer = sym("stub::machine::PACKET_BUFFER");
    let core = sym("probes::CORE");
    // The heap starts at the first 2 MiB boundary after the image.
    let heap = (sym("__image_end") + 0x1F_FFFF) & !0x1F_FFFF;
    let mut s = connect(&mut vm);
    s.attach();
    for (req, why) in [
        (format!("Z0,{stop:x},1"), "blacklisted"),
        (format!("Z0,{writer:x},1"), "blacklisted"),
        (format!("Z1,{stop:x},1"), "blacklisted"),
        (format!("Z0,{stats:x},1"), "not kernel text"),
        (format!("Z2,{session:x},8"), "session state"),
        (format!("Z4,{:x},8", session + 64), "session state"),
        (format!("Z2,{buffer:x},1"), "packet buffer"),
        (format!("Z3,{core:x},8"), "probe core"),
        (format!("Z4,{:x},8", heap + 0x1000), "kernel heap"),
    ] {
        assert_eq!(s.ask(&req), "E0d", "{req} must be refused");
        let (console, r) = s.monitor("refused");
        assert_eq!(r, "OK");
        let last = console
            .lines()
            .rfind(|l| l.starts_with("refused "))
            .unwrap_or_default();
        assert!(
            last.contains(why) && last.contains(&format!("request={}", &req[..2])),
            "{req}: {console}"
        );
    }
    // What is not the debugger's still works, and fires.
    assert_eq!(s.ask(&format!("Z1,{fib:x},1")), "OK");
    s.send("c");
    assert!(s.reply().contains("hwbreak"));
    assert_eq!(s.ask(&format!("z1,{fib:x},1")), "OK");
    assert_eq!(s.ask(&format!("Z2,{stats:x},8")), "OK");
    assert_eq!(s.ask(&format!("z2,{stats:x},8")), "OK");
    runs_until_interrupted(&mut s, stats);
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

/// `monitor events` while stopped: (produced, delivered, dropped).
fn event_counters(s: &mut Raw) -> (u64, u64, u64) {
    let (console, r) = s.monitor("events");
    assert_eq!(r, "OK");
    let field = |name: &str| -> u64 {
        console
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {console}"))
    };
    (field("produced"), field("delivered"), field("dropped"))
}

#[test]
fn delivered_counts_exactly_the_event_lines_that_reached_the_host() {
    let mut vm = boot();
    let mut s = connect(&mut vm);
    s.attach();
    // Long text events: 64 bytes of stack and eight string fetches of raw
    // code bytes (escaped in text), well over the old line buffer.
    let fetches = (0..8)
        .map(|i| format!("str64@%rip+{:#x}", 8 * i))
        .collect::<Vec<_>>()
        .join(",");
    let (console, r) = s.monitor(&format!("jprobe fib stack=64 fetch={fetches}"));
    assert_eq!(r, "OK", "{console}");
    assert!(!console.contains("error"), "{console}");
    let (_, delivered_before, _) = event_counters(&mut s);
    // Run, collecting every event line that arrives, then stop.
    s.send("c");
    let mut lines = 0u64;
    let mut longest = 0;
    let mut sample = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut stopped = None;
    s.send_raw(b"");
    loop {
        if stopped.is_none() && std::time::Instant::now() > deadline {
            s.send_raw(b"\x03");
            stopped = Some(());
        }
        let Some(p) = s.next(Duration::from_secs(30)) else {
            panic!("no stop reply");
        };
        if tests::rsp::is_console(&p) {
            let text = String::from_utf8_lossy(&tests::rsp::unhex(&p[1..])).into_owned();
            for l in text.lines().filter(|l| l.starts_with("event ")) {
                lines += 1;
                if l.len() > longest {
                    sample = l.to_string();
                }
                longest = longest.max(l.len());
            }
            continue;
        }
        if p.first() == Some(&b'T') {
            break;
        }
    }
    let (produced, delivered, dropped) = event_counters(&mut s);
    assert!(lines > 10, "events arrived: {lines}");
    assert!(
        longest > 600,
        "the events were long ({longest} bytes): {sample}"
    );
    assert_eq!(
        delivered - delivered_before,
        lines,
        "delivered must count exactly the lines that reached the host"
    );
    assert_eq!(
        produced,
        delivered + dropped,
        "stopped: nothing is queued, so produced = delivered + dropped"
    );
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

/// The kernel prints one activity line per second while it runs.
fn keeps_running(vm: &mut Qemu, what: &str) {
    let activity = |vm: &Qemu| vm.console().matches("activity:").count();
    let before = activity(vm);
    vm.wait_for(what, Duration::from_secs(40), |vm| {
        (activity(vm) >= before + 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn a_ctrl_c_byte_on_an_unattached_line_does_not_park_the_kernel() {
    let mut vm = boot();
    let mut s = connect(&mut vm);
    // A lone Ctrl-C (or noise that looks like one) with nobody attached:
    // the stop is tentative and ends when no valid packet follows.
    s.send_raw(b"\x03");
    keeps_running(&mut vm, "the kernel to resume after a lone Ctrl-C");
    s.send_raw(b"\x03\x03\x03");
    keeps_running(&mut vm, "the kernel to resume after a few Ctrl-C bytes");
    // A real host still attaches and gets a fresh answer.
    s.attach();
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn kdbg_idle_resumes_a_kernel_whose_host_vanished_while_it_was_stopped() {
    let mut vm = Qemu::boot("kdbg.idle=2").expect("boot the kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts");
    let stats = elf_address(&vm.config().kernel, "&kernel::workloads::STATS");
    let fib = elf_address(&vm.config().kernel, "&kernel::workloads::fib");
    {
        let mut s = connect(&mut vm);
        s.attach();
        // Within the timeout the kernel stays stopped.
        std::thread::sleep(Duration::from_millis(500));
        assert!(s.ask("?").starts_with('T'));
        // A breakpoint the vanished host leaves behind must not stop the
        // kernel again once the stub took the host as gone.
        assert_eq!(s.ask(&format!("Z0,{fib:x},1")), "OK");
        // The host vanishes (no `D`) with the kernel stopped.
    }
    keeps_running(&mut vm, "the kernel to resume after kdbg.idle=2 seconds");
    let mut s = connect(&mut vm);
    s.attach();
    runs_until_interrupted(&mut s, stats);
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn kretprobe_instances_beyond_the_memory_budget_are_an_error_not_a_panic() {
    let mut vm = boot();
    let stats = elf_address(&vm.config().kernel, "&kernel::workloads::STATS");
    let mut s = connect(&mut vm);
    s.attach();
    let memory = |s: &mut Raw| -> (u64, u64) {
        let (console, r) = s.monitor("events");
        assert_eq!(r, "OK");
        let row = console
            .lines()
            .find(|l| l.starts_with("probe-memory "))
            .unwrap_or_else(|| panic!("no probe-memory row: {console}"))
            .to_string();
        let field = |n: &str| -> u64 {
            row.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{n}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{n} in {row}"))
        };
        (field("used"), field("budget"))
    };
    let (used0, budget) = memory(&mut s);
    let mut ids = Vec::new();
    let mut refused = 0;
    for _ in 0..72 {
        let (console, r) = s.monitor("kretprobe fib maxactive=4096");
        assert_eq!(r, "OK");
        if let Some(id) = console
            .split_whitespace()
            .find_map(|w| w.strip_prefix("id="))
        {
            ids.push(id.to_string());
        } else {
            assert!(
                console.contains("error code=no-memory") && console.contains("budget"),
                "{console}"
            );
            refused += 1;
        }
        let (used, b) = memory(&mut s);
        assert!(used <= b, "{used} > {b}");
    }
    assert!(
        refused > 0 && !ids.is_empty(),
        "{} set, {refused} refused",
        ids.len()
    );
    // Deleting them gives the memory back.
    for id in &ids {
        let (_, r) = s.monitor(&format!("probe delete {id}"));
        assert_eq!(r, "OK");
    }
    assert_eq!(memory(&mut s), (used0, budget));
    let (console, _) = s.monitor("kretprobe fib maxactive=4096");
    assert!(
        console.contains("id="),
        "room again after the deletes: {console}"
    );
    runs_until_interrupted(&mut s, stats);
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}
