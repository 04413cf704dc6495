//! Conditional breakpoints evaluated in the kernel.
//!
//! Two ways in, one mechanism (the probe core's [`probes::cond`]):
//! - kdbg's `monitor cond ADDR [if=HEX] [ignore=N]` with a program in kdbg's
//!   own bytecode ([`proto::bytecode`]); it survives the breakpoint being
//!   lifted and put back (stepping over it) and ends with `cond ADDR`.
//! - stock gdb's target-side conditions: the stub advertises
//!   `ConditionalBreakpoints+` and accepts `Z0,addr,kind;X len,AGENT...`;
//!   gdbstub 0.7 does not pass conditions through, so the packet is taken
//!   apart here, before gdbstub sees it: the agent expressions are
//!   translated and verified ([`proto::agent`]), the condition is set, and
//!   gdbstub gets the plain `Z0,addr,kind`. A plain `Z0` at the address ends
//!   a condition that came from gdb (gdb resends the breakpoint without
//!   conditions when the user removes them).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};

use probes::cond::{MAX_PROGRAMS, StopCond};
use proto::bytecode::Program;
use proto::reply::{ErrorCode, OkRow};

use crate::monitor::error;
use crate::probecmd::code_of;

/// `monitor cond ADDR [if=HEX] [ignore=N]`.
pub fn cond(addr: u64, prog: Option<Program>, ignore: u64, out: &mut dyn Write) -> fmt::Result {
    let c = if prog.is_none() && ignore == 0 {
        None
    } else {
        Some(StopCond::new(prog, ignore, false))
    };
    match probes::CORE.gdb_set_cond(addr, c) {
        Ok(()) => writeln!(out, "{OkRow}"),
        Err(e) => error(out, code_of(e), &e),
    }
}

/// `monitor conds`.
pub fn conds(out: &mut dyn Write) -> fmt::Result {
    let mut res = Ok(());
    let listed = probes::CORE.gdb_conds(&mut |c| {
        if res.is_ok() {
            res = writeln!(out, "{c}");
        }
    });
    match listed {
        Ok(()) => res,
        Err(e) => error(out, ErrorCode::Unavailable, &e),
    }
}

/// A `Z0` packet taken apart.
pub struct Z0 {
    pub addr: u64,
    /// The packet without its condition list: `$Z0,addr,kind#cs`.
    pub plain: [u8; 48],
    pub plain_len: usize,
    /// `None`: no condition list (a plain `Z0`).
    pub conds: Option<Result<StopCond, &'static str>>,
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |a, &c| {
        proto::hex::digit(c).map(|d| a << 4 | u64::from(d))
    })
}

/// Parses `$Z0,ADDR,KIND[;X LEN,HEX]...#cs`. `None`: not a `Z0` packet (or
/// one gdbstub should see as is).
pub fn parse_z0(packet: &[u8]) -> Option<Z0> {
    let body = packet.strip_prefix(b"$Z0,")?;
    let hash = body.iter().rposition(|&b| b == b'#')?;
    let body = body.get(..hash)?;
    let (head, rest) = match body.iter().position(|&b| b == b';') {
        Some(i) => (body.get(..i)?, Some(body.get(i + 1..)?)),
        None => (body, None),
    };
    let comma = head.iter().position(|&b| b == b',')?;
    let addr = hex_u64(head.get(..comma)?)?;
    if head.len() > 40 {
        return None;
    }
    let mut plain = [0u8; 48];
    let mut n = 0;
    for &b in b"$Z0,".iter().chain(head).chain(b"#") {
        *plain.get_mut(n)? = b;
        n += 1;
    }
    let sum = plain
        .get(1..n - 1)?
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b));
    let mut cs = [0u8; 2];
    proto::hex::encode(&[sum], &mut cs);
    plain.get_mut(n..n + 2)?.copy_from_slice(&cs);
    n += 2;
    let conds = rest.map(parse_conds);
    Some(Z0 {
        addr,
        plain,
        plain_len: n,
        conds,
    })
}

/// `X len,HEX;X len,HEX...` (a `cmds:` part is refused: kdbg runs no
/// target-side commands).
fn parse_conds(list: &[u8]) -> Result<StopCond, &'static str> {
    let mut progs: [Option<Program>; MAX_PROGRAMS] = [None; MAX_PROGRAMS];
    let mut n = 0;
    for item in list.split(|&b| b == b';') {
        if item.is_empty() {
            continue;
        }
        if item.starts_with(b"cmds") {
            return Err("target-side breakpoint commands are not supported");
        }
        let item = item.strip_prefix(b"X").ok_or("bad condition list")?;
        let comma = item
            .iter()
            .position(|&b| b == b',')
            .ok_or("bad condition list")?;
        let len = hex_u64(item.get(..comma).ok_or("bad condition list")?)
            .ok_or("bad condition length")? as usize;
        let hex = item.get(comma + 1..).ok_or("bad condition list")?;
        if hex.len() != 2 * len || len > proto::agent::MAX_AGENT {
            return Err("condition length does not match its bytes");
        }
        let mut bytes = [0u8; proto::agent::MAX_AGENT];
        let dst = bytes.get_mut(..len).ok_or("condition too long")?;
        if proto::hex::decode(hex, dst).is_none() {
            return Err("condition is not hex");
        }
        let prog = proto::agent::translate(dst).map_err(|_| "condition refused")?;
        let slot = progs
            .get_mut(n)
            .ok_or("too many conditions at one address")?;
        *slot = Some(prog);
        n += 1;
    }
    Ok(StopCond::new(progs.into_iter().flatten(), 0, true))
}

