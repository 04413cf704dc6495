//! x/NFU and write.

use anyhow::{Result, anyhow, bail};

use super::state::{address_of, read_mem};
use crate::cmd::Invocation;
use crate::cmd::parse::number;
use crate::output::*;
use crate::session::Session;

/// `x/NFU`: count, format, unit size.
#[derive(Debug, PartialEq, Eq)]
pub struct Fmt {
    pub count: usize,
    pub format: char,
    pub size: usize,
}

pub fn parse_fmt(m: Option<&str>) -> Result<Fmt> {
    let mut f = Fmt {
        count: 1,
        format: 'x',
        size: 0,
    };
    let Some(m) = m else {
        f.size = 4;
        return Ok(f);
    };
    let digits: String = m.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !digits.is_empty() {
        f.count = digits.parse().map_err(|_| anyhow!("bad count in /{m}"))?;
    }
    for c in m[digits.len()..].chars() {
        match c {
            'x' | 'd' | 'u' | 'o' | 't' | 'c' | 'a' | 's' | 'i' => f.format = c,
            'b' => f.size = 1,
            'h' => f.size = 2,
            'w' => f.size = 4,
            'g' => f.size = 8,
            _ => bail!(
                "bad format letter `{c}` in /{m}: counts, then x d u o t c a s i, then b h w g"
            ),
        }
    }
    if f.size == 0 {
        f.size = match f.format {
            'a' => 8,
            'c' => 1,
            _ => 4,
        };
    }
    if f.count == 0 || f.count > 4096 {
        bail!("count {} out of range: use 1 to 4096", f.count);
    }
    Ok(f)
}

/// `x[/NFU] ADDR|SYMBOL`.
pub fn examine(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let (modifier, args) = (inv.modifier.as_deref(), inv.args.as_slice());
    if args.is_empty() {
        bail!("usage: x[/NFU] ADDR|SYMBOL|EXPR");
    }
    let joined = inv.text();
    let loc = &joined;
    let f = parse_fmt(modifier)?;
    let (addr, _) = address_of(s, loc)?;
    let mut rows = Vec::new();
    match f.format {
        's' => {
            let mut a = addr;
            for _ in 0..f.count {
                let bytes = read_mem(s, a, 256)?;
                let n = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                let mut t = crate::events::quote(&bytes[..n]);
                if n == bytes.len() {
                    t.push_str("...");
                }
                rows.push(MemoryRow {
                    addr: a,
                    label: s.shared.symbolize_opt(a),
                    values: vec![t],
                });
                a += n as u64 + 1;
            }
        }
        'i' => {
            // Kernel text from the image: the live bytes have the probes' int3s.
            let img = &s.shared.image;
            let bytes = match img.is_text(addr) {
                true => img.read(addr, f.count * 15).unwrap_or_default(),
                false => Vec::new(),
            };
            let bytes = if bytes.is_empty() {
                read_mem(s, addr, f.count * 15)?
            } else {
                bytes
            };
            let mut d = s.shared.disassembler(s.syntax);
            for i in d.decode(&bytes, addr, f.count) {
                rows.push(MemoryRow {
                    addr: i.addr,
                    label: s.shared.symbolize_opt(i.addr),
                    values: vec![i.text],
                });
            }
        }
        _ => {
            let bytes = read_mem(s, addr, f.count * f.size)?;
            let per_row = (16 / f.size).max(1);
            for (ri, chunk) in bytes.chunks(per_row * f.size).enumerate() {
                let a = addr + (ri * per_row * f.size) as u64;
                let values = chunk
                    .chunks(f.size)
                    .map(|u| {
                        let mut b = [0u8; 8];
                        b[..u.len()].copy_from_slice(u);
                        let v = u64::from_le_bytes(b);
                        format_unit(s, v, f.format, f.size)
                    })
                    .collect();
                rows.push(MemoryRow {
                    addr: a,
                    label: s.shared.symbolize_opt(a),
                    values,
                });
            }
        }
    }
    Ok(Output::Memory { rows })
}

fn format_unit(s: &Session, v: u64, format: char, size: usize) -> String {
    let bits = size * 8;
    match format {
        'x' => format!("{v:#0w$x}", w = size * 2 + 2),
        'd' => {
            let shift = 64 - bits as u32;
            (((v << shift) as i64) >> shift).to_string()
        }
        'u' => v.to_string(),
        'o' => format!("{v:#o}"),
        't' => format!("{v:0w$b}", w = bits),
        'c' => {
            let c = (v & 0xff) as u8;
            if c.is_ascii_graphic() || c == b' ' {
                format!("'{}'", c as char)
            } else {
                format!("'\\x{c:02x}'")
            }
        }
        'a' => match s.shared.symbolize_opt(v) {
            Some(n) => format!("{v:#x} <{n}>"),
            None => format!("{v:#x}"),
        },
        _ => format!("{v:#x}"),
    }
}

/// `write[/b|/h|/w|/g] ADDR|SYMBOL VALUE`.
pub fn write_mem(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let (modifier, args) = (inv.modifier.as_deref(), inv.args.as_slice());
    let [loc, value] = args else {
        bail!("usage: write[/b|/h|/w|/g] ADDR|SYMBOL VALUE");
    };
    let size = match modifier {
        None | Some("g") => 8,
        Some("w") => 4,
        Some("h") => 2,
        Some("b") => 1,
        Some(m) => bail!("bad size /{m}: use /b /h /w or /g"),
    };
    let (addr, _) = address_of(s, loc)?;
    let v = number(value)?;
    if size < 8 && v >> (size * 8) != 0 && (v as i64) >= 0 {
        bail!("{v:#x} does not fit in {size} bytes");
    }
    let bytes = &v.to_le_bytes()[..size];
    s.client()?
        .write_memory(addr, bytes)
        .map_err(|e| anyhow!("cannot write at {addr:#x}: {e}"))?;
    Ok(Output::Written {
        addr,
        size,
        value: v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            parse_fmt(Some("8gx")).unwrap(),
            Fmt {
                count: 8,
                format: 'x',
                size: 8
            }
        );
        assert_eq!(
            parse_fmt(Some("s")).unwrap(),
            Fmt {
                count: 1,
                format: 's',
                size: 4
            }
        );
        assert_eq!(
            parse_fmt(None).unwrap(),
            Fmt {
                count: 1,
                format: 'x',
                size: 4
            }
        );
        assert_eq!(parse_fmt(Some("4a")).unwrap().size, 8);
        assert!(
            parse_fmt(Some("8q"))
                .unwrap_err()
                .to_string()
                .contains("bad format letter `q`")
        );
        assert!(parse_fmt(Some("0x")).is_err());
    }
}
