//! The host side: the stub's round trip and memory-read throughput over
//! TCP, the event stream's delivered rate with the ring's counters, and the
//! time from starting `kdbg` to its first prompt. QEMU runs without
//! `-icount` here: these are wall-clock figures of this machine.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use ::tests::{Qemu, Wiring};
use anyhow::{Context, Result};

use super::rsp::Client;

const TIMEOUT: Duration = Duration::from_secs(20);
/// Kernel text start (the linker script loads the image at 1 MiB).
const READ_BASE: u64 = 0x10_0000;
/// Round trips timed.
const ROUND_TRIPS: usize = 200;
/// How long the event stream is watched.
const STREAM_FOR: Duration = Duration::from_secs(5);
/// The function probed for the event stream: recursive, so one worker
/// iteration hits it hundreds of times (the densest source of events).
const STREAM_PROBE: &str = "fib";

#[derive(Clone, Debug, Default)]
pub struct Throughput {
    pub bytes: usize,
    pub secs: f64,
    pub packets: usize,
}

impl Throughput {
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs.max(1e-9)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Events {
    pub secs: f64,
    /// Event lines the client received while the kernel ran.
    pub received: u64,
    pub produced: u64,
    pub delivered: u64,
    pub dropped: u64,
}

impl Events {
    pub fn per_sec(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }
}

/// The wire figures of one stub line.
#[derive(Clone, Debug)]
pub struct Wire {
    /// Round trips of `m ADDR,1`, sorted, in microseconds.
    pub round_trip_us: Result<Vec<f64>, String>,
    pub packet_size: usize,
    pub read_64k: Result<Throughput, String>,
    pub read_1m: Result<Throughput, String>,
    pub events: Result<Events, String>,
}

impl Wire {
    fn failed(why: &str) -> Wire {
        Wire {
            round_trip_us: Err(why.to_string()),
            packet_size: 0,
            read_64k: Err(why.to_string()),
            read_1m: Err(why.to_string()),
            events: Err(why.to_string()),
        }
    }
}

/// What was measured; `Err(reason)` where it could not be.
#[derive(Clone, Debug)]
pub struct Host {
    /// QEMU start to the stub's first answer (kernel boot included).
    pub boot_to_stub: Result<Duration, String>,
    /// `kdbg --kernel ELF` (what `cargo xtask run` starts, minus the build) to its prompt.
    pub run_to_prompt: Result<Duration, String>,
    /// `kdbg --connect` to a running kernel, to its prompt.
    pub connect_to_prompt: Result<Duration, String>,
    /// The stub line as the harness and the shell wire it
    /// (`-serial tcp:...,server=on,wait=off,nodelay=on`).
    pub wire: Wire,
    /// The same with `nodelay=off`, as it was before 1d69111: what Nagle's
    /// algorithm on QEMU's side of the socket costs.
    pub wire_nagle: Wire,
    /// `dump core` of a kernel that died (`kdbg.crash=pf`), over the wire as wired.
    pub dump_core: Result<DumpCore, String>,
    /// `print *w` of the 50-member `Wide` at a breakpoint on `wide_checksum`.
    pub print_wide: Result<PrintWide, String>,
    /// Guest RAM shared with kdbg (`--memory`, issue 17).
    pub shared: Result<Shared, String>,
}

/// The shared-memory channel's figures (guest RAM backed by a file).
#[derive(Clone, Debug)]
pub struct Shared {
    /// `kdbg --memory --json`, kprobe on `fib`, events read from the rings.
    pub events: Result<Events, String>,
    /// 64 MiB of contiguous reads through the mapping (kernel running).
    pub read_64m: Result<Throughput, String>,
    /// Pieces of those reads the stub answered (int3 bytes, non-RAM).
    pub read_64m_stub_pages: u64,
    /// Random 8-byte reads per second through the mapping.
    pub random_8: Result<(usize, f64), String>,
    /// 1 MiB through the stub with kdbg's client: binary `x` reads, and
    /// hex `m` reads in the same boot.
    pub uart_x_1m: Result<Throughput, String>,
    pub uart_m_1m: Result<Throughput, String>,
}

/// Bytes read contiguously through the mapping.
const SHARED_READ: usize = 64 << 20;
/// Random 8-byte reads timed through the mapping.
const RANDOM_READS: usize = 200_000;

/// Boots with guest RAM shared; measures reads through the mapping with
/// the shell's client (`shell::rsp::Client` + `shell::guestmem`) while the
/// kernel runs, then the event rate of `kdbg --memory`.
fn shared(kernel: &Path, kdbg: &Path) -> Result<Shared> {
    use shell::guestmem::{GuestMem, Machine, Mapping};
    let vm = Qemu::boot_with("serve kdbg.quiet", |c| {
        c.kernel = kernel.to_path_buf();
        c.timeout = Duration::from_secs(600);
        c.share_memory = true;
    });
    let mut vm = vm?;
    vm.wait_for_console("serve:", Duration::from_secs(60))?;
    let file = vm.memory_file().context("no guest RAM file")?.to_path_buf();
    let (read_64m, read_64m_stub_pages, random_8, uart_x_1m, uart_m_1m) = {
        let ep: shell::rsp::Endpoint = vm.stub_connect_arg().parse()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || for _ in rx {});
        let mut c = shell::rsp::Client::connect(&ep, TIMEOUT, tx, shell::events::is_event)?;
        let q = c.request_str("?")?;
        if shell::rsp::client::is_stop_reply(q.as_bytes()) {
            c.resume("c")?;
        }
        let text = c.monitor("shm")?;
        let row = text
            .lines()
            .find_map(|l| proto::reply::ShmRow::parse(l).ok())
            .with_context(|| format!("no shm row: {}", one_line(&text)))?;
        // The UART first: kdbg's client without the mapping.
        let timed = |c: &mut shell::rsp::Client, binary: bool| -> Result<Throughput> {
            let t = Instant::now();
            let n = 1 << 20;
            let v = if binary {
                c.read_memory_stub(READ_BASE, n)?
            } else {
                c.read_memory_m(READ_BASE, n)?
            };
            anyhow::ensure!(v.len() == n, "short read");
            Ok(Throughput {
                bytes: n,
                secs: t.elapsed().as_secs_f64(),
                packets: 0,
            })
        };
        c.binary_reads = None;
        let uart_x_1m = reason(timed(&mut c, true));
        anyhow::ensure!(
            c.binary_reads == Some(true),
            "the stub did not answer binary reads"
        );
        let uart_m_1m = reason(timed(&mut c, false));
        let g = std::sync::Arc::new(GuestMem::new(
            std::sync::Arc::new(Mapping::open(&file)?),
            Machine {
                cr3: row.cr3,
                low_end: 0,
                ram_start: row.ram_start,
                ram_end: row.ram_end,
                trampoline: row.tramp,
            },
        ));
        c.guest = Some(g.clone());
        // From 16 MiB: heap and free RAM (2 MiB pages), the kernel running.
        let base = 16u64 << 20;
        anyhow::ensure!(
            row.ram_end >= base + SHARED_READ as u64,
            "RAM ends at {:#x}",
            row.ram_end
        );
        let t = Instant::now();
        let mut done = 0usize;
        let chunk = 1 << 20;
        while done < SHARED_READ {
            c.read_memory(base + done as u64, chunk)?;
            done += chunk;
        }
        let read = Throughput {
            bytes: SHARED_READ,
            secs: t.elapsed().as_secs_f64(),
            packets: SHARED_READ / chunk,
        };
        let stub_pages = g.stub_reads.load(std::sync::atomic::Ordering::Relaxed);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let span = row.ram_end - 0x20_0000 - 8;
        let t = Instant::now();
        let mut unmapped = 0usize;
        for _ in 0..RANDOM_READS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // The guard pages below task stacks are unmapped: an error is
            // a read answered too.
            if c.read_memory(0x20_0000 + x % span, 8).is_err() {
                unmapped += 1;
            }
        }
        anyhow::ensure!(
            unmapped < RANDOM_READS / 10,
            "{unmapped} of {RANDOM_READS} random reads failed"
        );
        let per_sec = RANDOM_READS as f64 / t.elapsed().as_secs_f64();
        c.guest = None;
        let _ = c.detach();
        (
            Ok(read),
            stub_pages,
            Ok((RANDOM_READS, per_sec)),
            uart_x_1m,
            uart_m_1m,
        )
    };
    let events = reason(shared_events(&vm, kernel, kdbg, &file));
    vm.kill();
    Ok(Shared {
        events,
        read_64m,
        read_64m_stub_pages,
        random_8,
        uart_x_1m,
        uart_m_1m,
    })
}

