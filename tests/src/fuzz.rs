//! The stub's protocol fuzzer: generated hostile input on the real stub's
//! line (the kernel in QEMU), with invariants checked after every batch.
//!
//! Inputs: garbage bytes, bad checksums, truncated and oversized frames,
//! wild `m`/`M`/`X`, `Z0`-`Z4` anywhere, bad thread ids, `qXfer` offsets,
//! `monitor` with garbage arguments, bare `vCont`, and the ordinary queries.
//! Every byte sent is also fed to the stub's own framer compiled for the
//! host ([`stub::framer::Framer`]), which predicts exactly which NAKs and
//! which packets the stub sees; each packet gets exactly one reply of the
//! form its request allows.
//!
//! After every batch: breakpoints the batch set are removed, the kernel is
//! continued and interrupted and its workload counters must have grown;
//! `monitor events` must satisfy produced = delivered + dropped exactly
//! (the kernel is stopped, so nothing is queued) and `delivered` must have
//! grown by exactly the event lines that reached this host. Between
//! batches the fuzzer reconnects in every way a host can go away (detach,
//! drop while stopped, drop while running, drop mid-packet, drop with a
//! stop reply in flight, a new host that never sends `qSupported`), and each
//! new connection must get a fresh answer.
//!
//! A failing batch is minimized (inputs dropped while the failure still
//! reproduces on a fresh kernel) and saved as a replayable file: one input
//! per line, hex-encoded (`replay` runs it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stub::framer::{Frame, Framer, MAX_PACKET};

use crate::Qemu;
use crate::rsp::{
    Raw, Sent, checksum, elf_address, hex, is_console, packet, symbol, unhex, workload_total,
};

/// What a run does.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Inputs to send in total.
    pub inputs: usize,
    /// Reconnects to make in total (spread over the run).
    pub reconnects: usize,
    /// Inputs per batch (invariants are checked after each).
    pub batch: usize,
    /// Where a minimized failing input is saved.
    pub save_dir: PathBuf,
}

/// What a finished run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub inputs: usize,
    pub batches: usize,
    pub reconnects: usize,
    pub bytes_sent: usize,
    pub packets: usize,
    pub naks: usize,
    pub errors: usize,
    pub events_delivered: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} inputs in {} batches, {} reconnects, {} bytes sent, {} packets answered \
             ({} error replies), {} NAKs as predicted, {} events delivered and counted, {:.0} s",
            self.inputs,
            self.batches,
            self.reconnects,
            self.bytes_sent,
            self.packets,
            self.errors,
            self.naks,
            self.events_delivered,
            self.elapsed.as_secs_f64()
        )
    }
}

/// A deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The form a reply must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Anything (a packet the fuzzer did not make on purpose).
    Any,
    /// Hex of at most `max` bytes, or `Enn`.
    Memory { max: usize },
    /// `OK` or `Enn`.
    OkOrError,
    /// `OK`, `Enn` or empty (unsupported).
    OkErrorOrEmpty,
    /// `Enn`.
    Error,
    /// A `T` stop reply.
    Stop,
    /// The register file (hex, fixed length) or `Enn`.
    Registers,
    /// `l`/`m` + data, or `Enn`.
    Xfer,
    /// `PacketSize=...`.
    Supported,
    /// Monitor output ended by `OK`/`Enn`.
    Monitor,
}

impl Check {
    fn accepts(self, r: &[u8]) -> bool {
        let err = r.len() == 3 && r[0] == b'E' && r[1..].iter().all(|c| c.is_ascii_hexdigit());
        match self {
            Check::Any => true,
            Check::Memory { max } => {
                err || (r.len().is_multiple_of(2)
                    && r.len() <= 2 * max
                    && r.iter().all(|c| c.is_ascii_hexdigit()))
            }
            Check::OkOrError | Check::Monitor => err || r == b"OK",
            Check::OkErrorOrEmpty => err || r == b"OK" || r.is_empty(),
            Check::Error => err,
            Check::Stop => r.first() == Some(&b'T'),
            Check::Registers => {
                err || (!r.is_empty()
                    && r.len().is_multiple_of(2)
                    && r.iter().all(|c| c.is_ascii_hexdigit()))
            }
            Check::Xfer => err || matches!(r.first(), Some(b'l' | b'm')),
            Check::Supported => r.starts_with(b"PacketSize="),
        }
    }
}

/// One generated input: the bytes, and the reply its own packet (if it
/// makes one) must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub bytes: Vec<u8>,
    pub check: Check,
}

impl Input {
    fn packet(body: &[u8], check: Check) -> Input {
        Input {
            bytes: packet(body),
            check,
        }
    }
}

