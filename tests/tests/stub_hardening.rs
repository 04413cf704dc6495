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
    if let Some(p) = s.next(Duration::from_millis(1500)) {
        panic!(
            "the kernel stopped by itself after `c`: {:?}",
            String::from_utf8_lossy(&p)
        );
    }
    let stop = s.interrupt();
    assert!(stop.starts_with("T02"), "Ctrl-C stop: {stop}");
    let after = workload_total(s, stats);
    assert!(after > before, "workloads did not run: {before} -> {after}");
}

#[test]
fn a_step_interrupted_by_ctrl_c_does_not_stay_armed() {
    let mut vm = boot();
    let stats = elf_address(&vm.config().kernel, "&kernel::workloads::STATS");
    let mut s = connect(&mut vm);
    s.attach();
    // A step and a Ctrl-C in one write: the Ctrl-C's interrupt is pending
    // when the step resumes, so it is taken before the stepped instruction
    // runs and stops the kernel with the step still armed (T02, not the
    // step's T05). Every kind of stop must end the step.
    let mut interrupted = 0;
    for _ in 0..6 {
        s.send_raw(&[packet(b"s").as_slice(), b"\x03"].concat());
        let stop = s.reply();
        assert!(stop.starts_with('T'), "stop: {stop}");
        if stop.starts_with("T02") {
            interrupted += 1;
        }
        // Whatever the step did, `c` runs the kernel until the next Ctrl-C.
        runs_until_interrupted(&mut s, stats);
    }
    assert!(
        interrupted > 0,
        "no step was interrupted by its Ctrl-C: the test did not test the case"
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