/// `kdbg --memory --json`: a kprobe on `fib` for [`STREAM_FOR`], events
/// read from the rings in guest RAM; the kernel's counters around it.
fn shared_events(vm: &Qemu, kernel: &Path, kdbg: &Path, file: &Path) -> Result<Events> {
    use std::io::BufRead;
    let mut child = Command::new(kdbg)
        .args(["--connect", &vm.stub_connect_arg(), "--symbols"])
        .arg(kernel)
        .arg("--memory")
        .arg(file)
        .args(["--json", "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", kdbg.display()))?;
    let mut stdin = child.stdin.take().context("kdbg stdin")?;
    let out = child.stdout.take().context("kdbg stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut run = |line: &str| -> Result<serde_json::Value> {
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        loop {
            let l = rx
                .recv_timeout(Duration::from_secs(60))
                .with_context(|| format!("no answer to `{line}`"))?;
            let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_default();
            if v.get("command")
                .is_some_and(|c| c != "stop" && c != "attach")
            {
                anyhow::ensure!(v["ok"] == true, "`{line}` failed: {v}");
                return Ok(v);
            }
        }
    };
    let counts = |v: &serde_json::Value| {
        let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
        (
            n(&v["received"]),
            n(&v["ring"]["produced"]),
            n(&v["ring"]["delivered"]),
            n(&v["ring"]["dropped"]),
        )
    };
    run("live off")?;
    let (r0, p0, d0, x0) = counts(&run("events 0")?);
    let set = run(&format!("kprobe {STREAM_PROBE}"))?;
    let id = set["probe"]["id"].as_u64().context("probe id")?;
    let t = Instant::now();
    run(&format!("sleep {}", STREAM_FOR.as_secs()))?;
    run(&format!("delete {id}"))?;
    let secs = t.elapsed().as_secs_f64();
    // Wait until the ring is empty: produced = delivered + dropped.
    let mut last = (0, 0, 0, 0);
    for _ in 0..50 {
        last = counts(&run("events 0")?);
        if last.1 == last.2 + last.3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stdin);
    let _ = child.wait();
    let (r1, p1, d1, x1) = last;
    Ok(Events {
        secs,
        received: r1 - r0,
        produced: p1 - p0,
        delivered: d1 - d0,
        dropped: x1 - x0,
    })
}

