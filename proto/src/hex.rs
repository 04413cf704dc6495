//! Lower-case hex, as GDB packets use it.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `2 * src.len()` hex digits into `out` (which must be at least that
/// long; extra bytes are left alone). Returns the number of bytes written.
pub fn encode(src: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for (&b, pair) in src.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xF)];
        n += 2;
    }
    n
}

/// The value of one hex digit (either case).
pub fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex digits into `out`; `None` on an odd length, a non-hex digit
/// or a too-small `out`. Returns the number of bytes written.
pub fn decode(src: &[u8], out: &mut [u8]) -> Option<usize> {
    if !src.len().is_multiple_of(2) || out.len() < src.len() / 2 {
        return None;
    }
    for (pair, o) in src.chunks_exact(2).zip(out.iter_mut()) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(src.len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = [0u8; 8];
        assert_eq!(encode(&[0x00, 0xAB, 0x7F, 0x10], &mut h), 8);
        assert_eq!(&h, b"00ab7f10");
        let mut b = [0u8; 4];
        assert_eq!(decode(b"00AB7f10", &mut b), Some(4));
        assert_eq!(b, [0x00, 0xAB, 0x7F, 0x10]);
        assert_eq!(decode(b"0", &mut b), None);
        assert_eq!(decode(b"zz", &mut b), None);
        assert_eq!(decode(b"0000000000", &mut b), None);
    }
}
