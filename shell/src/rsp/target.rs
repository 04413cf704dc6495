//! Typed requests over the client: registers, memory, breakpoints,
//! threads, and stop replies.

use super::client::{Client, RspError, check_ok};
use super::packet;

/// A parsed stop reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct StopReply {
    pub signal: u8,
    pub thread: Option<u64>,
    /// `watch`/`rwatch`/`awatch` address.
    pub watch: Option<(String, u64)>,
    /// `swbreak` / `hwbreak`.
    pub reason: Option<String>,
    /// `W`/`X`: the target exited.
    pub exited: Option<u8>,
}

impl StopReply {
    pub fn parse(text: &str) -> Option<StopReply> {
        let kind = text.chars().next()?;
        let sig = u8::from_str_radix(text.get(1..3)?, 16).ok()?;
        let mut s = StopReply {
            signal: sig,
            ..Default::default()
        };
        match kind {
            'S' => {}
            'W' | 'X' => s.exited = Some(sig),
            'T' => {
                for kv in text.get(3..)?.split(';').filter(|x| !x.is_empty()) {
                    let (k, v) = kv.split_once(':').unwrap_or((kv, ""));
                    match k {
                        "thread" => {
                            let v = v.rsplit('.').next().unwrap_or(v);
                            s.thread = u64::from_str_radix(v.trim_start_matches('p'), 16).ok();
                        }
                        "watch" | "rwatch" | "awatch" => {
                            s.watch = u64::from_str_radix(v, 16).ok().map(|a| (k.to_string(), a));
                        }
                        "swbreak" | "hwbreak" => s.reason = Some(k.to_string()),
                        _ => {}
                    }
                }
            }
            _ => return None,
        }
        Some(s)
    }

    pub fn signal_name(&self) -> &'static str {
        match self.signal {
            2 => "SIGINT",
            5 => "SIGTRAP",
            9 => "SIGKILL",
            11 => "SIGSEGV",
            6 => "SIGABRT",
            4 => "SIGILL",
            7 => "SIGBUS",
            8 => "SIGFPE",
            _ => "signal",
        }
    }
}

/// Breakpoint kinds of `Z`/`z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    Software,
    Hardware,
    Write,
    Read,
    Access,
}

impl BreakKind {
    fn code(self) -> u8 {
        match self {
            BreakKind::Software => 0,
            BreakKind::Hardware => 1,
            BreakKind::Write => 2,
            BreakKind::Read => 3,
            BreakKind::Access => 4,
        }
    }
}

impl Client {
    pub fn read_registers(&mut self) -> Result<String, RspError> {
        let r = self.request_str("g")?;
        if r.starts_with('E') && r.len() == 3 {
            return Err(RspError::Remote {
                request: "read registers (g)".into(),
                code: r,
            });
        }
        Ok(r)
    }

