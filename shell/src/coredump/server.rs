//! A read-only stub over a core file, on a loopback TCP port, speaking the
//! subset of the GDB Remote Serial Protocol the shell uses: registers per
//! thread (`g`, `Hg`), memory (`m`: the core's segments, then the kernel
//! ELF's code and read-only data), the thread list, `?` (the stop recorded
//! in the core), and the monitor commands `why`, `tasks`, `retinst`,
//! `stream`. Anything that would change or resume the kernel is an error.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

use anyhow::{Context, Result};

use super::elf::CoreFile;
use crate::rsp::packet::{from_hex, to_hex};
use proto::reply::{ErrorCode, ErrorRow, StreamRow};

/// The core and the kernel ELF's loadable bytes.
struct Served {
    core: CoreFile,
    /// (vaddr, bytes) of the kernel ELF's PT_LOAD file contents.
    elf: Vec<(u64, Vec<u8>)>,
    /// Ranges the dump left to the ELF.
    from_elf: Vec<(u64, u64)>,
}

impl Served {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if let Some(b) = self.core.read(addr, len) {
            return Some(b);
        }
        let end = addr.checked_add(len as u64)?;
        if !self.from_elf.iter().any(|(a, b)| addr >= *a && end <= *b) {
            return None;
        }
        let (va, bytes) = self
            .elf
            .iter()
            .find(|(va, b)| addr >= *va && end <= va + b.len() as u64)?;
        let off = (addr - va) as usize;
        Some(bytes.get(off..off + len)?.to_vec())
    }

    fn thread(&self, tid: u64) -> Option<&super::elf::CoreThread> {
        self.core.threads.iter().find(|t| t.tid == tid)
    }
}

/// Starts serving; returns the port.
pub fn start(core: CoreFile, kernel: Vec<u8>) -> Result<u16> {
    let elf = loadable(&kernel)?;
    let from_elf = core
        .kdbg_lines("from-elf")
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((
                crate::cmd::parse::number(a).ok()?,
                crate::cmd::parse::number(b).ok()?,
            ))
        })
        .collect();
    let served = Served {
        core,
        elf,
        from_elf,
    };
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot open a loopback port")?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new()
        .name("core-stub".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = serve(&served, conn);
            }
        })?;
    Ok(port)
}

fn loadable(kernel: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
    use object::{Object, ObjectSegment};
    let file = object::File::parse(kernel).context("the kernel ELF")?;
    Ok(file
        .segments()
        .filter_map(|s| Some((s.address(), s.data().ok()?.to_vec())))
        .collect())
}

fn write_packet(out: &mut TcpStream, body: &str) -> std::io::Result<()> {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    out.write_all(format!("${body}#{sum:02x}").as_bytes())
}

fn serve(s: &Served, conn: TcpStream) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut input = BufReader::new(conn);
    let mut no_ack = false;
    let mut selected = s.core.threads.first().map(|t| t.tid).unwrap_or(1);
    loop {
        // Up to the next `$`.
        let mut skipped = Vec::new();
        if input.read_until(b'$', &mut skipped)? == 0 || skipped.last() != Some(&b'$') {
            return Ok(());
        }
        let mut body = Vec::new();
        input.read_until(b'#', &mut body)?;
        body.pop();
        let mut cs = [0u8; 2];
        std::io::Read::read_exact(&mut input, &mut cs)?;
        if !no_ack {
            out.write_all(b"+")?;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let reply = answer(s, &body, &mut selected, &mut out)?;
        if body == "QStartNoAckMode" {
            write_packet(&mut out, &reply)?;
            no_ack = true;
            continue;
        }
        write_packet(&mut out, &reply)?;
    }
}

fn parse_tid(t: &str) -> Option<u64> {
    let t = t.rsplit('.').next()?;
    u64::from_str_radix(t, 16).ok()
}

