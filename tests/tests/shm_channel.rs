//! The shared-memory channel (issue 17): guest RAM backed by a file that
//! the shell maps (`kdbg --memory FILE`).
//!
//! - Memory through the mapping equals memory through the stub, byte for
//!   byte, for 10,000 random readable ranges (kernel text and data in the
//!   4 KiB-page region, heap and task stacks in 2 MiB pages, a probed
//!   function whose first byte is an int3 in RAM) with the kernel stopped,
//!   and the same error for 400 unmapped ones (page 0, above the 4 GiB
//!   identity map, non-canonical, the unmapped upper half).

use std::sync::mpsc;
use std::time::Duration;

use shell::guestmem::{GuestMem, Machine, Mapping};
use shell::rsp::{Client, Endpoint, RspError};
use tests::Qemu;

const TIMEOUT: Duration = Duration::from_secs(20);

fn boot_shared() -> Qemu {
    Qemu::boot_serving_with("", |c| c.share_memory = true)
}

fn connect(vm: &Qemu) -> Client {
    let ep: Endpoint = vm.stub_connect_arg().parse().expect("endpoint");
    let (tx, rx) = mpsc::channel();
    // Asynchronous output (events, stops) is not looked at here.
    std::thread::spawn(move || for _ in rx {});
    Client::connect(&ep, TIMEOUT, tx, shell::events::is_event).expect("connect to the stub")
}

/// Stops the kernel (a new connection may find it stopped already).
fn stop(c: &mut Client) {
    let q = c.request_str("?").expect("?");
    if !shell::rsp::client::is_stop_reply(q.as_bytes()) {
        c.interrupt(TIMEOUT).expect("stop the kernel");
    }
}

fn shm_row(c: &mut Client) -> proto::reply::ShmRow {
    let text = c.monitor("shm").expect("monitor shm");
    text.lines()
        .find_map(|l| proto::reply::ShmRow::parse(l).ok())
        .unwrap_or_else(|| panic!("no shm row in {text:?}"))
}

/// xorshift64*: reproducible addresses.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn code(e: &RspError) -> String {
    match e {
        RspError::Remote { code, .. } => code.clone(),
        other => format!("{other}"),
    }
}