/// Addresses worth aiming at: text, data, page edges, unmapped and
/// non-canonical ones, the top of the address space.
#[derive(Clone, Debug)]
pub struct Targets {
    pub text: Vec<u64>,
    pub data: Vec<u64>,
}

impl Targets {
    fn addr(&self, rng: &mut Rng) -> u64 {
        match rng.below(10) {
            0 | 1 => rng.pick(&self.text) + rng.below(64),
            2 | 3 => rng.pick(&self.data) + rng.below(64),
            4 => rng.pick(&[0, 0xfff, 0x1000, 0x1ff000, 0x200000, 0xfffff000, 0xfffffc00]),
            5 => rng.pick(&[
                0x1_0000_0000,
                0xdead_0000_0000,
                0x8000_0000_0000,
                0xffff_8000_0000_0000,
                u64::MAX,
                u64::MAX - 7,
            ]),
            6 => 0x100000 + rng.below(0x400000),
            7 => rng.below(0x1_0000_0000),
            _ => rng.next_u64(),
        }
    }
}

fn len(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => 0,
        1 => rng.pick(&[1, 2, 4, 8]),
        2 => rng.pick(&[0x7ff, 0x800, 0x801, 0x1000, 0x10000]),
        3 => u64::MAX,
        4 => rng.next_u64() >> rng.below(64),
        _ => rng.below(0x100),
    }
}

const MONITOR_WORDS: &[&str] = &[
    "help",
    "tasks",
    "events",
    "lookup",
    "kprobe",
    "jprobe",
    "kretprobe",
    "probes",
    "probe",
    "retinst",
    "frobnicate",
    "",
    "probe delete",
    "probe disable",
    "probe enable",
];
const MONITOR_ARGS: &[&str] = &[
    "fib",
    "sum8",
    "sys_open",
    "insn_ret_imm16",
    "fib+1",
    "fib+4",
    "0x0",
    "0xffffffffffffffff",
    "maxactive=4096",
    "maxactive=0",
    "maxactive=99999999999999999999",
    "stack=64",
    "stack=-1",
    "fetch=str64@arg0",
    "fetch=u64@",
    "fetch=",
    "1",
    "999",
    "-1",
    "stub::machine::Session::stop",
    "kernel::workloads::fib",
    "\u{7f}\u{1}",
    "=",
    "all",
];

