//! What the stub does with a framed packet before gdbstub sees it: the few
//! requests gdbstub would answer wrongly are rewritten or answered here.
//!
//! - `m ADDR,LEN` with `LEN` above [`MAX_READ`] is rewritten to read
//!   [`MAX_READ`] bytes. gdbstub streams any length it is given (gigabytes
//!   of hex with interrupts off for `m0,ffffffffffffffff`), and past its
//!   packet buffer it reads in chunks, so a fault in a later chunk ended a
//!   reply that already carried hex with `E0e`. One chunk of at most
//!   [`MAX_READ`] bytes is either the readable prefix or an error. A short
//!   reply is allowed by the protocol (gdb asks again for the rest), and
//!   `PacketSize / 2` bytes are exactly the pieces gdb reads in.
//! - A bare `vCont` (no action) is answered with an error: gdbstub resumed
//!   the kernel without a reply.
//!
//! Pure functions over bytes, so they build and are fuzzed on the host.

use crate::framer::MAX_PACKET;

/// Most bytes one `m` reply carries: its hex fills the advertised
/// `PacketSize` (the whole packet, `$` to checksum, as gdb counts it).
pub const MAX_READ: usize = MAX_PACKET / 2;

/// The error a request without a meaning gets (EINVAL).
pub const EINVAL_REPLY: &[u8] = b"E16";

/// What to do with one framed packet (`$BODY#cs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Feed it to gdbstub unchanged.
    Forward,
    /// Feed this packet (a full frame with its checksum) instead.
    Rewrite(Rewritten),
    /// Do not feed it: answer with this body (after the `+` ack, if acks
    /// are on).
    Answer(&'static [u8]),
}

/// A rewritten frame, built in place (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    buf: [u8; 48],
    len: usize,
}

impl Rewritten {
    pub fn frame(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    fn new() -> Self {
        Rewritten {
            buf: [0; 48],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }
}

/// The body of a framed packet (`$BODY#cs`), if it is one.
pub fn body(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(b"$")?;
    let hash = rest.len().checked_sub(3)?;
    if rest.get(hash) != Some(&b'#') {
        return None;
    }
    rest.get(..hash)
}

/// Parses a hex number of at most 16 digits (what fits in a u64).
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        Some((acc << 4) | u64::from(proto::hex::digit(c)?))
    })
}

/// `m ADDR,LEN` split into its fields (`None`: not a well-formed `m`).
pub fn parse_m(body: &[u8]) -> Option<(&[u8], u64)> {
    let rest = body.strip_prefix(b"m")?;
    let comma = rest.iter().position(|&c| c == b',')?;
    let addr = rest.get(..comma)?;
    let len = parse_hex(rest.get(comma + 1..)?)?;
    parse_hex(addr)?;
    Some((addr, len))
}

/// Decides what happens to `frame` (a checksum-verified packet).
pub fn inspect(frame: &[u8]) -> Action {
    let Some(body) = body(frame) else {
        return Action::Forward;
    };
    if body == b"vCont" || body == b"vCont;" {
        return Action::Answer(EINVAL_REPLY);
    }
    if let Some((addr, len)) = parse_m(body)
        && len > MAX_READ as u64
    {
        return rewrite_m(addr, MAX_READ as u64).map_or(Action::Forward, Action::Rewrite);
    }
    Action::Forward
}

fn rewrite_m(addr: &[u8], len: u64) -> Option<Rewritten> {
    let mut r = Rewritten::new();
    let mut digits = [0u8; 16];
    let bytes = len.to_be_bytes();
    proto::hex::encode(&bytes, &mut digits);
    let first = digits.iter().position(|&d| d != b'0').unwrap_or(15);
    let len_hex = digits.get(first..)?;
    r.push(b"$m")?;
    r.push(addr)?;
    r.push(b",")?;
    r.push(len_hex)?;
    let sum = r
        .buf
        .get(1..r.len)?
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b));
    let mut cs = [0u8; 2];
    proto::hex::encode(&[sum], &mut cs);
    r.push(b"#")?;
    r.push(&cs)?;
    Some(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let mut f = vec![b'$'];
        f.extend_from_slice(body);
        f.extend_from_slice(format!("#{sum:02x}").as_bytes());
        f
    }

    #[test]
    fn long_reads_are_capped_at_one_packet() {
        for (len, want) in [
            ("ffffffffffffffff", Some("800")),
            ("10000", Some("800")),
            ("801", Some("800")),
            ("800", None),
            ("0", None),
            ("1", None),
        ] {
            let f = frame(format!("mfffff000,{len}").as_bytes());
            match (inspect(&f), want) {
                (Action::Rewrite(r), Some(w)) => {
                    assert_eq!(r.frame(), frame(format!("mfffff000,{w}").as_bytes()))
                }
                (Action::Forward, None) => {}
                (other, _) => panic!("{len}: {other:?}"),
            }
        }
        // Not a well-formed m (gdbstub answers those): forwarded.
        for body in ["m", "m,", "mzz,10000", "m1,", "m1,10000000000000000", "mem"] {
            assert_eq!(inspect(&frame(body.as_bytes())), Action::Forward, "{body}");
        }
    }

    #[test]
    fn bare_vcont_is_an_error() {
        assert_eq!(inspect(&frame(b"vCont")), Action::Answer(EINVAL_REPLY));
        assert_eq!(inspect(&frame(b"vCont;")), Action::Answer(EINVAL_REPLY));
        assert_eq!(inspect(&frame(b"vCont;c")), Action::Forward);
        assert_eq!(inspect(&frame(b"vCont?")), Action::Forward);
    }
}