/// Times of `print` through the stub (kdbg --json on a pipe).
#[derive(Clone, Debug)]
pub struct PrintWide {
    /// Wall-clock milliseconds per `print *w`, sorted.
    pub deref_ms: Vec<f64>,
    /// The same for `print WIDE.f07 + WIDE.f49` (two scalar reads).
    pub scalar_ms: Vec<f64>,
}

/// Evaluations timed per expression.
const PRINTS: usize = 40;

/// `print *w` (50 members, one 200-byte read) and a two-member sum, each
/// [`PRINTS`] times, with the kernel stopped at `wide_checksum`.
fn print_wide(kernel: &Path, kdbg: &Path) -> Result<PrintWide> {
    use std::io::BufRead;
    let (mut vm, _addr) = boot(kernel, false)?;
    let mut child = Command::new(kdbg)
        .args(["--connect", &vm.stub_connect_arg(), "--symbols"])
        .arg(kernel)
        .args(["--json", "--timeout", "20", "--keep-going"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", kdbg.display()))?;
    let mut stdin = child.stdin.take().context("kdbg stdin")?;
    let out = child.stdout.take().context("kdbg stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // One command; its result object (not events or the stop notice).
    let mut run = |line: &str| -> Result<serde_json::Value> {
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        loop {
            let l = rx
                .recv_timeout(Duration::from_secs(60))
                .with_context(|| format!("no answer to `{line}`"))?;
            let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_default();
            if v.get("command").is_some_and(|c| c != "stop") {
                return Ok(v);
            }
        }
    };
    run("break wide_checksum")?;
    run("wait stop timeout 60")?;
    run("delete break 1")?;
    let mut time = |expr: &str| -> Result<Vec<f64>> {
        let mut v = Vec::with_capacity(PRINTS);
        for _ in 0..PRINTS {
            let t = Instant::now();
            let r = run(&format!("print {expr}"))?;
            v.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(r["ok"] == true, "`print {expr}` failed: {r}");
        }
        v.sort_by(f64::total_cmp);
        Ok(v)
    };
    let deref_ms = time("*w")?;
    let scalar_ms = time("WIDE.f07 + WIDE.f49")?;
    let _ = run("continue");
    drop(stdin);
    let _ = child.wait();
    vm.kill();
    Ok(PrintWide {
        deref_ms,
        scalar_ms,
    })
}

/// What `dump core` of the reference kernel costs.
#[derive(Clone, Debug, Default)]
pub struct DumpCore {
    pub secs: f64,
    /// RAM the core describes.
    pub memory: u64,
    /// Bytes read over the wire (non-zero pages outside the ELF's code).
    pub read: u64,
    /// Bytes of the core file.
    pub file: u64,
}

/// Boots a kernel that dies (a #PF), lets kdbg attach and `dump core`.
fn dump_core(kernel: &Path, kdbg: &Path) -> Result<DumpCore> {
    let mut vm = Qemu::boot_with("serve kdbg.quiet kdbg.crash=pf", |c| {
        c.kernel = kernel.to_path_buf();
        c.timeout = Duration::from_secs(600);
    })?;
    vm.wait_for_console("waiting for a debugger", Duration::from_secs(60))?;
    let dir = ::tests::target_dir().join("bench-dump");
    std::fs::create_dir_all(&dir)?;
    let core = dir.join("kernel.core");
    let mut child = Command::new(kdbg)
        .args(["--connect", &vm.stub_connect_arg(), "--symbols"])
        .arg(kernel)
        .args(["--json", "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("kdbg")?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "dump core {}", core.display())?;
    }
    let out = child.wait_with_output()?;
    vm.kill();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "core_dumped")
        .with_context(|| format!("no dump result from kdbg: {}", one_line(&text)))?;
    let c = &v["core"];
    let _ = std::fs::remove_file(&core);
    Ok(DumpCore {
        secs: c["seconds"].as_f64().unwrap_or(0.0),
        memory: c["memory"].as_u64().unwrap_or(0),
        read: c["read"].as_u64().unwrap_or(0),
        file: c["bytes"].as_u64().unwrap_or(0),
    })
}

/// One line, at most 160 characters: it goes into a table cell.
fn one_line(text: &str) -> String {
    let s = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn reason<T>(r: Result<T>) -> Result<T, String> {
    r.map_err(|e| one_line(&format!("{e:#}")))
}

/// Boots the kernel in serve mode with the stub on a free port (`nagle`:
/// QEMU's socket with `nodelay=off`); returns the VM once serve mode runs.
fn boot(kernel: &Path, nagle: bool) -> Result<(Qemu, SocketAddr)> {
    let port = ::tests::free_tcp_port()?;
    let vm = Qemu::boot_with("serve kdbg.quiet", |c| {
        c.kernel = kernel.to_path_buf();
        c.timeout = Duration::from_secs(600);
        c.stub = if nagle {
            Wiring::Raw(format!(
                "tcp:127.0.0.1:{port},server=on,wait=off,nodelay=off"
            ))
        } else {
            Wiring::Tcp(port)
        };
    });
    let mut vm = vm?;
    // The stub answers once the kernel has booted into serve mode.
    vm.wait_for_console("serve:", Duration::from_secs(60))?;
    Ok((vm, SocketAddr::from(([127, 0, 0, 1], port))))
}

fn wire(client: Result<Client>) -> Wire {
    match client {
        Ok(mut c) => {
            let w = Wire {
                round_trip_us: reason(round_trips(&mut c)),
                packet_size: c.packet_size,
                read_64k: reason(read_throughput(&mut c, 64 * 1024)),
                read_1m: reason(read_throughput(&mut c, 1024 * 1024)),
                events: reason(event_stream(&mut c)),
            };
            // Detach: the kernel runs on, the line is free for the next client.
            let _ = c.ask("D", TIMEOUT);
            w
        }
        Err(e) => Wire::failed(&one_line(&format!("the stub does not answer: {e:#}"))),
    }
}

/// Runs every host measurement against `kernel`, with `kdbg` for the prompt figures.
pub fn run(kernel: &Path, kdbg: &Path) -> Result<Host> {
    let run_to_prompt = reason(kdbg_prompt(
        kdbg,
        &[
            "--kernel",
            &kernel.display().to_string(),
            "--append",
            "serve kdbg.quiet",
        ],
    ));
    let started = Instant::now();
    let (mut vm, addr) = boot(kernel, false)?;
    let client = Client::connect(addr, TIMEOUT);
    let boot_to_stub = match &client {
        Ok(_) => Ok(started.elapsed()),
        Err(e) => Err(one_line(&format!("the stub does not answer: {e:#}"))),
    };
    let wire_default = wire(client);
    let connect_to_prompt = reason(kdbg_prompt(
        kdbg,
        &[
            "--connect",
            &vm.stub_connect_arg(),
            "--symbols",
            &kernel.display().to_string(),
        ],
    ));
    vm.kill();
    let (mut vm, addr) = boot(kernel, true)?;
    let wire_nagle = wire(Client::connect(addr, TIMEOUT));
    vm.kill();
    let dump_core = reason(dump_core(kernel, kdbg));
    let print_wide = reason(print_wide(kernel, kdbg));
    let shared = reason(shared(kernel, kdbg));
    Ok(Host {
        shared,
        print_wide,
        dump_core,
        boot_to_stub,
        run_to_prompt,
        connect_to_prompt,
        wire: wire_default,
        wire_nagle,
    })
}

fn round_trips(c: &mut Client) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        c.read_memory(READ_BASE, 1, TIMEOUT)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v.sort_by(f64::total_cmp);
    Ok(v)
}

fn read_throughput(c: &mut Client, total: usize) -> Result<Throughput> {
    // Reply = 2 hex digits per byte + "$#xx" framing.
    let chunk = ((c.packet_size.saturating_sub(8)) / 2).clamp(1, 1 << 16);
    let t = Instant::now();
    let mut done = 0;
    let mut packets = 0;
    while done < total {
        let n = chunk.min(total - done);
        c.read_memory(READ_BASE + done as u64, n, TIMEOUT)?;
        done += n;
        packets += 1;
    }
    Ok(Throughput {
        bytes: total,
        secs: t.elapsed().as_secs_f64(),
        packets,
    })
}

/// `key=N` from a monitor reply.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn event_stream(c: &mut Client) -> Result<Events> {
    let before = c.monitor("events", TIMEOUT)?;
    let reply = c.monitor(&format!("kprobe {STREAM_PROBE}"), TIMEOUT)?;
    let id = counter(&reply, "id");
    c.monitor("stream record", TIMEOUT)?;
    c.send("c")?;
    let t = Instant::now();
    let mut received = 0u64;
    while t.elapsed() < STREAM_FOR {
        if let Some(p) = c.packet(Duration::from_millis(100))?
            && p.first() == Some(&b'O')
            && p != b"OK"
        {
            let text = super::rsp::unhex(&p[1..]).unwrap_or_default();
            received += text
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"kdbg-record:"))
                .count() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    c.send_byte(0x03)?;
    // The stop reply (events still queued may arrive before it).
    loop {
        let p = c
            .packet(TIMEOUT)?
            .context("no stop reply after interrupting the event stream")?;
        if p.first() == Some(&b'T') || p.first() == Some(&b'S') {
            break;
        }
    }
    let after = c.monitor("events", TIMEOUT)?;
    if let Some(id) = id {
        let _ = c.monitor(&format!("probe delete {id}"), TIMEOUT);
    }
    let get = |text: &str, k: &str| counter(text, k).unwrap_or(0);
    Ok(Events {
        secs,
        received,
        produced: get(&after, "produced") - get(&before, "produced"),
        delivered: get(&after, "delivered") - get(&before, "delivered"),
        dropped: get(&after, "dropped") - get(&before, "dropped"),
    })
}

/// Starts `kdbg ARGS` on a pseudo-terminal and times it to its first
/// `kdbg...> ` prompt; then quits it.
fn kdbg_prompt(kdbg: &Path, args: &[&str]) -> Result<Duration> {
    let (mut master, slave) = openpty()?;
    let started = Instant::now();
    let mut cmd = Command::new(kdbg);
    cmd.args(args)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    ::tests::kill_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", kdbg.display()))?;
    let mut seen = Vec::new();
    let found = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Err(format!(
                "kdbg exited ({st}) before its prompt: {}",
                String::from_utf8_lossy(&seen)
            ));
        }
        if started.elapsed() > Duration::from_secs(60) {
            break Err("no kdbg prompt within 60 s".to_string());
        }
        let mut buf = [0u8; 4096];
        match read_ready(&mut master, &mut buf, Duration::from_millis(20)) {
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => break Err(format!("reading kdbg's terminal: {e}")),
        }
        let text = String::from_utf8_lossy(&seen);
        if text.contains("kdbg> ") || (text.contains("kdbg (") && text.contains(")> ")) {
            break Ok(started.elapsed());
        }
    };
    let _ = master.write_all(b"quit\r");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        let mut buf = [0u8; 4096];
        let _ = read_ready(&mut master, &mut buf, Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    found.map_err(anyhow::Error::msg)
}

/// A pseudo-terminal pair (master, slave).
fn openpty() -> Result<(std::fs::File, OwnedFd)> {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two descriptors into the provided ints; the
    // name/termios/winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("openpty");
    }
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    Ok(unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) })
}

/// Reads what is available within `wait` (0 bytes when nothing came).
fn read_ready(f: &mut std::fs::File, buf: &mut [u8], wait: Duration) -> std::io::Result<usize> {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
    if n <= 0 || pfd.revents & libc::POLLIN == 0 {
        return Ok(0);
    }
    f.read(buf)
}