/// Generates one input.
pub fn generate(rng: &mut Rng, t: &Targets) -> Input {
    let garbage = |rng: &mut Rng, n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| match rng.below(10) {
                0 => rng.pick(b"$#+-}*\x03"),
                1..=3 => rng.pick(b"0123456789abcdef"),
                _ => rng.below(256) as u8,
            })
            .collect()
    };
    match rng.below(20) {
        // Oversized frames cost 4 KB of line time each: one in 100.
        4 if !rng.chance(20) => Input::packet(b"qC", Check::Any),
        0 | 1 => {
            let n = 1 + rng.below(64) as usize;
            Input {
                bytes: garbage(rng, n),
                check: Check::Any,
            }
        }
        2 => {
            // A bad checksum on an ordinary request.
            let body = format!("m{:x},{:x}", t.addr(rng), len(rng) & 0xfff);
            let sum = checksum(body.as_bytes()).wrapping_add(1 + rng.below(255) as u8);
            let mut bytes = vec![b'$'];
            bytes.extend_from_slice(body.as_bytes());
            if rng.chance(20) {
                bytes.extend_from_slice(b"#z1");
            } else {
                bytes.extend_from_slice(format!("#{sum:02x}").as_bytes());
            }
            Input {
                bytes,
                check: Check::Any,
            }
        }
        3 => {
            // Truncated: a packet start that never ends (the next `$`
            // restarts the framer).
            let body = format!("qRcmd,{}", hex(b"help"));
            let cut = 1 + rng.below(body.len() as u64) as usize;
            let mut bytes = vec![b'$'];
            bytes.extend_from_slice(&body.as_bytes()[..cut]);
            Input {
                bytes,
                check: Check::Any,
            }
        }
        4 => {
            // Oversized (sometimes by exactly one byte).
            let n = if rng.chance(30) {
                MAX_PACKET - 3
            } else {
                MAX_PACKET - 3 + rng.below(64) as usize
            };
            let body: Vec<u8> = (0..n).map(|_| b'a' + rng.below(26) as u8).collect();
            Input {
                bytes: packet(&body),
                check: Check::Any,
            }
        }
        5..=7 => {
            let body = match rng.below(6) {
                0 => format!("m{:x}", t.addr(rng)),
                1 => format!("m{:x},", t.addr(rng)),
                2 => format!("m,{:x}", len(rng)),
                _ => format!("m{:x},{:x}", t.addr(rng), len(rng)),
            };
            Input::packet(
                body.as_bytes(),
                Check::Memory {
                    max: MAX_PACKET / 2,
                },
            )
        }
        8 => {
            // Writes only where they must fail: unmapped, non-canonical,
            // page 0, malformed (a wild write to mapped memory corrupts the
            // kernel as it would on any debugger).
            let addr = rng.pick(&[0u64, 0x10, 0x1_0000_0000, 0xdead_0000_0000, u64::MAX - 3]);
            let n = rng.below(16) as usize;
            let data: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            let body = match rng.below(4) {
                0 => format!("M{addr:x},{n:x}:{}", hex(&data)),
                1 => format!("M{addr:x},{:x}:{}", n + 1, hex(&data)),
                2 => format!("M{addr:x},{n:x}"),
                _ => {
                    let mut b = format!("X{addr:x},{n:x}:").into_bytes();
                    b.extend(data.iter().map(|&c| {
                        if c == b'$' || c == b'#' || c == b'}' || c == b'*' {
                            b'a'
                        } else {
                            c
                        }
                    }));
                    return Input::packet(&b, Check::OkOrError);
                }
            };
            Input::packet(body.as_bytes(), Check::OkOrError)
        }
        9 | 10 => {
            let kind = rng.below(5);
            let addr = t.addr(rng);
            let l = rng.pick(&[1u64, 2, 4, 8, 3, 0, 16]);
            let body = format!("Z{kind},{addr:x},{l:x}");
            Input::packet(body.as_bytes(), Check::OkErrorOrEmpty)
        }
        11 => {
            let tid = match rng.below(6) {
                0 => "-1".to_string(),
                1 => "0".to_string(),
                2 => format!("p1.{:x}", rng.below(16)),
                3 => format!("{:x}", rng.next_u64()),
                4 => "zz".to_string(),
                _ => format!("{:x}", rng.below(12)),
            };
            let (body, check) = match rng.below(4) {
                0 => (format!("Hg{tid}"), Check::OkOrError),
                1 => (format!("Hc{tid}"), Check::OkOrError),
                2 => (format!("T{tid}"), Check::OkOrError),
                _ => (format!("qThreadExtraInfo,{tid}"), Check::Any),
            };
            Input::packet(body.as_bytes(), check)
        }
        12 => {
            let annex = rng.pick(&["target.xml", "target.xml", "nope.xml", ""]);
            let body = format!(
                "qXfer:features:read:{annex}:{:x},{:x}",
                rng.below(8000),
                len(rng)
            );
            Input::packet(body.as_bytes(), Check::Xfer)
        }
        13 | 14 => {
            let mut text = rng.pick(MONITOR_WORDS).to_string();
            for _ in 0..rng.below(4) {
                text.push(' ');
                if rng.chance(15) {
                    let n = 1 + rng.below(12) as usize;
                    text.extend(garbage(rng, n).iter().map(|&b| char::from(b)));
                } else {
                    let arg: &str = rng.pick(MONITOR_ARGS);
                    text.push_str(arg);
                }
            }
            let body = format!("qRcmd,{}", hex(text.as_bytes()));
            Input::packet(body.as_bytes(), Check::Monitor)
        }
        15 => {
            let bare: &[u8] = rng.pick(&[b"vCont".as_slice(), b"vCont;"]);
            Input::packet(bare, Check::Error)
        }
        16 => Input::packet(b"g", Check::Registers),
        17 => Input::packet(format!("p{:x}", rng.below(0x40)).as_bytes(), Check::Any),
        18 => Input::packet(b"?", Check::Stop),
        _ => Input::packet(
            rng.pick(&[
                b"qC".as_slice(),
                b"qfThreadInfo",
                b"qsThreadInfo",
                b"qAttached",
                b"vCont?",
                b"vMustReplyEmpty",
                b"qOffsets",
                b"qTStatus",
                b"QStartNoAckMode",
            ]),
            Check::Any,
        ),
    }
}

/// A packet body the fuzzer may let through when it is formed by accident
/// (garbage, cut packets): nothing that resumes, kills, detaches, writes
/// memory or registers, or sets a breakpoint the fuzzer does not track.
pub fn harmless(body: &[u8]) -> bool {
    const ALLOWED: &[&[u8]] = &[
        b"q",
        b"Q",
        b"g",
        b"p",
        b"m",
        b"H",
        b"?",
        b"T",
        b"vCont?",
        b"vMustReplyEmpty",
    ];
    body.is_empty() || ALLOWED.iter().any(|a| body.starts_with(a))
}

