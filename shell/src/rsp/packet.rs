//! GDB Remote Serial Protocol framing: `$payload#cs`, acks, escapes and
//! run-length encoding.
//!
//! This layer is pure: it turns bytes into [`Frame`]s and payloads into
//! bytes, with no I/O, so every rule of the protocol is unit-tested here.

/// Most payload bytes we accept in one packet before calling it garbage.
pub const MAX_PACKET: usize = 1 << 20;

/// One unit read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+`: the peer received our last packet.
    Ack,
    /// `-`: the peer wants our last packet again.
    Nak,
    /// A packet with a good checksum; run-length encoding already expanded
    /// (escapes are not: only binary replies use them, see [`unescape`]).
    Packet(Vec<u8>),
    /// A packet whose checksum did not match (we answer `-`).
    BadChecksum { expected: u8, got: u8 },
    /// A `%notification#cs` (non-stop mode); payload as for `Packet`.
    Notification(Vec<u8>),
    /// Bytes outside any packet (console noise, line garbage).
    Garbage(Vec<u8>),
}

/// The sum of the bytes modulo 256, as GDB computes it.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Escape the bytes that cannot appear raw in a packet (`$`, `#`, `}`, `*`).
pub fn escape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for &b in data {
        if matches!(b, b'$' | b'#' | b'}' | b'*') {
            out.push(b'}');
            out.push(b ^ 0x20);
        } else {
            out.push(b);
        }
    }
    out
}

/// Undo [`escape`] (for binary replies such as `qXfer` and `x`).
pub fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut it = data.iter();
    while let Some(&b) = it.next() {
        if b == b'}' {
            if let Some(&n) = it.next() {
                out.push(n ^ 0x20);
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// Frame a payload as `$payload#cs`. The payload must already be escaped
/// where the packet carries binary data.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(b'$');
    out.extend_from_slice(payload);
    out.push(b'#');
    out.extend_from_slice(format!("{:02x}", checksum(payload)).as_bytes());
    out
}

/// Expand run-length encoding: `X*n` is `X` followed by `n - 29` more `X`.
pub fn expand_rle(raw: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'*'
            && i + 1 < raw.len()
            && let Some(&prev) = out.last()
        {
            let n = usize::from(raw[i + 1]).saturating_sub(29);
            out.extend(std::iter::repeat_n(prev, n));
            i += 2;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Body { notification: bool },
    Checksum1 { notification: bool },
    Checksum2 { notification: bool, hi: u8 },
}

/// Incremental frame decoder: feed it whatever the transport returned and
/// collect complete frames.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    body: Vec<u8>,
    garbage: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            state: State::Idle,
            body: Vec::new(),
            garbage: Vec::new(),
        }
    }

    /// Feed bytes; complete frames are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        for &b in bytes {
            self.step(b, out);
        }
        self.flush_garbage(out);
    }

    fn flush_garbage(&mut self, out: &mut Vec<Frame>) {
        if !self.garbage.is_empty() {
            out.push(Frame::Garbage(std::mem::take(&mut self.garbage)));
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<Frame>) {
        match self.state {
            State::Idle => match b {
                b'+' => {
                    self.flush_garbage(out);
                    out.push(Frame::Ack);
                }
                b'-' => {
                    self.flush_garbage(out);
                    out.push(Frame::Nak);
                }
                b'$' | b'%' => {
                    self.flush_garbage(out);
                    self.body.clear();
                    self.state = State::Body {
                        notification: b == b'%',
                    };
                }
                _ => self.garbage.push(b),
            },
            State::Body { notification } => match b {
                b'#' => self.state = State::Checksum1 { notification },
                // A new start inside a packet: the previous one was cut off
                // (peer restarted, line noise). Keep the newest.
                b'$' => {
                    self.garbage.push(b'$');
                    self.garbage.extend_from_slice(&self.body);
                    self.flush_garbage(out);
                    self.body.clear();
                }
                _ if self.body.len() >= MAX_PACKET => {
                    self.garbage.extend_from_slice(&self.body);
                    self.garbage.push(b);
                    self.body.clear();
                    self.state = State::Idle;
                }
                _ => self.body.push(b),
            },
            State::Checksum1 { notification } => match hex_val(b) {
                Some(hi) => self.state = State::Checksum2 { notification, hi },
                None => self.bad_checksum(b, out),
            },
            State::Checksum2 { notification, hi } => match hex_val(b) {
                Some(lo) => {
                    let got = hi << 4 | lo;
                    let expected = checksum(&self.body);
                    let body = std::mem::take(&mut self.body);
                    self.state = State::Idle;
                    if got != expected {
                        out.push(Frame::BadChecksum { expected, got });
                    } else if notification {
                        out.push(Frame::Notification(expand_rle(&body)));
                    } else {
                        out.push(Frame::Packet(expand_rle(&body)));
                    }
                }
                None => self.bad_checksum(b, out),
            },
        }
    }

    fn bad_checksum(&mut self, b: u8, out: &mut Vec<Frame>) {
        let expected = checksum(&self.body);
        self.body.clear();
        self.state = State::Idle;
        out.push(Frame::BadChecksum { expected, got: 0 });
        // The byte may start the next frame.
        self.step(b, out);
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `data` (memory writes, `qRcmd`).
pub fn to_hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Decode hex pairs. `xx` (a register the stub cannot read) decodes as
/// `None` for that byte.
pub fn from_hex_partial(text: &[u8]) -> Option<Vec<Option<u8>>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            if pair == b"xx" {
                Some(None)
            } else {
                Some(Some(hex_val(pair[0])? << 4 | hex_val(pair[1])?))
            }
        })
        .collect()
}