fn answer(
    s: &Served,
    body: &str,
    selected: &mut u64,
    out: &mut TcpStream,
) -> std::io::Result<String> {
    let first = s.core.threads.first().map(|t| t.tid).unwrap_or(1);
    Ok(match body {
        b if b.starts_with("qSupported") => {
            "PacketSize=4000;QStartNoAckMode+;swbreak+;hwbreak+;vContSupported+".into()
        }
        "QStartNoAckMode" => "OK".into(),
        "?" => {
            let sig = s.core.threads.first().map(|t| t.signal).unwrap_or(5);
            format!("T{sig:02x}thread:p1.{first:x};")
        }
        "qAttached" => "1".into(),
        "qC" => format!("QCp1.{selected:x}"),
        "qfThreadInfo" => {
            let ids: Vec<String> = s
                .core
                .threads
                .iter()
                .map(|t| format!("p1.{:x}", t.tid))
                .collect();
            format!("m{}", ids.join(","))
        }
        "qsThreadInfo" => "l".into(),
        "g" => match s.thread(*selected) {
            Some(t) => g_reply(&t.regs),
            None => "E01".into(),
        },
        "D" | "k" => "OK".into(),
        b if b.starts_with("Hg") || b.starts_with("Hc") => match parse_tid(&b[2..]) {
            Some(0) => "OK".into(),
            Some(t) if b.starts_with("Hc") || s.thread(t).is_some() => {
                if b.starts_with("Hg") {
                    *selected = t;
                }
                "OK".into()
            }
            _ if b[2..].starts_with('-') => "OK".into(),
            _ => "E01".into(),
        },
        b if b.starts_with("qThreadExtraInfo,") => {
            let tid = parse_tid(&b[17..]).unwrap_or(0);
            let task = tid.saturating_sub(1);
            let name = s
                .core
                .kdbg_lines("task")
                .find_map(|l| {
                    let line = format!("task {l}");
                    let row = proto::reply::TaskRow::parse(&line).ok()?;
                    (u64::from(row.id) == task).then(|| format!("{} ({})", row.name, row.state))
                })
                .unwrap_or_else(|| format!("task {task}"));
            to_hex(name.as_bytes())
        }
        b if b.starts_with('m') => {
            let Some((a, l)) = b[1..].split_once(',') else {
                return Ok("E01".into());
            };
            match (u64::from_str_radix(a, 16), usize::from_str_radix(l, 16)) {
                (Ok(a), Ok(l)) if l <= 0x4000 => match s.read(a, l) {
                    Some(bytes) => to_hex(&bytes),
                    None => "E14".into(),
                },
                _ => "E01".into(),
            }
        }
        b if b.starts_with("qRcmd,") => {
            let cmd = from_hex(&b.as_bytes()[6..])
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .unwrap_or_default();
            let text = monitor(s, cmd.trim());
            for line in text.lines() {
                write_packet(out, &format!("O{}", to_hex(format!("{line}\n").as_bytes())))?;
            }
            "OK".into()
        }
        b if b.starts_with("vCont?") => String::new(),
        b if matches!(
            b.as_bytes().first(),
            Some(b'c' | b's' | b'C' | b'S' | b'M' | b'X' | b'G' | b'P' | b'Z' | b'z')
        ) || b.starts_with("vCont") =>
        {
            "E01".into()
        }
        _ => String::new(),
    })
}

/// The `g` reply: the general registers, rip, eflags, segments.
fn g_reply(r: &crate::regs::RegisterFile) -> String {
    let mut b = Vec::new();
    for v in r.gpr {
        b.extend(v.to_le_bytes());
    }
    b.extend(r.rip.to_le_bytes());
    b.extend(r.eflags.to_le_bytes());
    for s in r.segments {
        b.extend(s.to_le_bytes());
    }
    to_hex(&b)
}

fn monitor(s: &Served, cmd: &str) -> String {
    let word = cmd.split_whitespace().next().unwrap_or("");
    match word {
        "why" => s
            .core
            .kdbg_lines("why")
            .map(|l| format!("why {l}\n"))
            .collect::<String>(),
        "tasks" => s
            .core
            .kdbg_lines("task")
            .map(|l| format!("task {l}\n"))
            .collect(),
        "retinst" => String::new(),
        // kdbg's own stub answers `ok stream=MODE` (the shell tells kdbg's
        // stub from a foreign one by it); a core has no events to stream.
        "stream" => match proto::command::parse(cmd) {
            Ok(proto::Command::Stream(stream)) => format!("{}\n", StreamRow { stream }),
            Ok(_) => String::new(),
            Err(e) => format!(
                "{}\n",
                ErrorRow {
                    code: e.code(),
                    msg: &e.to_string()
                }
            ),
        },
        "probes" => String::new(),
        "help" => "  a core file: why, tasks (everything else needs a live kernel)\n".into(),
        _ => format!(
            "{}\n",
            ErrorRow {
                code: ErrorCode::Unsupported,
                msg: &format!("`{word}` needs a live kernel: this is a core file"),
            }
        ),
    }
}