/// What the stub must send for one input, predicted by the host framer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Nak,
    Reply { check: Check, request: Vec<u8> },
}

/// Feeds `bytes` to `framer`; returns what the stub will send, or `None`
/// when an accidental packet would be harmful (the caller replaces the
/// input).
pub fn predict(framer: &mut Framer, input: &Input) -> Option<Vec<Expect>> {
    let own = packet_of(&input.bytes);
    let mut out = Vec::new();
    for &b in &input.bytes {
        match framer.feed(b) {
            Frame::BadChecksum | Frame::Oversized => out.push(Expect::Nak),
            Frame::Packet => {
                let frame = framer.packet().to_vec();
                let body = frame[1..frame.len() - 3].to_vec();
                let check = if Some(frame.as_slice()) == own.as_deref() {
                    input.check
                } else if harmless(&body) {
                    Check::Any
                } else {
                    return None;
                };
                out.push(Expect::Reply {
                    check,
                    request: body,
                });
            }
            _ => {}
        }
    }
    Some(out)
}

fn packet_of(bytes: &[u8]) -> Option<Vec<u8>> {
    (bytes.first() == Some(&b'$') && bytes.len() >= 4 && bytes[bytes.len() - 3] == b'#')
        .then(|| bytes.to_vec())
}

/// A replacement that can never complete a packet: in the checksum state
/// `z` is a bad digit (one NAK), elsewhere it is ignored or body.
fn defused() -> Input {
    Input {
        bytes: b"zz".to_vec(),
        check: Check::Any,
    }
}

/// Why a batch failed.
#[derive(Clone, Debug)]
pub struct Failure {
    pub what: String,
    pub inputs: Vec<Input>,
}

/// A live connection with the fuzzer's bookkeeping.
struct Conn {
    raw: Raw,
    framer: Framer,
    /// Event lines received since the last counter check.
    event_lines: u64,
    delivered: Option<u64>,
    /// The kernel ran under this connection and its stop drained the
    /// ring: nothing is queued while it is stopped from then on (events
    /// of a time nobody was attached wait in the ring until the first run).
    drained: bool,
}

impl Conn {
    fn open(vm: &mut Qemu) -> Result<Conn, String> {
        let addr = vm
            .wait_for_stub_port(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        let raw = Raw::connect(addr).map_err(|e| format!("connect: {e}"))?;
        Ok(Conn {
            raw,
            framer: Framer::new(),
            event_lines: 0,
            delivered: None,
            drained: false,
        })
    }

    /// The next ack/NAK/packet within `timeout`, counting (and skipping)
    /// event lines.
    fn next(&mut self, timeout: Duration) -> Option<Sent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let s = self.raw.next_sent(left)?;
            if let Sent::Packet(p) = &s
                && is_console(p)
            {
                let text = String::from_utf8_lossy(&unhex(&p[1..])).into_owned();
                if text.starts_with("event ") || text.starts_with("drops ") {
                    self.event_lines +=
                        text.lines().filter(|l| l.starts_with("event ")).count() as u64;
                    if left.is_zero() {
                        return None;
                    }
                    continue;
                }
            }
            return Some(s);
        }
    }

    /// Sends a request the fuzzer makes itself and returns its reply
    /// (console output of a monitor command in `console`).
    fn ask(&mut self, body: &str, console: &mut String) -> Result<String, String> {
        let bytes = packet(body.as_bytes());
        for &b in &bytes {
            self.framer.feed(b);
        }
        self.raw.send_raw(&bytes);
        loop {
            match self.next(crate::rsp::REPLY) {
                None => return Err(format!("no reply to {body}")),
                Some(Sent::Ack) => {}
                Some(Sent::Nak) => return Err(format!("unexpected NAK for {body}")),
                Some(Sent::Packet(p)) if is_console(&p) => {
                    console.push_str(&String::from_utf8_lossy(&unhex(&p[1..])))
                }
                Some(Sent::Packet(p)) => return Ok(String::from_utf8_lossy(&p).into_owned()),
            }
        }
    }

    fn attach(&mut self) -> Result<(), String> {
        let mut c = String::new();
        let sup = self.ask("qSupported:multiprocess+;swbreak+;hwbreak+", &mut c)?;
        if !sup.starts_with("PacketSize=") {
            return Err(format!(
                "a new connection got no fresh qSupported answer: {sup}"
            ));
        }
        let ack = self.ask("QStartNoAckMode", &mut c)?;
        if ack != "OK" {
            return Err(format!("QStartNoAckMode: {ack}"));
        }
        let q = self.ask("?", &mut c)?;
        if !q.starts_with('T') {
            return Err(format!("a new connection got no stop reply to `?`: {q}"));
        }
        self.ask("qRcmd,73747265616d2074657874", &mut c)?; // stream text
        self.delivered = Some(self.counters()?.1);
        self.event_lines = 0;
        Ok(())
    }

    /// `monitor events`: (produced, delivered, dropped).
    fn counters(&mut self) -> Result<(u64, u64, u64), String> {
        let mut console = String::new();
        let row = self.ask("qRcmd,6576656e7473", &mut console)?; // "events"
        if row != "OK" {
            return Err(format!("monitor events: {row}"));
        }
        let field = |name: &str| -> Option<u64> {
            console
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
        };
        match (field("produced"), field("delivered"), field("dropped")) {
            (Some(p), Some(d), Some(x)) => Ok((p, d, x)),
            _ => Err(format!("monitor events row: {console}")),
        }
    }

    /// Brings the stub's framer (and ours) back between packets after a
    /// batch that may end inside one: `#zz` ends any partial frame with
    /// exactly one NAK.
    fn sync(&mut self) -> Result<(), String> {
        if !self.framer.busy() {
            return Ok(());
        }
        let mut naks = 0;
        for &b in b"#zz" {
            if matches!(self.framer.feed(b), Frame::BadChecksum | Frame::Oversized) {
                naks += 1;
            }
        }
        self.raw.send_raw(b"#zz");
        while naks > 0 {
            match self.next(crate::rsp::REPLY) {
                Some(Sent::Nak) => naks -= 1,
                Some(Sent::Ack) => {}
                other => return Err(format!("sync: expected a NAK, got {other:?}")),
            }
        }
        Ok(())
    }
}

