//! regs, and what other state commands share (addresses, memory reads).

use anyhow::{Result, anyhow, bail};

use super::locate::resolve;
use crate::cmd::Invocation;
use crate::output::*;
use crate::regs::decode_eflags;
use crate::session::Session;

pub fn regs(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let verbose = match args {
        [] => false,
        [v] if v == "-v" => true,
        _ => bail!("usage: regs [-v]"),
    };
    let r = s.registers()?;
    Ok(Output::Regs {
        flags: decode_eflags(r.eflags),
        location: s.shared.describe(r.rip),
        regs: r,
        verbose,
    })
}

/// An address: `$reg`, a symbol, a number, `file:line`.
pub(super) fn address_of(s: &Session, text: &str) -> Result<(u64, String)> {
    if let Some(reg) = text
        .strip_prefix('$')
        .or_else(|| text.strip_prefix('%'))
        .filter(|r| r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .filter(|r| crate::regs::RegisterFile::default().get(r).is_some())
    {
        if s.running() {
            bail!(
                "`{text}`: registers are only known while the kernel is stopped: use `interrupt` first"
            );
        }
        let regs = s.registers()?;
        let v = regs
            .get(reg)
            .ok_or_else(|| anyhow!("unknown register `{text}`: use $rsp, $rip, $rdi, ..."))?;
        return Ok((v, text.to_string()));
    }
    match resolve(&s.shared, text) {
        Ok(r) => Ok((r.addr, r.name)),
        // Any expression: `x/4gx $rsp+8`, `x &req->inner`, `x/s req->name`.
        Err(e) => super::inspect::address_of_expr(s, text).map_err(|ee| {
            if text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                e
            } else {
                ee
            }
        }),
    }
}

pub(super) fn read_mem(s: &Session, addr: u64, len: usize) -> Result<Vec<u8>> {
    s.client()?.read_memory(addr, len).map_err(|e| match e {
        crate::rsp::RspError::Remote { code, .. } => anyhow!(
            "cannot read {len} bytes at {addr:#x}: unmapped or not canonical (the stub answered {code})"
        ),
        e => anyhow!("cannot read {len} bytes at {addr:#x}: {e}"),
    })
}
