//! Packet framing in front of gdbstub: bytes from the line become whole,
//! checksum-verified packets before gdbstub sees them.
//!
//! gdbstub 0.7 treats a bad checksum, a NAK, a stray byte or an overflowing
//! packet as a fatal session error (the state machine is consumed). The
//! stub must survive line noise, so this framer drops garbage between
//! packets, answers bad checksums and oversized packets with `-` itself, and
//! only forwards complete valid packets, `0x03` and acks.

/// Largest packet (from `$` to the checksum, as gdb counts `PacketSize`)
/// the stub accepts. gdbstub advertises its packet buffer's length as
/// `PacketSize`, and that buffer holds the whole frame: the stub's
/// buffer is the same size, so a packet of exactly `PacketSize` bytes is
/// accepted and one byte more is NAKed.
pub const MAX_PACKET: usize = 4096;

/// What one input byte completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Nothing complete yet (or a dropped byte).
    None,
    /// A valid packet is in [`Framer::packet`] (including `$`, `#` and checksum).
    Packet,
    /// gdb's interrupt request (0x03 between packets).
    Interrupt,
    /// `+` between packets.
    Ack,
    /// `-` between packets (the stub does not retransmit; gdb resends requests).
    Nak,
    /// A packet whose checksum did not match: answer `-`.
    BadChecksum,
    /// A packet longer than [`MAX_PACKET`]: answer `-`.
    Oversized,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Between,
    Body,
    Sum1,
    Sum2,
    /// Skipping the rest of an oversized packet.
    Discard,
    DiscardSum1,
    DiscardSum2,
}

/// The framing state machine with its packet buffer.
#[derive(Clone)]
pub struct Framer {
    buf: [u8; MAX_PACKET],
    len: usize,
    state: State,
    sum: u8,
    want: u8,
}

fn hexval(c: u8) -> Option<u8> {
    proto::hex::digit(c)
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    pub const fn new() -> Self {
        Framer {
            buf: [0; MAX_PACKET],
            len: 0,
            state: State::Between,
            sum: 0,
            want: 0,
        }
    }

    /// The last complete packet (valid after [`Frame::Packet`]).
    pub fn packet(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// In the middle of a packet.
    pub fn busy(&self) -> bool {
        self.state != State::Between
    }

    /// Forgets any partial packet.
    pub fn reset(&mut self) {
        self.state = State::Between;
        self.len = 0;
    }

    fn push(&mut self, b: u8) -> bool {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Feeds one byte.
    pub fn feed(&mut self, b: u8) -> Frame {
        match self.state {
            State::Between => match b {
                b'$' => {
                    self.len = 0;
                    self.sum = 0;
                    self.push(b);
                    self.state = State::Body;
                    Frame::None
                }
                0x03 => Frame::Interrupt,
                b'+' => Frame::Ack,
                b'-' => Frame::Nak,
                _ => Frame::None,
            },
            State::Body => {
                if b == b'$' {
                    // A new packet start inside a packet: the old one was cut.
                    self.len = 0;
                    self.sum = 0;
                    self.push(b);
                    return Frame::None;
                }
                // Leave room for '#' and two checksum digits after a body
                // byte, for the two digits after the '#'.
                let needed = if b == b'#' { 3 } else { 4 };
                if self.len + needed > MAX_PACKET {
                    self.state = if b == b'#' {
                        State::DiscardSum1
                    } else {
                        State::Discard
                    };
                    return Frame::None;
                }
                self.push(b);
                if b == b'#' {
                    self.state = State::Sum1;
                } else {
                    self.sum = self.sum.wrapping_add(b);
                }
                Frame::None
            }
            State::Sum1 => {
                self.push(b);
                match hexval(b) {
                    Some(v) => {
                        self.want = v << 4;
                        self.state = State::Sum2;
                        Frame::None
                    }
                    None => {
                        self.reset();
                        Frame::BadChecksum
                    }
                }
            }
            State::Sum2 => {
                self.push(b);
                self.state = State::Between;
                match hexval(b) {
                    Some(v) if self.want | v == self.sum => Frame::Packet,
                    _ => {
                        self.len = 0;
                        Frame::BadChecksum
                    }
                }
            }
            State::Discard => {
                if b == b'#' {
                    self.state = State::DiscardSum1;
                }
                Frame::None
            }
            State::DiscardSum1 => {
                self.state = State::DiscardSum2;
                Frame::None
            }
            State::DiscardSum2 => {
                self.reset();
                Frame::Oversized
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(f: &mut Framer, bytes: &[u8]) -> Vec<Frame> {
        bytes
            .iter()
            .map(|&b| f.feed(b))
            .filter(|e| *e != Frame::None)
            .collect()
    }

    #[test]
    fn frames_valid_packets_and_control_bytes() {
        let mut f = Framer::new();
        assert_eq!(
            feed_all(&mut f, b"junk+$g#67"),
            vec![Frame::Ack, Frame::Packet]
        );
        assert_eq!(f.packet(), b"$g#67");
        assert_eq!(
            feed_all(&mut f, b"\x03-"),
            vec![Frame::Interrupt, Frame::Nak]
        );
        assert_eq!(feed_all(&mut f, b"$g#00"), vec![Frame::BadChecksum]);
        assert_eq!(feed_all(&mut f, b"$g#zz"), vec![Frame::BadChecksum]);
        // A restarted packet keeps only the new one.
        assert_eq!(feed_all(&mut f, b"$qXX$g#67"), vec![Frame::Packet]);
        assert_eq!(f.packet(), b"$g#67");
        // 0x03 inside a packet is data.
        let mut pkt = b"$X0,1:\x03#".to_vec();
        let sum = pkt[1..pkt.len() - 1]
            .iter()
            .fold(0u8, |a, b| a.wrapping_add(*b));
        pkt.extend_from_slice(format!("{sum:02x}").as_bytes());
        assert_eq!(feed_all(&mut f, &pkt), vec![Frame::Packet]);
    }

    #[test]
    fn oversized_packets_are_dropped_whole() {
        let mut f = Framer::new();
        let mut big = vec![b'$'];
        big.extend(std::iter::repeat_n(b'a', MAX_PACKET * 2));
        big.extend_from_slice(b"#00$g#67");
        assert_eq!(
            feed_all(&mut f, &big),
            vec![Frame::Oversized, Frame::Packet]
        );
    }

    fn frame_of_total_len(total: usize) -> Vec<u8> {
        let body = vec![b'a'; total - 4];
        let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let mut p = vec![b'$'];
        p.extend_from_slice(&body);
        p.extend_from_slice(format!("#{sum:02x}").as_bytes());
        assert_eq!(p.len(), total);
        p
    }

    #[test]
    fn packet_size_is_accepted_and_one_more_is_not() {
        let mut f = Framer::new();
        let exact = frame_of_total_len(MAX_PACKET);
        assert_eq!(feed_all(&mut f, &exact), vec![Frame::Packet]);
        assert_eq!(f.packet(), &exact[..]);
        let over = frame_of_total_len(MAX_PACKET + 1);
        assert_eq!(feed_all(&mut f, &over), vec![Frame::Oversized]);
        assert_eq!(feed_all(&mut f, b"$g#67"), vec![Frame::Packet]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut f = Framer::new();
        let mut seed = 42u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = match seed % 8 {
                0 => b'$',
                1 => b'#',
                _ => (seed >> 8) as u8,
            };
            if f.feed(b) == Frame::Packet {
                let p = f.packet();
                assert_eq!(p[0], b'$');
                assert_eq!(p[p.len() - 3], b'#');
            }
        }
    }
}