/// The kernel under fuzzing.
struct Rig {
    vm: Qemu,
    /// Ids of the fuzzer's own probes (kept across batches).
    keep: Vec<String>,
    /// The commands that made them.
    own: Vec<&'static str>,
    stats: u64,
    targets: Targets,
}

fn boot(kernel_probes: bool) -> Result<Rig, String> {
    let mut vm = Qemu::boot_with("", |c| c.timeout = Duration::from_secs(24 * 3600))
        .map_err(|e| e.to_string())?;
    vm.wait_for_console("workload tasks started", Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let kernel = vm.config().kernel.clone();
    let stats = elf_address(&kernel, "&kernel::workloads::STATS");
    let text = [
        "fib",
        "sum8",
        "sys_open",
        "spawn_task",
        "stub::machine::Session::stop",
    ]
    .iter()
    .filter_map(|f| symbol(&kernel, f))
    .collect::<Vec<_>>();
    let data = vec![
        stats,
        elf_address(&kernel, "&kernel::workloads::NEXT_PID"),
        symbol(&kernel, "stub::machine::SESSION").unwrap_or(stats),
        symbol(&kernel, "stub::machine::PACKET_BUFFER").unwrap_or(stats),
    ];
    let _ = kernel_probes;
    Ok(Rig {
        vm,
        keep: Vec::new(),
        own: vec!["kretprobe sys_open", "jprobe spawn_task"],
        stats,
        targets: Targets { text, data },
    })
}

/// Sends one batch and checks every reply; then the invariants.
/// Reads the next answer and checks it against what input `i` predicts.
fn check_one(
    conn: &mut Conn,
    inputs: &[Input],
    i: usize,
    e: &Expect,
    report: &mut Report,
) -> Result<(), String> {
    let shown = |i: usize| String::from_utf8_lossy(&inputs[i].bytes).into_owned();
    let got = loop {
        match conn.next(crate::rsp::REPLY) {
            None => {
                return Err(format!(
                    "input {i} {:?}: no answer (expected {e:?})",
                    shown(i)
                ));
            }
            Some(Sent::Ack) => continue,
            Some(Sent::Packet(p)) if is_console(&p) => continue,
            Some(s) => break s,
        }
    };
    match (e, &got) {
        (Expect::Nak, Sent::Nak) => report.naks += 1,
        (Expect::Reply { check, request }, Sent::Packet(p)) => {
            if !check.accepts(p) {
                return Err(format!(
                    "input {i}: reply {:?} to {:?} is not {check:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(request)
                ));
            }
            report.packets += 1;
            if p.first() == Some(&b'E') && p.len() == 3 {
                report.errors += 1;
            }
        }
        _ => {
            return Err(format!(
                "input {i} {:?}: got {got:?}, the framer predicts {e:?}",
                shown(i)
            ));
        }
    }
    Ok(())
}

fn run_batch(
    rig: &mut Rig,
    conn: &mut Conn,
    inputs: &[Input],
    report: &mut Report,
) -> Result<(), String> {
    // Inputs are pipelined: up to WINDOW answers may be outstanding
    // (bounded, so neither side's buffers fill), each checked in order.
    const WINDOW: usize = 16;
    let mut outstanding: std::collections::VecDeque<(usize, Expect)> = Default::default();
    for (i, input) in inputs.iter().enumerate() {
        let Some(expect) = predict(&mut conn.framer, input) else {
            return Err(format!("input {i} is not harmless (generator bug)"));
        };
        conn.raw.send_raw(&input.bytes);
        report.bytes_sent += input.bytes.len();
        outstanding.extend(expect.into_iter().map(|e| (i, e)));
        while outstanding.len() > WINDOW {
            if let Some((k, e)) = outstanding.pop_front() {
                check_one(conn, inputs, k, &e, report)?;
            }
        }
        report.inputs += 1;
    }
    while let Some((k, e)) = outstanding.pop_front() {
        check_one(conn, inputs, k, &e, report)?;
    }
    // Nothing more may arrive (a doubled reply, a stray NAK).
    while let Some(extra) = conn.next(Duration::from_millis(50)) {
        if extra != Sent::Ack {
            return Err(format!("unpredicted output after the batch: {extra:?}"));
        }
    }
    invariants(rig, conn, inputs, report)
}

fn invariants(
    rig: &mut Rig,
    conn: &mut Conn,
    inputs: &[Input],
    report: &mut Report,
) -> Result<(), String> {
    let mut console = String::new();
    conn.sync()?;
    // Remove every breakpoint the batch may have set.
    for input in inputs {
        if let Some(body) = packet_of(&input.bytes).map(|p| p[1..p.len() - 3].to_vec())
            && body.first() == Some(&b'Z')
        {
            let z = format!("z{}", String::from_utf8_lossy(&body[1..]));
            let r = conn.ask(&z, &mut console)?;
            if !Check::OkErrorOrEmpty.accepts(r.as_bytes()) {
                return Err(format!("{z}: {r}"));
            }
        }
    }
    conn.ask("Hg0", &mut console)?;
    // Probes the batch's monitor commands registered go (a probe on a hot
    // function would flood the line for the rest of the run).
    let mut listing = String::new();
    conn.ask(&format!("qRcmd,{}", hex(b"probes")), &mut listing)?;
    let extra: Vec<String> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("probe id="))
        .filter_map(|r| r.split_whitespace().next())
        .filter(|id| !rig.keep.iter().any(|k| k == id))
        .map(str::to_string)
        .collect();
    // The fuzzer's own probes come back if a batch deleted them.
    for (cmd, id) in rig.own.iter().zip(rig.keep.iter_mut()) {
        if !listing.contains(&format!("probe id={id} ")) {
            let mut out = String::new();
            conn.ask(&format!("qRcmd,{}", hex(cmd.as_bytes())), &mut out)?;
            if let Some(new) = out.split_whitespace().find_map(|w| w.strip_prefix("id=")) {
                *id = new.to_string();
            }
        }
    }
    for chunk in extra.chunks(8) {
        let cmd = format!("probe delete {}", chunk.join(" "));
        let r = conn.ask(&format!("qRcmd,{}", hex(cmd.as_bytes())), &mut console)?;
        if r != "OK" {
            return Err(format!("{cmd}: {r}"));
        }
    }
    // produced = delivered + dropped (stopped: nothing queued), and
    // delivered grew by exactly the event lines this host received.
    let (produced, delivered, dropped) = conn.counters()?;
    if conn.drained && produced != delivered + dropped {
        return Err(format!(
            "counters do not add up while stopped: produced {produced} != delivered {delivered} + dropped {dropped}"
        ));
    }
    if conn.drained
        && let Some(before) = conn.delivered
        && delivered.checked_sub(before) != Some(conn.event_lines)
    {
        return Err(format!(
            "delivered grew by {} but {} event lines reached the host",
            delivered.wrapping_sub(before) as i64,
            conn.event_lines
        ));
    }
    report.events_delivered += conn.event_lines;
    conn.delivered = Some(delivered);
    conn.event_lines = 0;
    // The kernel still runs: counters grow across `c` + Ctrl-C, and no
    // stop arrives by itself.
    // On a loaded host a short run may see no progress: run longer
    // before calling it a hang (300 ms, then 1 s, then 4 s).
    let before = workload_total(&mut conn.raw, rig.stats);
    let mut after = before;
    for run in [300u64, 1000, 4000] {
        run_once(conn, Duration::from_millis(run))?;
        after = workload_total(&mut conn.raw, rig.stats);
        if after > before {
            break;
        }
    }
    if after <= before {
        return Err(format!(
            "the workloads did not run in 5.3 s of `c`: {before} -> {after}"
        ));
    }
    // The stop drained the events of the run: the next check counts them.
    conn.drained = true;
    if rig.vm.try_exit().is_some() {
        return Err(format!("the kernel died:\n{}", rig.vm.console()));
    }
    Ok(())
}

