//! The stub's readable event lines (`stream text` mode, what a gdb user
//! sees) read back into events, so the shell renders them even when the
//! stream is not in record mode:
//!
//! `event id=3 kind=kretprobe-return cpu=0 task=2 tsc=123 ip=0x10 args=0x1,0x2,0x3,0x4,0x5,0x6 ret=0xfffffffffffffffe dur=310 fetch=0x7,"a\x20b",<fault@0x8> stack=0011`

use proto::event::{Event, EventKind, FetchResult};

fn num(s: &str) -> Option<u64> {
    proto::command::parse_u64(s)
}

/// Split `fetch=` items at commas outside quotes.
fn fetch_items(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(s: &str) -> Option<Vec<u8>> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::new();
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            let h = inner.get(i + 2..i + 4)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Parse one `event ...` line; `None` when it is not one.
pub fn parse(line: &str) -> Option<Event> {
    let rest = line.trim().strip_prefix("event ")?;
    // `fetch=` may hold spaces inside strings: split it off first.
    let (head, fetch, stack) = {
        let (before, after) = match rest.find(" fetch=") {
            Some(i) => (&rest[..i], Some(&rest[i + 7..])),
            None => (rest, None),
        };
        let (fetch, stack) = match after {
            Some(a) => match a.rfind(" stack=") {
                Some(j) => (Some(&a[..j]), Some(&a[j + 7..])),
                None => (Some(a), None),
            },
            // Without `fetch=`, `stack=` is an ordinary field below.
            None => (None, None),
        };
        (before, fetch, stack)
    };
    let mut id = None;
    let mut kind = None;
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for kv in head.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "id" => id = u32::try_from(num(v)?).ok(),
            "kind" => {
                kind = Some(match v {
                    "kprobe" => EventKind::Kprobe,
                    "jprobe-entry" => EventKind::JprobeEntry,
                    "capture" => EventKind::Capture,
                    "kretprobe-return" => EventKind::KretprobeReturn,
                    _ => return None,
                })
            }
            _ => fields.push((k, v)),
        }
    }
    let mut ev = Event::new(id?, kind?);
    let mut stack_hex = stack;
    for (k, v) in fields {
        match k {
            "cpu" => ev.cpu = u8::try_from(num(v)?).ok()?,
            "task" => ev.task = u32::try_from(num(v)?).ok()?,
            "tsc" => ev.tsc = num(v)?,
            "ip" => ev.ip = num(v)?,
            "args" => {
                for (i, a) in v.split(',').enumerate().take(6) {
                    ev.args[i] = num(a)?;
                }
            }
            "ret" => ev.ret = Some(num(v)?),
            "dur" => ev.duration = Some(num(v)?),
            "stack" => stack_hex = Some(v),
            _ => {}
        }
    }
    if let Some(f) = fetch {
        for item in fetch_items(f.trim()) {
            if let Some(a) = item
                .strip_prefix("<fault@")
                .and_then(|x| x.strip_suffix('>'))
            {
                ev.push_result(FetchResult::Fault { addr: num(a)? }).ok()?;
            } else if item.starts_with('"') {
                ev.push_string(0, &unquote(item)?).ok()?;
            } else {
                ev.push_result(FetchResult::Value(num(item)?)).ok()?;
            }
        }
    }
    if let Some(h) = stack_hex {
        let bytes = crate::rsp::packet::from_hex(h.trim().as_bytes())?;
        ev.set_stack(&bytes);
    }
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_proto_display() {
        let mut e = Event::new(3, EventKind::KretprobeReturn);
        e.cpu = 1;
        e.task = 2;
        e.tsc = 12345;
        e.ip = 0x10_0200;
        e.args = [1, 2, 3, 4, 5, 6];
        e.ret = Some((-2i64) as u64);
        e.duration = Some(310);
        e.push_result(FetchResult::Value(7)).unwrap();
        e.push_string(0, b"a b,\"c\x01").unwrap();
        e.push_result(FetchResult::Fault { addr: 8 }).unwrap();
        e.set_stack(&[0, 0x11]);
        let line = e.to_string();
        let back = parse(&line).unwrap_or_else(|| panic!("{line}"));
        assert_eq!(back.probe_id, 3);
        assert_eq!(back.args, e.args);
        assert_eq!(back.ret, e.ret);
        assert_eq!(back.duration, Some(310));
        assert_eq!(back.results().len(), 3);
        assert_eq!(back.string_bytes(&back.results()[1]), b"a b,\"c\x01");
        assert_eq!(back.results()[2], FetchResult::Fault { addr: 8 });
        assert_eq!(back.stack(), &[0, 0x11]);
        let k = Event::new(1, EventKind::Kprobe).to_string();
        assert_eq!(parse(&k).unwrap().kind, EventKind::Kprobe);
    }

    #[test]
    fn not_events() {
        assert!(parse("ok id=3").is_none());
        assert!(parse("event id=x kind=kprobe").is_none());
        assert!(parse("event kind=kprobe").is_none());
        assert!(parse("event id=1 kind=bogus").is_none());
    }
}