#[test]
fn mapping_reads_equal_stub_reads() {
    let vm = boot_shared();
    let mut c = connect(&vm);
    // An int3 in RAM that the stub hides (the probed instruction's byte).
    let out = c.monitor("kprobe fib").expect("kprobe fib");
    assert!(out.contains("ok id="), "{out}");
    let fib: u64 = c
        .monitor("lookup fib")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .find_map(|w| w.strip_prefix("addr=").map(str::to_string))
        })
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .expect("fib's address");
    stop(&mut c);
    let row = shm_row(&mut c);
    // Binary reads (`x`) as the session enables them for kdbg's stub.
    c.binary_reads = None;
    assert!(row.ram_end >= 64 << 20, "ram_end {:#x}", row.ram_end);
    let map = Mapping::open(vm.memory_file().expect("shared RAM")).expect("map guest RAM");
    let g = std::sync::Arc::new(GuestMem::new(
        std::sync::Arc::new(map),
        Machine {
            cr3: row.cr3,
            low_end: 0,
            ram_start: row.ram_start,
            ram_end: row.ram_end,
            trampoline: row.tramp,
        },
    ));
    c.guest = Some(g.clone());

    // Readable: 10,000 random ranges inside 320 random pages, each page
    // read once whole through the stub (the UART is slow: one stub
    // request per range would take minutes) and compared with reads of
    // the ranges through the mapping, one read each.
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut pages: Vec<u64> = vec![fib & !0xfff];
    while pages.len() < 320 {
        let p = match pages.len() % 8 {
            // Kernel image: text, rodata, data, bss (4 KiB pages below 2 MiB).
            0..=2 => 0x10_0000 + rng.below(0x10_0000),
            // Image and heap beyond 2 MiB, task stacks (2 MiB pages).
            _ => 0x20_0000 + rng.below(row.ram_end - 0x20_0000),
        } & !0xfff;
        if !pages.contains(&p) {
            pages.push(p);
        }
    }
    let mut truth = std::collections::HashMap::new();
    for &p in &pages {
        let bytes = c
            .read_memory_stub(p, 4096)
            .expect("a RAM page through the stub");
        truth.insert(p, bytes);
    }
    // The stub's binary reads (`x`) equal its hex reads (`m`).
    assert_eq!(c.binary_reads, Some(true), "kdbg's stub answers `x`");
    for &p in pages.iter().take(24) {
        let hex = c.read_memory_m(p, 4096).expect("m");
        assert_eq!(hex, truth[&p], "x vs m at {p:#x}");
    }
    let mut same_ok = 0;
    for i in 0..10_000u64 {
        let page = pages[(i as usize) % pages.len()];
        let len = 1 + rng.below(32) as usize;
        let off = rng.below(4096 - len as u64) as usize;
        let addr = page + off as u64;
        let mapped = c
            .read_memory(addr, len)
            .unwrap_or_else(|e| panic!("{len} bytes at {addr:#x} through the mapping: {e}"));
        assert_eq!(
            mapped,
            truth[&page][off..off + len],
            "{len} bytes at {addr:#x}: mapping vs stub"
        );
        same_ok += 1;
    }
    let fib_bytes = c.read_memory(fib, 1).expect("fib");
    assert_ne!(
        fib_bytes[0], 0xcc,
        "the probe's int3 shows as the original byte"
    );
    // Unmapped: page 0, above the 4 GiB identity map, non-canonical, and
    // ranges that run from RAM into nothing: the same error both ways.
    let mut same_err = 0;
    for i in 0..400u64 {
        let len = 1 + rng.below(32) as usize;
        let addr = match i % 4 {
            0 => rng.below(0x1000 - 32),
            1 => 0x1_0000_0000 + rng.below(1 << 36),
            2 => 0x8000_0000_0000_0000 | rng.below(1 << 40),
            _ => 0xffff_8000_0000_0000 + rng.below(1 << 40),
        };
        let mapped = c.read_memory(addr, len);
        let stub = c.read_memory_stub(addr, len);
        match (&mapped, &stub) {
            (Err(a), Err(b)) => assert_eq!(code(a), code(b), "error at {addr:#x}"),
            _ => panic!("{len} bytes at {addr:#x}: mapping {mapped:?} vs stub {stub:?}"),
        }
        same_err += 1;
    }
    let mapped = g.mapped_reads.load(std::sync::atomic::Ordering::Relaxed);
    let fallback = g.stub_reads.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{same_ok} equal reads, {same_err} equal errors; pages from the mapping {mapped}, through the stub {fallback}"
    );
    assert_eq!((same_ok, same_err), (10_000, 400));
    assert!(
        mapped > 8 * fallback,
        "the mapping served {mapped} pages, the stub {fallback}"
    );
}

/// Runs a command that must succeed; its result.
fn must(k: &mut tests::kdbg::KdbgJson, line: &str) -> serde_json::Value {
    let v = k.run(line);
    assert_eq!(v["ok"], true, "`{line}` failed: {v}");
    v
}

/// `events 0`: (received by the shell, produced, delivered, dropped).
fn counters(k: &mut tests::kdbg::KdbgJson) -> (u64, u64, u64, u64) {
    let v = k.ok("events 0", "events");
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    (
        n(&v["received"]),
        n(&v["ring"]["produced"]),
        n(&v["ring"]["delivered"]),
        n(&v["ring"]["dropped"]),
    )
}

