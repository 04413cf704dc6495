//! The stub's register layout from its target description
//! (`qXfer:features:read:target.xml`, with `xi:include`s), as gdb reads it:
//! registers in `regnum` order, each `bitsize` wide, packed in a `g` reply.
//! kdbg's stub and QEMU's gdbstub order x86_64 registers differently
//! (QEMU puts fs_base, gs_base, k_gs_base, cr0-cr8 and efer after the
//! segment selectors), so nothing about the layout is assumed.

use std::collections::BTreeMap;

/// One register of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegDesc {
    pub name: String,
    pub bits: u32,
    pub regnum: u32,
    /// Byte offset in a `g` reply.
    pub offset: usize,
}

/// The registers of a `g` reply, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub arch: Option<String>,
    pub regs: Vec<RegDesc>,
}

/// Why a target description could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TdescError {
    #[error("target description `{0}`: {1}")]
    Bad(String, String),
    #[error("target description includes nest deeper than 8 (`{0}`)")]
    TooDeep(String),
}

fn strip_comments(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        match rest[i..].find("-->") {
            Some(j) => rest = &rest[i + j + 3..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The value of `attr="..."` in one tag's text.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = tag[from..].find(name) {
        let at = from + i;
        let before_ok = at == 0 || tag.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = tag[at + name.len()..].trim_start();
        if before_ok && let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start();
            let q = rest.chars().next()?;
            if q == '"' || q == '\'' {
                let end = rest[1..].find(q)?;
                return Some(&rest[1..1 + end]);
            }
        }
        from = at + name.len();
    }
    None
}

impl Layout {
    /// Builds the layout from the annex `target.xml`, reading it and every
    /// included annex through `fetch`.
    pub fn load<E: std::fmt::Display>(
        fetch: &mut dyn FnMut(&str) -> Result<String, E>,
    ) -> Result<Layout, TdescError> {
        let mut regs: BTreeMap<u32, (String, u32)> = BTreeMap::new();
        let mut arch = None;
        let mut next = 0u32;
        load_annex(fetch, "target.xml", 0, &mut regs, &mut next, &mut arch)?;
        let mut offset = 0;
        let regs = regs
            .into_iter()
            .map(|(regnum, (name, bits))| {
                let r = RegDesc {
                    name,
                    bits,
                    regnum,
                    offset,
                };
                offset += bits.div_ceil(8) as usize;
                r
            })
            .collect();
        Ok(Layout { arch, regs })
    }

    pub fn find(&self, name: &str) -> Option<&RegDesc> {
        self.regs.iter().find(|r| r.name == name)
    }

    /// The size of a full `g` reply in bytes.
    pub fn g_len(&self) -> usize {
        self.regs
            .last()
            .map_or(0, |r| r.offset + r.bits.div_ceil(8) as usize)
    }
}

fn load_annex<E: std::fmt::Display>(
    fetch: &mut dyn FnMut(&str) -> Result<String, E>,
    annex: &str,
    depth: usize,
    regs: &mut BTreeMap<u32, (String, u32)>,
    next: &mut u32,
    arch: &mut Option<String>,
) -> Result<(), TdescError> {
    if depth > 8 {
        return Err(TdescError::TooDeep(annex.to_string()));
    }
    let text = fetch(annex).map_err(|e| TdescError::Bad(annex.to_string(), e.to_string()))?;
    let xml = strip_comments(&text);
    if arch.is_none()
        && let Some(i) = xml.find("<architecture>")
        && let Some(j) = xml[i..].find("</architecture>")
    {
        *arch = Some(xml[i + 14..i + j].trim().to_string());
    }
    // Includes and registers in document order.
    let mut rest = xml.as_str();
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(inc) = tag.strip_prefix("xi:include") {
            let href = attr(inc, "href").ok_or_else(|| {
                TdescError::Bad(annex.to_string(), "xi:include without href".into())
            })?;
            load_annex(fetch, href, depth + 1, regs, next, arch)?;
        } else if let Some(reg) = tag.strip_prefix("reg")
            && reg.starts_with(|c: char| c.is_ascii_whitespace())
        {
            let name = attr(reg, "name")
                .ok_or_else(|| TdescError::Bad(annex.to_string(), "reg without name".into()))?;
            let bits: u32 = attr(reg, "bitsize")
                .and_then(|b| b.parse().ok())
                .filter(|b| *b > 0 && *b <= 4096)
                .ok_or_else(|| {
                    TdescError::Bad(annex.to_string(), format!("reg {name}: bad bitsize"))
                })?;
            let num = match attr(reg, "regnum") {
                Some(n) => n.parse().map_err(|_| {
                    TdescError::Bad(annex.to_string(), format!("reg {name}: bad regnum"))
                })?,
                None => *next,
            };
            regs.insert(num, (name.to_string(), bits));
            *next = num + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's x86_64 description, as its gdbstub serves it.
    const QEMU_TARGET: &str = r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target><architecture>i386:x86-64</architecture><xi:include href="i386-64bit.xml"/></target>"#;
    const QEMU_CORE: &str = include_str!("testdata/qemu-i386-64bit.xml");

    fn qemu() -> Layout {
        Layout::load(&mut |annex: &str| match annex {
            "target.xml" => Ok(QEMU_TARGET.to_string()),
            "i386-64bit.xml" => Ok(QEMU_CORE.to_string()),
            other => Err(format!("no annex {other}")),
        })
        .unwrap()
    }

    #[test]
    fn qemu_layout_with_include_and_comments() {
        let l = qemu();
        assert_eq!(l.arch.as_deref(), Some("i386:x86-64"));
        let names: Vec<&str> = l.regs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(&names[..3], ["rax", "rbx", "rcx"]);
        // Commented-out cs_base..es_base are not registers.
        assert!(!names.contains(&"ds_base"), "{names:?}");
        let off = |n: &str| l.find(n).unwrap().offset;
        assert_eq!(off("rip"), 16 * 8);
        assert_eq!(off("eflags"), 17 * 8);
        assert_eq!(off("cs"), 17 * 8 + 4);
        assert_eq!(off("fs_base"), 17 * 8 + 4 + 6 * 4);
        assert_eq!(off("gs_base"), off("fs_base") + 8);
        assert_eq!(off("cr3"), off("k_gs_base") + 8 + 8 + 8);
        assert_eq!(off("efer"), off("cr8") + 8);
        assert_eq!(off("st0"), off("efer") + 8);
        assert_eq!(off("fctrl"), off("st0") + 8 * 10);
        assert_eq!(off("xmm0"), off("fop") + 4);
        assert_eq!(off("mxcsr"), off("xmm15") + 16);
        assert_eq!(l.g_len(), off("mxcsr") + 4);
    }

    #[test]
    fn bad_descriptions_say_why() {
        let e = Layout::load(&mut |_: &str| {
            Ok::<_, String>("<target><reg bitsize=\"64\"/></target>".into())
        })
        .unwrap_err();
        assert!(e.to_string().contains("without name"), "{e}");
        let e = Layout::load(&mut |_: &str| {
            Ok::<_, String>("<target><xi:include href=\"target.xml\"/></target>".into())
        })
        .unwrap_err();
        assert!(matches!(e, TdescError::TooDeep(_)), "{e}");
        let e = Layout::load(&mut |_: &str| Err::<String, _>("E01")).unwrap_err();
        assert!(e.to_string().contains("E01"), "{e}");
    }
}
