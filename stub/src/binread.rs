//! gdb's binary memory read, `x ADDR,LEN` (issue 17: the UART path at
//! twice the speed of hex `m`): the reply is `b` followed by the bytes,
//! escaped (`$`, `#`, `}`, `*` as `}` and the byte xor 0x20), or `E0e`
//! when the first byte is unreadable. gdbstub 0.7 does not know `x`, so
//! the stub answers it before gdbstub sees it, reading through the same
//! path as `m` (the target's `read_addrs`: original bytes under kdbg's
//! int3s, real return addresses under kretprobe trampolines). A reply
//! stops at the first unreadable byte (a short reply is allowed: the peer
//! asks again for the rest).

use gdbstub::target::ext::base::multithread::MultiThreadBase;

use crate::framer::MAX_PACKET;
use crate::target::KdbgTarget;
use arch::uart::Uart;

/// Most bytes one `x` reply carries (escaping may make the frame longer
/// than `PacketSize`; gdb and kdbg's client take any length).
pub const MAX_X: usize = MAX_PACKET - 64;

/// Bytes read per step (a stack buffer in the stub's context).
const PIECE: usize = 256;

/// `xADDR,LEN` (hex) from a packet body; `None` for anything else
/// (`x` alone is not a request gdb sends).
pub fn parse(body: &[u8]) -> Option<(u64, usize)> {
    let rest = body.strip_prefix(b"x")?;
    let comma = rest.iter().position(|&b| b == b',')?;
    let addr = crate::packet::parse_hex(rest.get(..comma)?)?;
    let len = crate::packet::parse_hex(rest.get(comma + 1..)?)?;
    Some((addr, usize::try_from(len).unwrap_or(usize::MAX).min(MAX_X)))
}

/// Escapes `b` into `out` (1 or 2 bytes); returns how many.
pub fn escape(b: u8, out: &mut [u8; 2]) -> usize {
    if matches!(b, b'$' | b'#' | b'}' | b'*') {
        out[0] = b'}';
        out[1] = b ^ 0x20;
        2
    } else {
        out[0] = b;
        1
    }
}

/// Answers `x addr,len` on `uart`.
pub fn answer(target: &mut KdbgTarget, addr: u64, len: usize, uart: &Uart) {
    let tid = target.current_tid();
    let mut buf = [0u8; PIECE];
    let mut done = 0usize;
    let mut sum = b'b';
    let mut started = false;
    while done < len {
        let n = PIECE.min(len - done);
        let Some(piece) = buf.get_mut(..n) else {
            break;
        };
        let got = target
            .read_addrs(addr.wrapping_add(done as u64), piece, tid)
            .unwrap_or(0);
        if got == 0 {
            break;
        }
        if !started {
            uart.write_byte(b'$');
            uart.write_byte(b'b');
            started = true;
        }
        let mut e = [0u8; 2];
        for &b in buf.get(..got).unwrap_or(&[]) {
            let k = escape(b, &mut e);
            for &c in e.get(..k).unwrap_or(&[]) {
                sum = sum.wrapping_add(c);
            }
            uart.write_bytes(e.get(..k).unwrap_or(&[]));
        }
        done += got;
        if got < n {
            break;
        }
    }
    if !started {
        // Not even the first byte: what `m` answers (EFAULT).
        crate::conn::write_packet(uart, b"E0e");
        return;
    }
    let mut cs = [0u8; 2];
    proto::hex::encode(&[sum], &mut cs);
    uart.write_byte(b'#');
    uart.write_bytes(&cs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse(b"x100000,10"), Some((0x10_0000, 16)));
        assert_eq!(parse(b"xffffffff,ffffffff"), Some((0xffff_ffff, MAX_X)));
        assert_eq!(parse(b"x"), None);
        assert_eq!(parse(b"x12"), None);
        assert_eq!(parse(b"x,1"), None);
        assert_eq!(parse(b"m100,1"), None);
    }

    #[test]
    fn escapes_the_framing_bytes() {
        let mut e = [0u8; 2];
        for b in [b'$', b'#', b'}', b'*'] {
            assert_eq!(escape(b, &mut e), 2);
            assert_eq!(e, [b'}', b ^ 0x20]);
        }
        assert_eq!(escape(0, &mut e), 1);
        assert_eq!(escape(0xff, &mut e), 1);
    }
}