/// `c`, `run` of running with no stop reply, Ctrl-C, a T02 stop reply.
fn run_once(conn: &mut Conn, run: Duration) -> Result<(), String> {
    conn.raw.send("c");
    for &b in packet(b"c").iter() {
        conn.framer.feed(b);
    }
    let quiet = Instant::now() + run;
    while let Some(s) = conn.next(quiet.saturating_duration_since(Instant::now())) {
        // An ack is fine: a batch may have restarted the session (a
        // `qSupported` formed by accident, a malformed command), which
        // starts in ack mode as a new connection does.
        if s != Sent::Ack {
            return Err(format!("the kernel stopped by itself after `c`: {s:?}"));
        }
    }
    conn.raw.send_raw(b"\x03");
    let stop = loop {
        match conn.next(crate::rsp::REPLY) {
            Some(Sent::Packet(p)) => break String::from_utf8_lossy(&p).into_owned(),
            Some(_) => continue,
            None => return Err("no stop reply to Ctrl-C (the kernel hangs?)".into()),
        }
    };
    if !stop.starts_with("T02") {
        return Err(format!("Ctrl-C stop reply: {stop}"));
    }
    Ok(())
}

/// The ways a host goes away; each is followed by a fresh attach.
const RECONNECT_KINDS: usize = 6;

