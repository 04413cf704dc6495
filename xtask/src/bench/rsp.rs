//! A small GDB Remote Serial Protocol client for the host benchmarks: just
//! framing, checksums, no-ack mode, `O` packets and Ctrl-C. (The shell has
//! the full client; this one keeps xtask independent of the shell's crate
//! and shows exactly what each measured exchange costs on the wire.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(body.len() + 4);
    p.push(b'$');
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    p
}

pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

/// One packet or control byte from the stub.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Ack,
    Nak,
    Packet(Vec<u8>),
}

/// Splits the next complete item off `buf` (bytes outside packets are skipped).
pub fn next_item(buf: &mut Vec<u8>) -> Result<Option<Incoming>> {
    loop {
        match buf.first() {
            None => return Ok(None),
            Some(b'+') => {
                buf.remove(0);
                return Ok(Some(Incoming::Ack));
            }
            Some(b'-') => {
                buf.remove(0);
                return Ok(Some(Incoming::Nak));
            }
            Some(b'$') => break,
            Some(_) => {
                buf.remove(0);
            }
        }
    }
    let Some(end) = buf.iter().position(|&c| c == b'#') else {
        return Ok(None);
    };
    if buf.len() < end + 3 {
        return Ok(None);
    }
    let body = buf[1..end].to_vec();
    let sum = std::str::from_utf8(&buf[end + 1..end + 3])
        .ok()
        .and_then(|s| u8::from_str_radix(s, 16).ok());
    buf.drain(..end + 3);
    if sum != Some(checksum(&body)) {
        bail!("the stub sent a packet with a bad checksum");
    }
    Ok(Some(Incoming::Packet(body)))
}

pub struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
    acks: bool,
    /// Largest packet the stub takes (qSupported PacketSize).
    pub packet_size: usize,
}

impl Client {
    /// Connects, negotiates (qSupported, QStartNoAckMode); the kernel stops.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client> {
        let sock = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to the stub at {addr}"))?;
        sock.set_nodelay(true)?;
        let mut c = Client {
            sock,
            buf: Vec::new(),
            acks: true,
            packet_size: 4096,
        };
        let sup = c.ask("qSupported:multiprocess+;swbreak+;hwbreak+", timeout)?;
        let sup = String::from_utf8_lossy(&sup).into_owned();
        if let Some(v) = sup.split(';').find_map(|f| f.strip_prefix("PacketSize=")) {
            c.packet_size = usize::from_str_radix(v, 16).unwrap_or(4096);
        }
        if sup.contains("QStartNoAckMode+") && c.ask("QStartNoAckMode", timeout)? == b"OK" {
            c.acks = false;
        }
        Ok(c)
    }

    pub fn send(&mut self, body: &str) -> Result<()> {
        self.sock
            .write_all(&frame(body.as_bytes()))
            .context("writing to the stub")
    }

    /// Sends a raw byte (0x03 = interrupt).
    pub fn send_byte(&mut self, b: u8) -> Result<()> {
        self.sock.write_all(&[b]).context("writing to the stub")
    }

    /// The next packet (control bytes skipped), or `None` at the timeout.
    pub fn packet(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(item) = next_item(&mut self.buf)? {
                if let Incoming::Packet(p) = item {
                    if self.acks {
                        self.sock.write_all(b"+")?;
                    }
                    return Ok(Some(p));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => bail!("the stub closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("reading from the stub"),
            }
        }
    }

    /// The next packet that is not an `O` console packet.
    pub fn reply(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        loop {
            match self.packet(timeout)? {
                Some(p) if p.first() == Some(&b'O') && p != b"OK" => continue,
                Some(p) => return Ok(p),
                None => bail!("no reply from the stub within {}s", timeout.as_secs_f64()),
            }
        }
    }

    pub fn ask(&mut self, body: &str, timeout: Duration) -> Result<Vec<u8>> {
        self.send(body)?;
        self.reply(timeout)
    }

    /// `monitor CMD`: its console output and the final reply.
    pub fn monitor(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        self.send(&format!("qRcmd,{}", hex(cmd.as_bytes())))?;
        let mut out = String::new();
        loop {
            match self.packet(timeout)? {
                Some(p) if p.first() == Some(&b'O') && p != b"OK" => {
                    out.push_str(&String::from_utf8_lossy(
                        &unhex(&p[1..]).unwrap_or_default(),
                    ));
                }
                Some(p) if p == b"OK" => return Ok(out),
                Some(p) => bail!(
                    "monitor `{cmd}` failed: {} {out}",
                    String::from_utf8_lossy(&p)
                ),
                None => bail!("no reply to monitor `{cmd}`"),
            }
        }
    }

    /// Reads `len` bytes at `addr` with one `m` packet.
    pub fn read_memory(&mut self, addr: u64, len: usize, timeout: Duration) -> Result<Vec<u8>> {
        let r = self.ask(&format!("m{addr:x},{len:x}"), timeout)?;
        match unhex(&r) {
            Some(b) if b.len() == len => Ok(b),
            _ => bail!(
                "m{addr:x},{len:x}: unexpected reply `{}`",
                String::from_utf8_lossy(&r[..r.len().min(40)])
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_splits_packets_acks_and_noise() {
        assert_eq!(frame(b"m0,1"), b"$m0,1#fa".to_vec());
        let mut buf = b"+xx$OK#9a-$O41#".to_vec();
        assert_eq!(next_item(&mut buf).unwrap(), Some(Incoming::Ack));
        assert_eq!(
            next_item(&mut buf).unwrap(),
            Some(Incoming::Packet(b"OK".to_vec()))
        );
        assert_eq!(next_item(&mut buf).unwrap(), Some(Incoming::Nak));
        // Incomplete: waits for more bytes.
        assert_eq!(next_item(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"b4");
        assert_eq!(
            next_item(&mut buf).unwrap(),
            Some(Incoming::Packet(b"O41".to_vec()))
        );
    }

    #[test]
    fn a_bad_checksum_is_an_error() {
        let mut buf = b"$OK#00".to_vec();
        assert!(next_item(&mut buf).is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            unhex(hex(&[0, 0xab, 0xff]).as_bytes()),
            Some(vec![0, 0xab, 0xff])
        );
        assert_eq!(unhex(b"abc"), None);
    }
}
