//! QEMU's firmware configuration device (`-fw_cfg name=opt/...,string=...`):
//! how `cargo xtask bench` passes parameters to the bench mode without
//! touching the kernel command line.
//!
//! Interface (QEMU docs/specs/fw_cfg.rst): a 16-bit selector port 0x510
//! and a byte-wide data port 0x511. Key 0 reads the signature "QEMU", key
//! 0x19 the file directory: a big-endian u32 count, then 64-byte entries
//! (u32 size, u16 select, u16 reserved, 56-byte NUL-terminated name).

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const KEY_SIGNATURE: u16 = 0x0000;
const KEY_FILE_DIR: u16 = 0x0019;
/// Directory entries read at most (QEMU has a few dozen).
const MAX_FILES: u32 = 256;

fn select(key: u16) {
    // SAFETY: on `-M pc` port 0x510 is QEMU's fw_cfg selector; selecting a
    // key only changes what the data port returns.
    unsafe { arch::port::outw(SELECTOR, key) };
}

fn read(buf: &mut [u8]) {
    for b in buf {
        // SAFETY: reading fw_cfg's data port advances its read offset, nothing else.
        *b = unsafe { arch::port::inb(DATA) };
    }
}

/// Copies the fw_cfg file `name` into `out`; returns its length (capped at
/// `out.len()`), or `None` when there is no fw_cfg device or no such file.
pub fn file(name: &str, out: &mut [u8]) -> Option<usize> {
    let mut sig = [0u8; 4];
    select(KEY_SIGNATURE);
    read(&mut sig);
    if &sig != b"QEMU" {
        return None;
    }
    select(KEY_FILE_DIR);
    let mut count = [0u8; 4];
    read(&mut count);
    for _ in 0..u32::from_be_bytes(count).min(MAX_FILES) {
        let mut entry = [0u8; 64];
        read(&mut entry);
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
        let key = u16::from_be_bytes([entry[4], entry[5]]);
        let raw = &entry[8..];
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if raw.get(..len) == Some(name.as_bytes()) {
            let n = size.min(out.len());
            select(key);
            read(out.get_mut(..n)?);
            return Some(n);
        }
    }
    None
}

/// The fw_cfg file `name` parsed as a decimal number (surrounding
/// whitespace allowed).
pub fn number(name: &str) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = file(name, &mut buf)?;
    core::str::from_utf8(buf.get(..n)?)
        .ok()?
        .trim()
        .parse()
        .ok()
}