fn reconnect(rig: &mut Rig, conn: Conn, kind: usize) -> Result<Conn, String> {
    let mut conn = conn;
    let mut c = String::new();
    match kind {
        0 => {
            let r = conn.ask("D", &mut c)?;
            if r != "OK" {
                return Err(format!("D: {r}"));
            }
        }
        1 => {} // dropped while stopped
        2 => {
            conn.raw.send("c"); // dropped while running
            std::thread::sleep(Duration::from_millis(50));
        }
        3 => conn.raw.send_raw(b"$qSupported:multipro"), // mid-packet
        4 => {
            conn.raw.send("c"); // stop reply in flight
            std::thread::sleep(Duration::from_millis(30));
            conn.raw.send_raw(b"\x03");
        }
        _ => {}
    }
    drop(conn);
    std::thread::sleep(Duration::from_millis(20));
    let mut fresh = Conn::open(&mut rig.vm)?;
    if kind == 5 {
        // A host that asks `?` first (no qSupported): it must get an answer
        // too (the kernel stops for it).
        let mut c = String::new();
        let q = fresh.ask("?", &mut c)?;
        if !q.starts_with('T') {
            return Err(format!("`?` from a new host: {q}"));
        }
    }
    fresh.attach()?;
    Ok(fresh)
}

/// Runs the fuzzer. `Err` carries the failure (already minimized and saved
/// when `minimize` is set).
pub fn run(cfg: &Config, minimize: bool) -> Result<Report, String> {
    let started = Instant::now();
    let mut rig = boot(true)?;
    let mut conn = Conn::open(&mut rig.vm)?;
    conn.attach()?;
    // Probes so events flow while the kernel runs between batches.
    for cmd in rig.own.clone() {
        let mut out = String::new();
        conn.ask(&format!("qRcmd,{}", hex(cmd.as_bytes())), &mut out)?;
        let id = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("id="))
            .ok_or_else(|| format!("{cmd}: {out}"))?;
        rig.keep.push(id.to_string());
    }
    let mut rng = Rng::new(cfg.seed);
    let mut report = Report::default();
    let batches = cfg.inputs.div_ceil(cfg.batch.max(1));
    let every = batches
        .checked_div(cfg.reconnects)
        .map_or(usize::MAX, |e| e.max(1));
    let mut last_progress = Instant::now();
    for b in 0..batches {
        let n = cfg.batch.min(cfg.inputs - b * cfg.batch);
        let mut sim = conn.framer.clone();
        let mut inputs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut input = generate(&mut rng, &rig.targets);
            let mut probe = sim.clone();
            if predict(&mut probe, &input).is_none() {
                input = defused();
                probe = sim.clone();
                predict(&mut probe, &input);
            }
            sim = probe;
            inputs.push(input);
        }
        if let Err(what) = run_batch(&mut rig, &mut conn, &inputs, &mut report) {
            let what = format!("batch {b} (seed {}): {what}", cfg.seed);
            let saved = if minimize {
                let min = minimize_failure(&inputs);
                save(cfg, &min, &what).ok()
            } else {
                None
            };
            return Err(match saved {
                Some(p) => format!(
                    "{what}\nminimized input saved to {} (replay: cargo xtask fuzz --replay {})",
                    p.display(),
                    p.display()
                ),
                None => what,
            });
        }
        report.batches += 1;
        if report.reconnects < cfg.reconnects && (b + 1) % every == 0 {
            conn = reconnect(&mut rig, conn, report.reconnects % RECONNECT_KINDS).map_err(|e| {
                format!(
                    "reconnect {} (kind {}): {e}",
                    report.reconnects,
                    report.reconnects % RECONNECT_KINDS
                )
            })?;
            report.reconnects += 1;
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            last_progress = Instant::now();
            eprintln!("fuzz: {report}");
        }
    }
    while report.reconnects < cfg.reconnects {
        conn = reconnect(&mut rig, conn, report.reconnects % RECONNECT_KINDS)?;
        report.reconnects += 1;
        invariants(&mut rig, &mut conn, &[], &mut report)?;
    }
    let mut c = String::new();
    let _ = conn.ask("D", &mut c);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Replays `inputs` on a fresh kernel: `Err` if it fails.
