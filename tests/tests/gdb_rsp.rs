//! The GDB stub against hostile and unusual input over the raw socket (no
//! gdb): line noise, bad checksums, oversized and malformed packets, unknown
//! packets and monitor commands, a Ctrl-C flood, a host that vanishes
//! mid-session. After each, the stub still answers and the kernel still runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(60);
/// How long to let the kernel run before checking it is still alive.
const SETTLE: Duration = Duration::from_millis(300);
const REPLY: Duration = Duration::from_secs(20);

/// A minimal RSP peer (the shell has the real client; this one is
/// deliberately naive so the tests control every byte).
struct Raw {
    sock: TcpStream,
    pending: Vec<u8>,
}

fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn packet(body: &[u8]) -> Vec<u8> {
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    p
}

fn unhex(s: &[u8]) -> Vec<u8> {
    s.chunks(2)
        .filter_map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

impl Raw {
    fn connect(vm: &mut Qemu) -> Raw {
        let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
        let sock = TcpStream::connect(addr).expect("connect to the stub");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw {
            sock,
            pending: Vec::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write to the stub");
    }

    fn send(&mut self, body: &str) {
        let p = packet(body.as_bytes());
        self.send_raw(&p);
    }

    fn fill(&mut self) {
        let mut buf = [0u8; 4096];
        match self.sock.read(&mut buf) {
            Ok(0) => panic!("the stub closed the connection"),
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }

    /// The next control byte (`+`/`-`) or packet body, skipping nothing.
    fn next(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(&b) = self.pending.first() {
                if b == b'+' || b == b'-' {
                    self.pending.remove(0);
                    return Some(vec![b]);
                }
                if b != b'$' {
                    self.pending.remove(0);
                    continue;
                }
                if let Some(end) = self.pending.iter().position(|&c| c == b'#')
                    && self.pending.len() >= end + 3
                {
                    let body = self.pending[1..end].to_vec();
                    let sum = u8::from_str_radix(
                        std::str::from_utf8(&self.pending[end + 1..end + 3]).unwrap(),
                        16,
                    )
                    .unwrap();
                    assert_eq!(sum, checksum(&body), "stub sent a bad checksum");
                    self.pending.drain(..end + 3);
                    return Some(body);
                }
                break;
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.fill();
        }
    }

    /// The next packet body that is not an `O` console packet (those are
    /// collected into `console`).
    fn reply_with_console(&mut self, console: &mut String) -> String {
        loop {
            let p = self.next(REPLY).expect("a reply from the stub");
            if p == b"+" || p == b"-" {
                continue;
            }
            if p.first() == Some(&b'O') && p.len() > 1 && p != b"OK" {
                console.push_str(&String::from_utf8_lossy(&unhex(&p[1..])));
                continue;
            }
            return String::from_utf8_lossy(&p).into_owned();
        }
    }

    fn reply(&mut self) -> String {
        let mut c = String::new();
        self.reply_with_console(&mut c)
    }

    /// Sends and waits for the reply.
    fn ask(&mut self, body: &str) -> String {
        self.send(body);
        self.reply()
    }

    /// `monitor CMD`: the console text and the final reply.
    fn monitor(&mut self, cmd: &str) -> (String, String) {
        let hex: String = cmd.bytes().map(|b| format!("{b:02x}")).collect();
        self.send(&format!("qRcmd,{hex}"));
        let mut console = String::new();
        let r = self.reply_with_console(&mut console);
        (console, r)
    }

    /// Expects one control byte among the next ones.
    fn expect_byte(&mut self, want: u8) {
        let deadline = Instant::now() + REPLY;
        while Instant::now() < deadline {
            if let Some(p) = self.next(Duration::from_millis(500))
                && p == [want]
            {
                return;
            }
        }
        panic!("expected {:?} from the stub", want as char);
    }
}

/// Boots `serve` and waits until the kernel serves. A host that talks while
/// the kernel is still booting may see its first packet NAKed (the UART's
/// FIFOs are being set up); real clients (gdb, kdbg) resend, this naive
/// client does not, so these tests attach to a running kernel.
fn boot() -> Qemu {
    let mut vm = Qemu::boot("").expect("boot the kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts");
    vm.wait_for_stub_port(BOOT).expect("stub port");
    vm
}

#[test]
fn handshake_then_noise_bad_checksums_oversized_and_malformed_packets() {
    let mut vm = boot();
    let mut s = Raw::connect(&mut vm);
    // Noise before anything: ignored, the kernel keeps running.
    s.send_raw(b"hello\x00\xff\xfe garbage ### }}}");
    vm.assert_still_running(SETTLE);

    // Attach: the kernel stops and answers.
    let sup = s.ask("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386");
    assert!(sup.contains("PacketSize="), "qSupported reply: {sup}");
    let q = s.ask("?");
    assert!(q.starts_with('T') || q.starts_with('S'), "stop reply: {q}");
    assert!(q.contains("thread:"), "stop replies name a thread: {q}");

    // Bad checksum: NAK, then the same packet with the right one works.
    s.send_raw(b"$g#00");
    s.expect_byte(b'-');
    let g = s.ask("g");
    assert!(g.len() >= 16 * 16, "registers: {}", g.len());

    // Oversized: NAK, stub still fine.
    let big = vec![b'X'; 20_000];
    s.send_raw(&packet(&big));
    s.expect_byte(b'-');
    assert!(s.ask("?").contains("thread:"));

    // Malformed known packet: an error reply, never a crash.
    let m = s.ask("mzz,zz");
    assert!(m.starts_with('E'), "malformed m: {m}");
    // Unknown packet: empty reply.
    assert_eq!(s.ask("vFrobnicate;1"), "");
    // Unknown monitor command: an error row.
    let (console, r) = s.monitor("frobnicate now");
    assert!(console.contains("error code=unknown-command"), "{console}");
    assert_eq!(r, "OK");
    // After all that: memory at an unmapped address is an error, registers still read.
    let m = s.ask("mdead00000000,8");
    assert!(m.starts_with('E'), "unmapped read: {m}");
    let m = s.ask("m0,8");
    assert!(m.starts_with('E'), "page 0 is not mapped: {m}");
    // Continue and detach; the kernel runs on.
    s.send("c");
    std::thread::sleep(Duration::from_millis(300));
    s.send_raw(b"\x03");
    let stop = s.reply();
    assert!(stop.starts_with('T'), "Ctrl-C stop: {stop}");
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn ctrl_c_flood_gives_one_stop_and_vanishing_host_is_survived() {
    let mut vm = boot();
    {
        let mut s = Raw::connect(&mut vm);
        s.ask("qSupported:swbreak+");
        s.ask("?");
        s.send("c");
        std::thread::sleep(Duration::from_millis(300));
        s.send_raw(&[0x03; 64]);
        let stop = s.reply();
        assert!(stop.starts_with('T'), "stop: {stop}");
        // Exactly one stop: nothing else arrives.
        assert!(
            s.next(Duration::from_secs(1)).is_none(),
            "a second stop reply arrived"
        );
        // Continue and drop the connection without detaching.
        s.send("c");
    }
    std::thread::sleep(Duration::from_millis(500));
    vm.assert_still_running(Duration::ZERO);
    // A new host attaches (its qSupported starts a fresh session).
    let mut s = Raw::connect(&mut vm);
    let sup = s.ask("qSupported:swbreak+");
    assert!(sup.contains("PacketSize="), "{sup}");
    assert!(s.ask("?").contains("thread:"));
    let (console, r) = s.monitor("help");
    assert!(console.contains("kprobe LOC"), "{console}");
    assert_eq!(r, "OK");
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn a_dangling_packet_start_while_detached_does_not_hang_the_kernel() {
    let mut vm = Qemu::boot("serve").expect("boot the kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts");
    let mut s = Raw::connect(&mut vm);
    // A `$` with no end: looks like the start of a packet, then silence.
    s.send_raw(b"$qSupp\x00\xff");
    let activity = |vm: &Qemu| vm.console().matches("activity:").count();
    let before = activity(&vm);
    // serve prints one activity line per second while the kernel runs.
    vm.wait_for(
        "the kernel to keep running",
        Duration::from_secs(30),
        |vm| (activity(vm) >= before + 3).then_some(()),
    )
    .expect("the kernel resumed after the dangling packet start");
    // A real debugger still attaches.
    let sup = s.ask("qSupported:swbreak+");
    assert!(sup.contains("PacketSize="), "{sup}");
    assert!(s.ask("?").contains("thread:"));
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

/// The address of `expr` in `vm`'s kernel ELF (`tests::rsp::elf_address`).
fn elf_address(vm: &Qemu, expr: &str) -> u64 {
    tests::rsp::elf_address(&vm.config().kernel, expr)
}

/// Attaches in no-ack mode (as the kdbg shell does) and lets the kernel run.
fn attach_and_continue(s: &mut Raw) {
    assert!(
        s.ask("qSupported:multiprocess+;swbreak+;hwbreak+")
            .contains("PacketSize=")
    );
    assert_eq!(s.ask("QStartNoAckMode"), "OK");
    assert!(s.ask("?").contains("thread:"));
    s.send("c");
    std::thread::sleep(Duration::from_millis(300));
}

/// Sends `insert` while the kernel runs; the reply is `OK` and the next
/// packet is a stop reply containing `want` (the breakpoint fired).
fn live_insert_fires(s: &mut Raw, insert: &str, want: &str) -> String {
    assert_eq!(s.ask(insert), "OK", "{insert} while running");
    let stop = s.reply();
    assert!(
        stop.starts_with('T') && stop.contains(want),
        "{insert} sent while the kernel runs must stop it with `{want}`: {stop}"
    );
    stop
}

#[test]
fn breakpoints_and_watchpoints_sent_while_the_kernel_runs_fire() {
    let mut vm = boot();
    let fib = elf_address(&vm, "&kernel::workloads::fib");
    let next_pid = elf_address(&vm, "&kernel::workloads::NEXT_PID");
    let mut s = Raw::connect(&mut vm);
    attach_and_continue(&mut s);

    // Z0 (int3), Z1 (execute slot), Z2/Z4 (write and access watchpoints):
    // each sent while the kernel runs, each stops it.
    for (insert, want) in [
        (format!("Z0,{fib:x},1"), "swbreak".to_string()),
        (format!("Z1,{fib:x},1"), "hwbreak".to_string()),
        (format!("Z2,{next_pid:x},8"), format!("watch:{next_pid:x}")),
        (format!("Z4,{next_pid:x},8"), format!("awatch:{next_pid:x}")),
    ] {
        live_insert_fires(&mut s, &insert, &want);
        assert_eq!(s.ask(&format!("z{}", &insert[1..])), "OK");
        s.send("c");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A watchpoint removed while the kernel runs is really gone: no stop,
    // no fatal "debug exception nobody owns".
    assert_eq!(s.ask(&format!("Z2,{next_pid:x},8")), "OK");
    let _ = s.reply(); // it fires once (and the kernel stops) ...
    s.send("c");
    // ... and is removed while running. A hit can race the removal: then
    // the stop reply comes first and the `z2` is served while stopped.
    s.send(&format!("z2,{next_pid:x},8"));
    let mut stopped = false;
    loop {
        let r = s.reply();
        if r == "OK" {
            break;
        }
        assert!(r.starts_with('T') && !stopped, "reply to z2: {r}");
        stopped = true;
    }
    if stopped {
        s.send("c");
    }
    assert!(
        s.next(Duration::from_secs(2)).is_none(),
        "a removed watchpoint still stops the kernel"
    );
    vm.assert_still_running(Duration::ZERO);
    s.send_raw(b"\x03");
    assert!(s.reply().starts_with('T'));
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn stepi_leaves_no_trap_flag_in_the_reported_eflags() {
    let mut vm = boot();
    let fib = elf_address(&vm, "&kernel::workloads::fib");
    let mut s = Raw::connect(&mut vm);
    attach_and_continue(&mut s);
    s.send_raw(b"\x03");
    assert!(s.reply().starts_with('T'));
    assert_eq!(s.ask(&format!("Z0,{fib:x},1")), "OK");
    s.send("c");
    assert!(s.reply().contains("swbreak"));
    assert_eq!(s.ask(&format!("z0,{fib:x},1")), "OK");
    const TF: u32 = 1 << 8;
    const IF: u32 = 1 << 9;
    let eflags = |s: &mut Raw| {
        // gdb's x86_64 `g` layout: 16 GPRs, rip (8 bytes each), eflags (4).
        let g = s.ask("g");
        let bytes = unhex(g.as_bytes().get(272..280).expect("eflags in g"));
        u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    };
    let before = eflags(&mut s);
    for _ in 0..3 {
        let stop = s.ask("s");
        assert!(stop.starts_with('T'), "step: {stop}");
        let after = eflags(&mut s);
        assert_eq!(after & TF, 0, "the stub's TF shows in eflags {after:#x}");
        assert_eq!(after & IF, before & IF, "IF as the code had it");
    }
    s.send("c");
    std::thread::sleep(Duration::from_millis(200));
    s.send_raw(b"\x03");
    assert!(s.reply().starts_with('T'));
    assert_eq!(s.ask("D"), "OK");
    vm.assert_still_running(SETTLE);
}

#[test]
fn an_int3_the_kernel_expects_is_not_claimed_by_an_attached_debugger() {
    // The `trap` selftests run int3 sites registered with `trap::expect`;
    // with a debugger attached and the kernel running, those traps are the
    // kernel's, not stops for gdb.
    let mut vm = Qemu::boot("selftest=trap kdbg.wait").expect("boot the kernel");
    vm.wait_for_console("waiting for a debugger", BOOT)
        .expect("kdbg.wait stops the boot");
    let mut s = Raw::connect(&mut vm);
    attach_and_continue(&mut s);
    // Everything the stub sends until QEMU exits (the socket closes then).
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = std::mem::take(&mut s.pending);
    let exit = loop {
        if let Some(exit) = vm.try_exit() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the selftests did not finish (stopped in the stub?); stub sent {:?}\n{}",
            String::from_utf8_lossy(&seen),
            vm.console()
        );
        let mut buf = [0u8; 4096];
        match s.sock.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(100)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    };
    let console = vm.console();
    let sent = String::from_utf8_lossy(&seen);
    assert!(
        !sent.contains("$T") && !sent.contains("$S"),
        "the stub reported a kernel-owned int3 as a stop: {sent}\n{console}"
    );
    assert_eq!(exit, tests::KernelExit::Success, "console:\n{console}");
    assert!(console.contains(" passed, 0 failed"), "{console}");
}
