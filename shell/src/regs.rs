//! The x86_64 register file as gdbstub_arch sends it in a `g` reply, and
//! eflags decoding.

use serde::Serialize;

use crate::rsp::packet;

/// Names of the 16 GPRs in `g` order.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const SEG_NAMES: [&str; 6] = ["cs", "ss", "ds", "es", "fs", "gs"];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RegisterFile {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub eflags: u32,
    pub segments: [u32; 6],
    /// fctrl fstat ftag fiseg fioff foseg fooff fop.
    pub fpu: [u32; 8],
    /// As `"0x..."` strings in JSON: 128-bit values do not fit a JSON
    /// number.
    #[serde(serialize_with = "xmm_hex")]
    pub xmm: Vec<u128>,
    pub mxcsr: Option<u32>,
    pub fs_base: Option<u64>,
    pub gs_base: Option<u64>,
    /// Other registers of the stub's layout (QEMU: k_gs_base, cr0, cr2,
    /// cr3, cr4, cr8, efer), in layout order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<(String, u64)>,
}

fn xmm_hex<S: serde::Serializer>(v: &[u128], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&format!("{x:#x}"))?;
    }
    seq.end()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the stub's register dump is malformed ({0}); the stub and shell disagree on the layout")]
pub struct RegsError(&'static str);

fn le(bytes: &[Option<u8>]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, b| acc << 8 | u64::from(b.unwrap_or(0)))
}

impl RegisterFile {
    /// Parse the hex of a `g` reply (`xx` for unavailable bytes).
    pub fn parse_g(hex: &str) -> Result<RegisterFile, RegsError> {
        let b = packet::from_hex_partial(hex.as_bytes()).ok_or(RegsError("not hex"))?;
        if b.len() < 0x8c {
            return Err(RegsError("shorter than the general registers"));
        }
        let mut r = RegisterFile::default();
        for i in 0..16 {
            r.gpr[i] = le(&b[i * 8..i * 8 + 8]);
        }
        r.rip = le(&b[0x80..0x88]);
        r.eflags = le(&b[0x88..0x8c]) as u32;
        if b.len() >= 0xa4 {
            for i in 0..6 {
                r.segments[i] = le(&b[0x8c + i * 4..0x90 + i * 4]) as u32;
            }
        }
        if b.len() >= 0x114 {
            for i in 0..8 {
                r.fpu[i] = le(&b[0xf4 + i * 4..0xf8 + i * 4]) as u32;
            }
        }
        if b.len() >= 0x214 {
            for i in 0..16 {
                let lo = le(&b[0x114 + i * 16..0x11c + i * 16]);
                let hi = le(&b[0x11c + i * 16..0x124 + i * 16]);
                r.xmm.push(u128::from(hi) << 64 | u128::from(lo));
            }
        }
        if b.len() >= 0x218 {
            r.mxcsr = Some(le(&b[0x214..0x218]) as u32);
        }
        // gdb's 64bit-segments feature (fs_base, gs_base) after the core set.
        if b.len() >= 0x228 {
            r.fs_base = Some(le(&b[0x218..0x220]));
            r.gs_base = Some(le(&b[0x220..0x228]));
        }
        Ok(r)
    }