/// Waits until the ring is empty (produced = delivered + dropped) and
/// returns the counters then.
fn settled(k: &mut tests::kdbg::KdbgJson) -> (u64, u64, u64, u64) {
    for _ in 0..50 {
        let c = counters(k);
        if c.1 == c.2 + c.3 {
            return c;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the ring never emptied: {:?}", counters(k));
}

/// - A capture probe on `fib` (hundreds of hits per worker iteration) for
///   10 s, consumed straight from the rings in guest RAM: every produced
///   event is delivered or counted dropped (exact), and the shell received
///   exactly what the kernel counts delivered.
/// - The shell SIGKILLed mid-stream: the stub sees the heartbeat stop and
///   takes the rings back (its `shm` row shows no direct consumer, and a
///   client asking for the text stream gets `O` packets); a new shell
///   takes over from the ring's tail: no event twice (its timestamps on
///   the one CPU strictly increase) and the counters exact again; when it
///   leaves normally the rings are the stub's again.
#[test]
fn direct_events_are_exact_and_survive_a_killed_shell() {
    let mut vm = boot_shared();
    let mut k = tests::kdbg::KdbgJson::start(&vm, &[]);
    must(&mut k, "live off");
    let (r0, p0, d0, x0) = settled(&mut k);
    let set = must(&mut k, "kprobe fib");
    let id = tests::kdbg::probe_id(&set);
    must(&mut k, "sleep 10");
    must(&mut k, &format!("delete {id}"));
    let (r1, p1, d1, x1) = settled(&mut k);
    let (received, produced, delivered, dropped) = (r1 - r0, p1 - p0, d1 - d0, x1 - x0);
    eprintln!(
        "10 s of fib through the mapping: produced {produced}, delivered {delivered}, dropped {dropped}, shell received {received}"
    );
    assert!(
        produced > 10_000,
        "too few events to mean anything: {produced}"
    );
    assert_eq!(produced, delivered + dropped, "exact accounting");
    assert_eq!(
        received, delivered,
        "the shell got what the kernel delivered"
    );

    // Mid-stream SIGKILL.
    let set = must(&mut k, "kprobe fib");
    let id = tests::kdbg::probe_id(&set);
    must(&mut k, "sleep 2");
    k.kill();
    // The heartbeat stops; after STALL_SECS the stub drains again.
    std::thread::sleep(Duration::from_secs(stub::shm::STALL_SECS + 2));
    vm.assert_still_running(Duration::from_millis(100));
    {
        let mut c = connect(&vm);
        let row = shm_row(&mut c);
        assert_eq!(row.epoch & 1, 0, "the stub took the rings back: {row:?}");
        let _ = c.request_str("?");
        let _ = c.resume("c");
        let ok = c.monitor("stream text").expect("stream text");
        assert!(ok.contains("ok stream=text"), "{ok}");
        // The probe is still set: only the stub can make `delivered` grow
        // now (it streams the records as O packets to this client).
        let delivered = |c: &mut Client| {
            let text = c.monitor("events").expect("monitor events");
            text.lines()
                .find_map(|l| proto::reply::EventsRow::parse(l).ok())
                .expect("events row")
                .delivered
        };
        let before = delivered(&mut c);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = false;
        while !seen && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            seen = delivered(&mut c) > before;
        }
        assert!(
            seen,
            "the stub does not drain the rings after the shell died"
        );
        let _ = c.detach();
    }
    // A new shell takes over.
    let mut k = tests::kdbg::KdbgJson::start(&vm, &[]);
    let (r0, p0, d0, x0) = counters(&mut k);
    k.collect_for(Duration::from_secs(3));
    must(&mut k, &format!("delete {id}"));
    let (r1, p1, d1, x1) = settled(&mut k);
    let (received, produced, delivered, dropped) = (r1 - r0, p1 - p0, d1 - d0, x1 - x0);
    eprintln!(
        "after the SIGKILL: produced {produced}, delivered {delivered}, dropped {dropped}, shell received {received}"
    );
    assert!(received > 1_000, "{received}");
    assert!(p1 == d1 + x1, "exact accounting after the hand-overs");
    let _ = (produced, dropped);
    // No record twice: on the one CPU the timestamps strictly increase.
    let tscs: Vec<u64> = k
        .events(id)
        .iter()
        .filter_map(|e| e["tsc"].as_u64())
        .collect();
    assert!(tscs.len() > 1_000, "{} events shown", tscs.len());
    for w in tscs.windows(2) {
        assert!(
            w[0] < w[1],
            "an event twice or out of order: {} then {}",
            w[0],
            w[1]
        );
    }
    k.finish();
    // A shell that leaves normally hands the rings back at its detach.
    let mut c = connect(&vm);
    let row = shm_row(&mut c);
    assert_eq!(row.epoch & 1, 0, "rings handed back on leave: {row:?}");
}