    /// Read memory: from the shared mapping when there is one (pages it
    /// cannot serve go to the stub), else through the stub.
    pub fn read_memory(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, RspError> {
        let Some(g) = self.guest.clone() else {
            return self.read_memory_stub(addr, len);
        };
        let mut out = vec![0u8; len];
        let mut stub_err = None;
        let r = g.read(
            addr,
            &mut out,
            &mut |a, buf| match self.read_memory_stub(a, buf.len()) {
                Ok(b) if b.len() == buf.len() => {
                    buf.copy_from_slice(&b);
                    Ok(())
                }
                Ok(_) => Err(a),
                Err(e) => {
                    stub_err = Some(e);
                    Err(a)
                }
            },
        );
        if let Some(e) = stub_err {
            return Err(e);
        }
        match r {
            Ok(()) => Ok(out),
            // What the stub answers for an unmapped address (EFAULT).
            Err(a) => Err(RspError::Remote {
                request: format!(
                    "read {} bytes at {a:#x}",
                    len - (a.wrapping_sub(addr) as usize).min(len)
                ),
                code: "E0e".into(),
            }),
        }
    }

    /// Read memory through the stub: binary `x` reads when the stub
    /// answers them (half the bytes of hex on the line), else hex `m`.
    pub fn read_memory_stub(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, RspError> {
        if self.kdbg && self.binary_reads != Some(false) {
            match self.read_memory_x(addr, len) {
                Ok(Some(v)) => {
                    self.binary_reads = Some(true);
                    return Ok(v);
                }
                Ok(None) => self.binary_reads = Some(false),
                Err(e) => return Err(e),
            }
        }
        self.read_memory_m(addr, len)
    }

    /// Binary reads (`x ADDR,LEN`, reply `b` + escaped bytes); `None` when
    /// the stub does not know `x` (an empty reply).
    fn read_memory_x(&mut self, addr: u64, len: usize) -> Result<Option<Vec<u8>>, RspError> {
        let chunk = self
            .features
            .packet_size
            .saturating_sub(64)
            .clamp(16, 16 * 1024);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let a = addr.wrapping_add(out.len() as u64);
            let n = chunk.min(len - out.len());
            let req = format!("x{a:x},{n:x}");
            let r = self.request(req.as_bytes())?;
            if r.is_empty() && out.is_empty() && self.binary_reads.is_none() {
                return Ok(None);
            }
            match r.first() {
                Some(b'b') => {}
                _ => {
                    return Err(RspError::Remote {
                        request: format!("read {n} bytes at {a:#x}"),
                        code: if r.is_empty() {
                            "(empty)".into()
                        } else {
                            String::from_utf8_lossy(&r).into_owned()
                        },
                    });
                }
            }
            let bytes = packet::unescape(&r[1..]);
            if bytes.is_empty() || bytes.len() > n {
                return Err(RspError::Unexpected {
                    request: req,
                    reply: String::from_utf8_lossy(&r).into_owned(),
                });
            }
            out.extend_from_slice(&bytes);
        }
        out.truncate(len);
        Ok(Some(out))
    }

    /// Hex reads (`m ADDR,LEN`) in packet-sized chunks.
    pub fn read_memory_m(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, RspError> {
        let chunk = (self.features.packet_size.saturating_sub(16) / 2).clamp(16, 2048);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let a = addr.wrapping_add(out.len() as u64);
            let n = chunk.min(len - out.len());
            let req = format!("m{a:x},{n:x}");
            let r = self.request_str(&req)?;
            if r.starts_with('E') || r.is_empty() {
                return Err(RspError::Remote {
                    request: format!("read {n} bytes at {a:#x}"),
                    code: if r.is_empty() { "(empty)".into() } else { r },
                });
            }
            let bytes = packet::from_hex(r.as_bytes()).ok_or_else(|| RspError::Unexpected {
                request: req.clone(),
                reply: r.clone(),
            })?;
            if bytes.is_empty() {
                return Err(RspError::Remote {
                    request: format!("read at {a:#x}"),
                    code: "no bytes".into(),
                });
            }
            out.extend_from_slice(&bytes);
        }
        out.truncate(len);
        Ok(out)
    }

    pub fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), RspError> {
        let req = format!("M{addr:x},{:x}:{}", data.len(), packet::to_hex(data));
        let r = self.request_str(&req)?;
        check_ok(&format!("write {} bytes at {addr:#x}", data.len()), &r)
    }

    pub fn set_breakpoint(&mut self, kind: BreakKind, addr: u64, len: u64) -> Result<(), RspError> {
        let r = self.request_str(&format!("Z{},{addr:x},{len:x}", kind.code()))?;
        check_ok(&format!("set breakpoint at {addr:#x}"), &r)
    }

    pub fn clear_breakpoint(
        &mut self,
        kind: BreakKind,
        addr: u64,
        len: u64,
    ) -> Result<(), RspError> {
        let r = self.request_str(&format!("z{},{addr:x},{len:x}", kind.code()))?;
        check_ok(&format!("remove breakpoint at {addr:#x}"), &r)
    }

    /// Thread ids from `qfThreadInfo`/`qsThreadInfo`.
    pub fn thread_ids(&mut self) -> Result<Vec<u64>, RspError> {
        let mut ids = Vec::new();
        let mut r = self.request_str("qfThreadInfo")?;
        for _ in 0..1000 {
            match r.strip_prefix('m') {
                Some(list) => {
                    for t in list.split(',') {
                        if let Some((pid, tid)) = super::client::parse_thread_id(t) {
                            if let Some(pid) = pid {
                                self.note_pid(pid);
                            }
                            ids.push(tid);
                        }
                    }
                    r = self.request_str("qsThreadInfo")?;
                }
                None => break,
            }
        }
        Ok(ids)
    }

    pub fn thread_extra_info(&mut self, id: u64) -> Result<String, RspError> {
        let r = self.request_str(&format!("qThreadExtraInfo,{}", self.thread_arg(id)))?;
        Ok(packet::from_hex(r.as_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    }

    pub fn select_thread(&mut self, id: u64) -> Result<(), RspError> {
        let r = self.request_str(&format!("Hg{}", self.thread_arg(id)))?;
        check_ok(&format!("select thread {id}"), &r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_replies() {
        let s = StopReply::parse("T05thread:02;swbreak:;").unwrap();
        assert_eq!(s.signal, 5);
        assert_eq!(s.thread, Some(2));
        assert_eq!(s.reason.as_deref(), Some("swbreak"));
        let w = StopReply::parse("T05watch:ffff8000001000;thread:p1.3;").unwrap();
        assert_eq!(w.watch, Some(("watch".into(), 0x00ff_ff80_0000_1000)));
        assert_eq!(w.thread, Some(3));
        assert_eq!(StopReply::parse("S02").unwrap().signal_name(), "SIGINT");
        assert_eq!(StopReply::parse("W00").unwrap().exited, Some(0));
        assert!(StopReply::parse("OK").is_none());
        assert!(StopReply::parse("T").is_none());
    }
}
