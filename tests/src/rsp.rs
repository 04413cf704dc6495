//! A raw GDB Remote Serial Protocol peer for the stub tests and the fuzzer:
//! deliberately naive (no retransmission, no acks of its own), so a test
//! controls every byte on the line and sees every byte the stub sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a reply may take under a loaded host (TCG, two cores shared).
pub const REPLY: Duration = Duration::from_secs(30);

/// The RSP checksum of a packet body.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// `$BODY#cs`.
pub fn packet(body: &[u8]) -> Vec<u8> {
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    p
}

/// Decodes hex pairs (stops at the first bad pair).
pub fn unhex(s: &[u8]) -> Vec<u8> {
    s.chunks(2)
        .map_while(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

/// Hex-encodes bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One thing the stub sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    Ack,
    Nak,
    /// A packet body (checksum verified).
    Packet(Vec<u8>),
}

/// A raw connection to the stub.
pub struct Raw {
    pub sock: TcpStream,
    pub pending: Vec<u8>,
    /// Every byte received so far (for failure reports).
    pub transcript: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Raw> {
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        sock.set_nodelay(true)?;
        Ok(Raw {
            sock,
            pending: Vec::new(),
            transcript: Vec::new(),
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write to the stub");
    }

    pub fn send(&mut self, body: &str) {
        self.send_raw(&packet(body.as_bytes()));
    }

    /// Reads what is available (waits at most the socket's read timeout).
    /// Panics when the stub closed the line.
    pub fn fill(&mut self) {
        let mut buf = [0u8; 65536];
        match self.sock.read(&mut buf) {
            Ok(0) => panic!("the stub closed the connection"),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.transcript.extend_from_slice(&buf[..n]);
            }
            Err(_) => {}
        }
    }

    /// The next ack, NAK or packet; bytes outside packets are skipped.
    /// Panics on a packet with a bad checksum.
    pub fn next_sent(&mut self, timeout: Duration) -> Option<Sent> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(&b) = self.pending.first() {
                match b {
                    b'+' => {
                        self.pending.remove(0);
                        return Some(Sent::Ack);
                    }
                    b'-' => {
                        self.pending.remove(0);
                        return Some(Sent::Nak);
                    }
                    b'$' => {}
                    _ => {
                        self.pending.remove(0);
                        continue;
                    }
                }
                if let Some(end) = self.pending.iter().position(|&c| c == b'#')
                    && self.pending.len() >= end + 3
                {
                    let body = self.pending[1..end].to_vec();
                    let sum = std::str::from_utf8(&self.pending[end + 1..end + 3])
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok());
                    assert_eq!(
                        sum,
                        Some(checksum(&body)),
                        "stub sent a bad checksum: {:?}",
                        String::from_utf8_lossy(&self.pending[..end + 3])
                    );
                    self.pending.drain(..end + 3);
                    return Some(Sent::Packet(body));
                }
                break;
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.fill();
        }
    }

    /// The next control byte (`+`/`-`) or packet body.
    pub fn next(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        self.next_sent(timeout).map(|s| match s {
            Sent::Ack => vec![b'+'],
            Sent::Nak => vec![b'-'],
            Sent::Packet(p) => p,
        })
    }

    /// The next packet body that is not an `O` console packet (those are
    /// collected into `console`); acks and NAKs are skipped.
    pub fn reply_with_console(&mut self, console: &mut String) -> String {
        loop {
            let p = self.next(REPLY).expect("a reply from the stub");
            if p == b"+" || p == b"-" {
                continue;
            }
            if is_console(&p) {
                console.push_str(&String::from_utf8_lossy(&unhex(&p[1..])));
                continue;
            }
            return String::from_utf8_lossy(&p).into_owned();
        }
    }

    pub fn reply(&mut self) -> String {
        let mut c = String::new();
        self.reply_with_console(&mut c)
    }

    /// Sends and waits for the reply.
    pub fn ask(&mut self, body: &str) -> String {
        self.send(body);
        self.reply()
    }

    /// `monitor CMD`: the console text and the final reply.
    pub fn monitor(&mut self, cmd: &str) -> (String, String) {
        self.send(&format!("qRcmd,{}", hex(cmd.as_bytes())));
        let mut console = String::new();
        let r = self.reply_with_console(&mut console);
        (console, r)
    }

    /// Expects one control byte among the next ones.
    pub fn expect_byte(&mut self, want: u8) {
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

    /// Attaches (the kernel stops), in no-ack mode as kdbg and gdb do.
    pub fn attach(&mut self) -> String {
        let sup = self.ask("qSupported:multiprocess+;swbreak+;hwbreak+");
        assert!(sup.contains("PacketSize="), "qSupported reply: {sup}");
        assert_eq!(self.ask("QStartNoAckMode"), "OK");
        let q = self.ask("?");
        assert!(q.starts_with('T'), "stop reply: {q}");
        sup
    }

    /// Ctrl-C while running: the stop reply.
    pub fn interrupt(&mut self) -> String {
        self.send_raw(b"\x03");
        let stop = self.reply();
        assert!(stop.starts_with('T'), "Ctrl-C stop: {stop}");
        stop
    }

    /// Reads `len` bytes at `addr` (`None`: an error reply).
    pub fn read_mem(&mut self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let r = self.ask(&format!("m{addr:x},{len:x}"));
        (!r.starts_with('E')).then(|| unhex(r.as_bytes()))
    }
}

/// An `O` console packet (not `OK`).
pub fn is_console(p: &[u8]) -> bool {
    p.first() == Some(&b'O') && p.len() > 1 && p != b"OK"
}

/// The address of `expr` in the kernel ELF, from a stock gdb without a
/// target (`&kernel::workloads::STATS`, `&kernel::workloads::fib`).
pub fn elf_address(kernel: &Path, expr: &str) -> u64 {
    let out = std::process::Command::new("gdb")
        .args(["-batch", "-nx", "-q", "-ex", "set language rust"])
        .args(["-ex", &format!("p/x {expr}")])
        .arg(kernel.as_os_str())
        .output()
        .expect("gdb is installed (apt-get install gdb)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = text
        .rsplit("0x")
        .next()
        .map(|h| {
            h.chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect::<String>()
        })
        .unwrap_or_default();
    u64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("no address for {expr}: {text}"))
}

/// The kernel's workload counters (`kernel::workloads::STATS`, seven u64).
pub fn workload_total(raw: &mut Raw, stats: u64) -> u64 {
    let bytes = raw.read_mem(stats, 56).expect("STATS is readable");
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .sum()
}

/// A symbol's address from `nm` (demangled names, hash suffix ignored).
pub fn symbol(kernel: &Path, name: &str) -> Option<u64> {
    let out = std::process::Command::new("nm")
        .arg("-C")
        .arg(kernel)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ' ');
        let addr = parts.next()?;
        let _kind = parts.next()?;
        let sym = parts.next()?;
        (sym == name || sym.strip_prefix(name)?.starts_with("::h"))
            .then(|| u64::from_str_radix(addr, 16).ok())
            .flatten()
    })
}