pub fn replay(inputs: &[Input]) -> Result<(), String> {
    let mut rig = boot(false)?;
    let mut conn = Conn::open(&mut rig.vm)?;
    conn.attach()?;
    let mut report = Report::default();
    run_batch(&mut rig, &mut conn, inputs, &mut report)
}

/// Drops inputs while the failure reproduces (halves first, then one by
/// one), each try on a fresh kernel, for at most three minutes.
fn minimize_failure(inputs: &[Input]) -> Vec<Input> {
    // Each try boots a kernel: stop after MINIMIZE_BUDGET (the suite must
    // stay fast even when it fails) with what is minimal so far.
    const MINIMIZE_BUDGET: Duration = Duration::from_secs(180);
    let started = Instant::now();
    let mut cur = inputs.to_vec();
    if replay(&cur).is_ok() {
        return cur; // not reproducible alone: keep the batch as it was
    }
    let mut chunk = cur.len() / 2;
    while chunk >= 1 && started.elapsed() < MINIMIZE_BUDGET {
        let mut i = 0;
        while i < cur.len() && started.elapsed() < MINIMIZE_BUDGET {
            let mut cand = cur.clone();
            cand.drain(i..(i + chunk).min(cand.len()));
            if !cand.is_empty() && replay(&cand).is_err() {
                cur = cand;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    cur
}

fn check_name(c: Check) -> String {
    format!("{c:?}")
}

fn parse_check(s: &str) -> Check {
    match s {
        "OkOrError" => Check::OkOrError,
        "OkErrorOrEmpty" => Check::OkErrorOrEmpty,
        "Error" => Check::Error,
        "Stop" => Check::Stop,
        "Registers" => Check::Registers,
        "Xfer" => Check::Xfer,
        "Supported" => Check::Supported,
        "Monitor" => Check::Monitor,
        s if s.starts_with("Memory") => Check::Memory {
            max: MAX_PACKET / 2,
        },
        _ => Check::Any,
    }
}

/// Saves a failing input: a comment with the failure, then one input per
/// line (`CHECK HEX`).
pub fn save(cfg: &Config, inputs: &[Input], what: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(&cfg.save_dir)?;
    let path = cfg.save_dir.join(format!(
        "failure-seed{}-{}.rsp",
        cfg.seed,
        std::process::id()
    ));
    let mut text = String::new();
    for line in what.lines() {
        let _ = writeln!(text, "# {line}");
    }
    for i in inputs {
        let _ = writeln!(text, "{} {}", check_name(i.check), hex(&i.bytes));
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Loads a file written by [`save`].
pub fn load(path: &Path) -> std::io::Result<Vec<Input>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (check, bytes) = l.split_once(' ')?;
            Some(Input {
                bytes: unhex(bytes.trim().as_bytes()),
                check: parse_check(check),
            })
        })
        .collect())
}

/// Settings from the environment (`cargo xtask fuzz` sets them):
/// `KDBG_FUZZ_SEED`, `KDBG_FUZZ_INPUTS`, `KDBG_FUZZ_RECONNECTS`.
pub fn config_from_env(default_inputs: usize, default_reconnects: usize) -> Config {
    let get = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    Config {
        seed: get("KDBG_FUZZ_SEED", 0x6b64_6267),
        inputs: get("KDBG_FUZZ_INPUTS", default_inputs as u64) as usize,
        reconnects: get("KDBG_FUZZ_RECONNECTS", default_reconnects as u64) as usize,
        batch: get("KDBG_FUZZ_BATCH", 100) as usize,
        save_dir: crate::target_dir().join("kdbg").join("fuzz"),
    }
}
