//! Map monitor commands (`maps`, `map print|clear|zero ID`): the maps of
//! aggregating probes, read from the probe core (`probes::map`) and written
//! as `proto::agg` rows. They run in the stop loop (the kernel is stopped),
//! so a print is one consistent snapshot and clear/zero race with no hit.

use core::fmt::{self, Write};

use probes::ProbeId;
use proto::agg::{KeyKinds, MapRow, write_entry};
use proto::command::MapAction;
use proto::reply::OkIdRow;

use crate::monitor::error;
use crate::probecmd::code_of;

/// Writes the `map` row of probe `id`'s map.
fn map_row(out: &mut dyn Write, id: ProbeId, info: &probes::map::MapInfo) -> fmt::Result {
    let mut kinds = [0u8; 64];
    let mut w = Buf {
        buf: &mut kinds,
        len: 0,
    };
    write!(w, "{}", KeyKinds(info.key_kinds()))?;
    let len = w.len;
    let keys = core::str::from_utf8(kinds.get(..len).unwrap_or(&[])).unwrap_or("-");
    let row = MapRow {
        id: id.0,
        func: info.func,
        keys,
        entries: info.entries,
        capacity: info.capacity,
        map_full: info.map_full,
        faults: info.faults,
        bytes: info.bytes,
    };
    writeln!(out, "{row}")
}

/// A small fixed buffer to format into.
struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `maps`: one `map` row per aggregating probe.
pub fn maps(out: &mut dyn Write) -> fmt::Result {
    let mut res = Ok(());
    let r = probes::commands::maps(&mut |id, info| {
        if res.is_ok() {
            res = map_row(out, id, info);
        }
    });
    match r {
        Ok(()) => res,
        Err(e) => error(out, code_of(e), &e),
    }
}

/// `map print|clear|zero ID`.
pub fn map(action: MapAction, id: u32, out: &mut dyn Write) -> fmt::Result {
    let r = probes::commands::with_map(ProbeId(id), |m| match action {
        MapAction::Print => {
            map_row(out, ProbeId(id), &m.info())?;
            let mut res = Ok(());
            m.for_each(&mut |key, stats, buckets| {
                if res.is_ok() {
                    res = write_entry(out, id, key, stats, &mut buckets.iter().copied());
                }
            });
            res
        }
        MapAction::Clear => {
            m.clear();
            writeln!(out, "{}", OkIdRow { id })
        }
        MapAction::Zero => {
            m.zero();
            writeln!(out, "{}", OkIdRow { id })
        }
    });
    match r {
        Ok(res) => res,
        Err(e) => error(out, code_of(e), &e),
    }
}