/// Applies a `Z0`'s conditions before gdbstub inserts the breakpoint.
/// `false`: refuse the packet (the caller answers `E22`).
pub fn before_z0(z: &mut Z0) -> bool {
    match z.conds.take() {
        None => {
            if probes::CORE.gdb_cond_from_agent(z.addr) {
                let _ = probes::CORE.gdb_set_cond(z.addr, None);
            }
            true
        }
        Some(Ok(c)) => probes::CORE.gdb_set_cond(z.addr, Some(c)).is_ok(),
        Some(Err(_)) => false,
    }
}

/// The outgoing side of `ConditionalBreakpoints+`: while armed, the next
/// packet the stub writes (gdbstub's `qSupported` reply) gets
/// `;ConditionalBreakpoints+` before its `#` and a new checksum.
static PATCH: AtomicU8 = AtomicU8::new(IDLE);
static PATCH_SUM: AtomicU8 = AtomicU8::new(0);
const IDLE: u8 = 0;
const ARMED: u8 = 1;
const BODY: u8 = 2;
const SUM1: u8 = 3;
const SUM2: u8 = 4;
const FEATURE: &[u8] = b";ConditionalBreakpoints+";

/// Arms the rewrite for the reply to the `qSupported` about to be fed.
pub fn arm_qsupported() {
    PATCH.store(ARMED, Ordering::Relaxed);
}

/// Disarms it (after the reply, or if none came).
pub fn disarm() {
    PATCH.store(IDLE, Ordering::Relaxed);
}

/// Writes one outgoing byte through the rewrite.
pub fn write_byte(uart: &arch::uart::Uart, b: u8) {
    match PATCH.load(Ordering::Relaxed) {
        IDLE => uart.write_byte(b),
        ARMED => {
            if b == b'$' {
                PATCH.store(BODY, Ordering::Relaxed);
                PATCH_SUM.store(0, Ordering::Relaxed);
            }
            uart.write_byte(b);
        }
        BODY => {
            if b == b'#' {
                let mut sum = PATCH_SUM.load(Ordering::Relaxed);
                for &f in FEATURE {
                    sum = sum.wrapping_add(f);
                }
                uart.write_bytes(FEATURE);
                uart.write_byte(b'#');
                let mut cs = [0u8; 2];
                proto::hex::encode(&[sum], &mut cs);
                uart.write_bytes(&cs);
                PATCH.store(SUM1, Ordering::Relaxed);
            } else {
                PATCH_SUM.store(
                    PATCH_SUM.load(Ordering::Relaxed).wrapping_add(b),
                    Ordering::Relaxed,
                );
                uart.write_byte(b);
            }
        }
        // gdbstub's own checksum digits: replaced above.
        SUM1 => PATCH.store(SUM2, Ordering::Relaxed),
        _ => PATCH.store(IDLE, Ordering::Relaxed),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn z0_packets_come_apart() {
        let z = parse_z0(b"$Z0,174f50,1#xx").unwrap();
        assert_eq!(z.addr, 0x174f50);
        assert_eq!(&z.plain[..z.plain_len], b"$Z0,174f50,1#7a");
        assert!(z.conds.is_none());
        // `n == 5` in rdi: reg 5; const8 5; equal; end
        let z = parse_z0(b"$Z0,1000,1;X7,26000522051327#xx").unwrap();
        assert_eq!(&z.plain[..z.plain_len], b"$Z0,1000,1#d4");
        assert!(matches!(z.conds, Some(Ok(_))));
        let z = parse_z0(b"$Z0,1000,1;X7,26000522051327;X3,220127#xx").unwrap();
        assert!(matches!(z.conds, Some(Ok(_))));
        for bad in [
            &b"$Z0,1000,1;X3,2600#xx"[..],
            b"$Z0,1000,1;X1,34#xx",
            b"$Z0,1000,1;cmds:0,X1,27#xx",
            b"$Z0,1000,1;Y1,27#xx",
        ] {
            assert!(matches!(parse_z0(bad).unwrap().conds, Some(Err(_))));
        }
        assert!(parse_z0(b"$Z1,1000,1#xx").is_none());
        assert!(parse_z0(b"$Z0,zz,1#xx").is_none());
    }
}