/// Decode hex pairs strictly.
pub fn from_hex(text: &[u8]) -> Option<Vec<u8>> {
    from_hex_partial(text)?.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(bytes, &mut out);
        out
    }

    #[test]
    fn encodes_with_checksum() {
        assert_eq!(encode(b"g"), b"$g#67");
        assert_eq!(encode(b"qSupported"), b"$qSupported#37");
        assert_eq!(encode(b""), b"$#00");
    }

    #[test]
    fn decodes_a_recorded_exchange() {
        // Recorded from gdbstub: an ack, the qSupported reply, an OK.
        let wire = b"+$PacketSize=1000;vContSupported+;multiprocess+;QStartNoAckMode+#cd+$OK#9a";
        let frames = decode_all(wire);
        assert_eq!(
            frames,
            vec![
                Frame::Ack,
                Frame::Packet(
                    b"PacketSize=1000;vContSupported+;multiprocess+;QStartNoAckMode+".to_vec()
                ),
                Frame::Ack,
                Frame::Packet(b"OK".to_vec()),
            ]
        );
    }

    #[test]
    fn frames_split_across_reads() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in b"$OK#9a" {
            d.feed(&[*b], &mut out);
        }
        assert_eq!(out, vec![Frame::Packet(b"OK".to_vec())]);
    }

    #[test]
    fn bad_checksum_is_reported() {
        assert_eq!(
            decode_all(b"$OK#00"),
            vec![Frame::BadChecksum {
                expected: 0x9a,
                got: 0
            }]
        );
        // Non-hex checksum digit, then a good packet right after.
        let frames = decode_all(b"$OK#z$OK#9a");
        assert!(matches!(frames[0], Frame::BadChecksum { .. }));
        assert_eq!(frames.last(), Some(&Frame::Packet(b"OK".to_vec())));
    }

    #[test]
    fn garbage_is_separated_from_packets() {
        let frames = decode_all(b"hello\r\n$OK#9a\x00\xff");
        assert_eq!(
            frames,
            vec![
                Frame::Garbage(b"hello\r\n".to_vec()),
                Frame::Packet(b"OK".to_vec()),
                Frame::Garbage(vec![0, 0xff]),
            ]
        );
    }

    #[test]
    fn truncated_packet_restarts_on_dollar() {
        let frames = decode_all(b"$T05th$OK#9a");
        assert_eq!(frames[0], Frame::Garbage(b"$T05th".to_vec()));
        assert_eq!(frames[1], Frame::Packet(b"OK".to_vec()));
    }

    #[test]
    fn run_length_decoding() {
        // "0* " = '0' then 3 more ('  ' is 32, 32-29 = 3).
        assert_eq!(expand_rle(b"0* "), b"0000");
        assert_eq!(expand_rle(b"a*\"b"), b"aaaaaab");
        // From gdbstub's writer: 16 zero bytes of a register dump.
        let raw = b"0*;";
        assert_eq!(expand_rle(raw), vec![b'0'; 1 + (b';' as usize - 29)]);
        // A '*' with nothing before it is kept as is.
        assert_eq!(expand_rle(b"*"), b"*");
        // The checksum covers the encoded form.
        let frames = decode_all(&encode(b"0* "));
        assert_eq!(frames, vec![Frame::Packet(b"0000".to_vec())]);
    }

    #[test]
    fn escapes_round_trip() {
        let data = [b'$', b'#', b'}', b'*', 0, 0xff, b'a'];
        let esc = escape(&data);
        assert!(!esc.contains(&b'$') && !esc.contains(&b'#') && !esc.contains(&b'*'));
        assert_eq!(unescape(&esc), data);
        let frames = decode_all(&encode(&esc));
        match &frames[0] {
            Frame::Packet(p) => assert_eq!(unescape(p), data),
            f => panic!("unexpected {f:?}"),
        }
    }

    #[test]
    fn notifications() {
        let frames = decode_all(
            &[
                b"%Stop:T05".as_slice(),
                b"#",
                format!("{:02x}", checksum(b"Stop:T05")).as_bytes(),
            ]
            .concat(),
        );
        assert_eq!(frames, vec![Frame::Notification(b"Stop:T05".to_vec())]);
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(to_hex(b"help"), "68656c70");
        assert_eq!(from_hex(b"68656c70"), Some(b"help".to_vec()));
        assert_eq!(from_hex(b"6"), None);
        assert_eq!(from_hex(b"zz"), None);
        assert_eq!(from_hex_partial(b"01xx"), Some(vec![Some(1), None]));
    }

    #[test]
    fn oversized_packet_is_garbage() {
        let mut wire = vec![b'$'];
        wire.extend(std::iter::repeat_n(b'a', MAX_PACKET + 10));
        wire.extend_from_slice(b"#00$OK#9a");
        let frames = decode_all(&wire);
        assert_eq!(frames.last(), Some(&Frame::Packet(b"OK".to_vec())));
    }
}