    /// Parse a `g` reply with the stub's own layout (from its target
    /// description). Registers the reply does not cover, or whose bytes
    /// are unavailable (`xx`), stay unset.
    pub fn parse_layout(
        layout: &crate::rsp::tdesc::Layout,
        hex: &str,
    ) -> Result<RegisterFile, RegsError> {
        let b = packet::from_hex_partial(hex.as_bytes()).ok_or(RegsError("not hex"))?;
        let value = |name: &str| -> Option<u128> {
            let d = layout.find(name)?;
            let n = d.bits.div_ceil(8) as usize;
            let bytes = b.get(d.offset..d.offset + n)?;
            if bytes.iter().any(Option::is_none) || n > 16 {
                return None;
            }
            Some(
                bytes
                    .iter()
                    .rev()
                    .fold(0u128, |acc, x| acc << 8 | u128::from(x.unwrap_or(0))),
            )
        };
        let mut r = RegisterFile::default();
        for (i, n) in GPR_NAMES.iter().enumerate() {
            r.gpr[i] = value(n).ok_or(RegsError("a general register is missing"))? as u64;
        }
        r.rip = value("rip").ok_or(RegsError("rip is missing"))? as u64;
        r.eflags = value("eflags").unwrap_or(0) as u32;
        for (i, n) in SEG_NAMES.iter().enumerate() {
            r.segments[i] = value(n).unwrap_or(0) as u32;
        }
        for (i, n) in [
            "fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop",
        ]
        .iter()
        .enumerate()
        {
            r.fpu[i] = value(n).unwrap_or(0) as u32;
        }
        for i in 0..16 {
            match value(&format!("xmm{i}")) {
                Some(x) => r.xmm.push(x),
                None => break,
            }
        }
        r.mxcsr = value("mxcsr").map(|v| v as u32);
        r.fs_base = value("fs_base").map(|v| v as u64);
        r.gs_base = value("gs_base").map(|v| v as u64);
        for d in &layout.regs {
            let known = GPR_NAMES.contains(&d.name.as_str())
                || SEG_NAMES.contains(&d.name.as_str())
                || ["rip", "eflags", "mxcsr", "fs_base", "gs_base"].contains(&d.name.as_str())
                || d.name.starts_with("xmm")
                || d.name.starts_with("st")
                || d.name.starts_with('f')
                || d.name.starts_with("ymm")
                || d.name.starts_with('k') && d.name != "k_gs_base"
                || d.name == "orig_rax";
            if !known
                && d.bits <= 64
                && let Some(v) = value(&d.name)
            {
                r.system.push((d.name.clone(), v as u64));
            }
        }
        Ok(r)
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        let name = name.trim_start_matches(['%', '$']);
        if let Some((_, v)) = self.system.iter().find(|(n, _)| n == name) {
            return Some(*v);
        }
        if let Some(i) = GPR_NAMES.iter().position(|n| *n == name) {
            return Some(self.gpr[i]);
        }
        match name {
            "rip" | "pc" => Some(self.rip),
            "eflags" | "rflags" => Some(u64::from(self.eflags)),
            "sp" => Some(self.gpr[7]),
            "fp" => Some(self.gpr[6]),
            "fs_base" => self.fs_base,
            "gs_base" => self.gs_base,
            _ => SEG_NAMES
                .iter()
                .position(|n| *n == name)
                .map(|i| u64::from(self.segments[i])),
        }
    }

    /// Segment registers by name.
    pub fn segments_named(&self) -> Vec<(&'static str, u32)> {
        SEG_NAMES.iter().copied().zip(self.segments).collect()
    }
}

const FLAGS: [(u32, &str); 13] = [
    (0, "CF"),
    (2, "PF"),
    (4, "AF"),
    (6, "ZF"),
    (7, "SF"),
    (8, "TF"),
    (9, "IF"),
    (10, "DF"),
    (11, "OF"),
    (14, "NT"),
    (16, "RF"),
    (17, "VM"),
    (18, "AC"),
];

/// `[ ZF IF ]` style list of the set flags, plus IOPL when non-zero.
pub fn decode_eflags(v: u32) -> Vec<String> {
    let mut out: Vec<String> = FLAGS
        .iter()
        .filter(|(bit, _)| v & (1 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let iopl = (v >> 12) & 3;
    if iopl != 0 {
        out.push(format!("IOPL={iopl}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g_reply(n: usize) -> String {
        let mut bytes = vec![0u8; n];
        for i in 0..16 {
            bytes[i * 8] = i as u8 + 1;
        }
        bytes[0x80..0x88].copy_from_slice(&0xffff_8000_0010_1234u64.to_le_bytes());
        bytes[0x88..0x8c].copy_from_slice(&0x246u32.to_le_bytes());
        if n > 0x90 {
            bytes[0x8c] = 0x08;
            bytes[0x90] = 0x10;
        }
        packet::to_hex(&bytes)
    }

    #[test]
    fn parses_gdbstub_layout() {
        let r = RegisterFile::parse_g(&g_reply(0x218)).unwrap();
        assert_eq!(r.gpr[0], 1);
        assert_eq!(r.get("rdi"), Some(6));
        assert_eq!(r.get("%r15"), Some(16));
        assert_eq!(r.rip, 0xffff_8000_0010_1234);
        assert_eq!(r.eflags, 0x246);
        assert_eq!(r.get("cs"), Some(8));
        assert_eq!(r.get("ss"), Some(0x10));
        assert_eq!(r.xmm.len(), 16);
        assert_eq!(r.mxcsr, Some(0));
        assert_eq!(r.fs_base, None);
        let r = RegisterFile::parse_g(&g_reply(0x228)).unwrap();
        assert_eq!(r.fs_base, Some(0));
    }

    #[test]
    fn unavailable_bytes_and_garbage() {
        let mut h = g_reply(0x8c);
        h.replace_range(0..2, "xx");
        assert_eq!(RegisterFile::parse_g(&h).unwrap().gpr[0], 0);
        assert!(RegisterFile::parse_g("0011").is_err());
        assert!(RegisterFile::parse_g("zz").is_err());
    }

    #[test]
    fn eflags() {
        assert_eq!(decode_eflags(0x246), vec!["PF", "ZF", "IF"]);
        assert_eq!(decode_eflags(0x3002), vec!["IOPL=3"]);
    }
}
