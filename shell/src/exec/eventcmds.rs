//! events, live, filter, hist, wait, sleep.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::cmd::Invocation;
use crate::cmd::parse::{amount, count, number, split_options};
use crate::events::Filter;
use crate::output::{Output, RingCounters};
use crate::session::Session;

fn parse_filter(s: &Session, opts: &[(String, String)]) -> Result<Filter> {
    let mut f = Filter::default();
    for (k, v) in opts {
        // task=fork-worker: a task name works too.
        let by_name = (k == "task" && !v.starts_with(|c: char| c.is_ascii_digit()))
            .then(|| s.shared.display.task_named(v))
            .flatten();
        let n = match by_name {
            Some(id) => id,
            None if k == "task" && !v.starts_with(|c: char| c.is_ascii_digit()) => {
                bail!("no task named `{v}` (`threads` lists them)")
            }
            None => u32::try_from(number(v.trim_start_matches('#'))?)
                .map_err(|_| anyhow!("`{k}={v}` is out of range"))?,
        };
        match k.as_str() {
            "probe" => f.probe = Some(n),
            "task" => f.task = Some(n),
            _ => bail!("unknown filter `{k}=`: use probe=ID and/or task=ID"),
        }
    }
    Ok(f)
}

pub fn events(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let (opts, rest) = split_options(args);
    let n = match rest.as_slice() {
        [] => 20,
        [n] => amount(n)? as usize,
        _ => bail!("usage: events [N] [probe=ID] [task=ID]"),
    };
    let mut filter = parse_filter(s, &opts)?;
    if opts.is_empty() {
        filter = s.shared.display.filter();
    }
    let ring = if s.connected() {
        s.monitor("events").ok().and_then(|t| {
            t.lines()
                .find_map(|l| proto::reply::EventsRow::parse(l).ok())
                .map(|r| RingCounters {
                    size: r.size,
                    produced: r.produced,
                    delivered: r.delivered,
                    dropped: r.dropped,
                })
        })
    } else {
        None
    };
    Ok(Output::Events {
        events: s.shared.display.store().last(n, &filter),
        kept: s.shared.display.store().kept() as u64,
        ring,
        received: s.shared.display.store().total(),
        filter,
    })
}

pub fn live(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let on = match args.first().map(String::as_str) {
        None => !s.shared.display.live(),
        Some("on") => true,
        Some("off") => false,
        Some(x) => bail!("`live {x}`: use live on or live off"),
    };
    s.shared.display.set_live(on);
    Ok(Output::Message {
        text: format!(
            "live event display {}",
            if on {
                "on"
            } else {
                "off (events are still recorded: `events`)"
            }
        ),
    })
}

pub fn filter(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let f = if args.first().map(String::as_str) == Some("off") {
        Filter::default()
    } else {
        let (opts, rest) = split_options(args);
        if !rest.is_empty() {
            bail!("usage: filter [probe=ID] [task=ID] | filter off");
        }
        parse_filter(s, &opts)?
    };
    s.shared.display.set_filter(f.clone());
    Ok(Output::Message {
        text: if f.is_empty() {
            "filter off: all events shown".into()
        } else {
            format!(
                "showing only{}{}",
                f.probe.map(|p| format!(" probe #{p}")).unwrap_or_default(),
                f.task.map(|t| format!(" task {t}")).unwrap_or_default()
            )
        },
    })
}

/// `hist PROBE [lat|ret|ARG]`: over every event of the probe since it was
/// set (aggregated as they arrive, see `record::agg`).
pub fn hist(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let (id, what) = match args {
        [id] => (id, None),
        [id, w] => (id, Some(w.as_str())),
        _ => bail!("usage: hist PROBE [lat|ret|ARG]"),
    };
    let probe = u32::try_from(number(id.trim_start_matches('#'))?)
        .map_err(|_| anyhow!("bad probe id `{id}`"))?;
    let agg = s.shared.display.store().probe_agg(probe);
    let def = s.shared.probes.get_any(probe);
    if def.is_none() && agg.is_none() {
        bail!("no probe #{probe} in this session (`probes` lists them)");
    }
    let kind = def.as_ref().map(|d| d.kind).unwrap_or_default();
    let h = crate::record::agg::hist(agg.as_ref(), probe, kind, what)?;
    Ok(Output::Hist {
        probe,
        what: h.what,
        unit: h.unit,
        buckets: h.buckets,
        events: h.events,
        values: h.values,
    })
}

pub fn wait(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let usage = "usage: wait events N [timeout S] | wait stop [timeout S]";
    match args {
        [w] if w == "stop" => return wait_stop(s, 10.0),
        [w, t, secs] if w == "stop" && t == "timeout" => return wait_stop(s, seconds(secs)?),
        _ => {}
    }
    let (n, timeout) = match args {
        [w, n] if w == "events" => (count(n)?, 10.0),
        [w, n, t, secs] if w == "events" && t == "timeout" => (count(n)?, seconds(secs)?),
        _ => bail!(usage),
    };
    let start = s.shared.display.store().total();
    let target = start + n;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    crate::session::CANCEL.store(false, Ordering::SeqCst);
    let mut total = start;
    while Instant::now() < deadline && total < target {
        if crate::session::CANCEL.swap(false, Ordering::SeqCst) {
            bail!("wait cancelled after {} of {n} events", total - start);
        }
        total = s
            .shared
            .display
            .store()
            .wait_total(target, Duration::from_millis(100));
        if !s.connected() {
            bail!(
                "connection lost while waiting ({} of {n} events arrived); use `reconnect`",
                total - start
            );
        }
    }
    let got = total - start;
    if got < n {
        bail!(
            "timed out after {timeout}s: {got} of {n} events arrived (are the probes hit? `probes` shows hits)"
        );
    }
    Ok(Output::Waited {
        what: "events".into(),
        wanted: n,
        received: got,
    })
}

/// `wait stop`: until the kernel stops on its own (breakpoint, watchpoint,
/// fatal trap). The stop notice itself is printed by the event path.
fn wait_stop(s: &mut Session, timeout: f64) -> Result<Output> {
    if !s.connected() {
        bail!("not connected: `reconnect`, or start kdbg with --connect/--kernel");
    }
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    crate::session::CANCEL.store(false, Ordering::SeqCst);
    let already_stopped = !s.running();
    while s.running() {
        if crate::session::CANCEL.swap(false, Ordering::SeqCst) {
            bail!("wait cancelled; the kernel is still running");
        }
        if !s.connected() {
            bail!("connection lost while waiting for a stop; use `reconnect`");
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout}s: the kernel is still running (is the breakpoint hit? `info breakpoints`)"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Output::WaitedStop {
        what: "stop".into(),
        already_stopped,
    })
}

fn seconds(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| anyhow!("bad duration `{s}`: use seconds, e.g. 2 or 0.5"))?;
    if !(0.0..=86400.0).contains(&v) {
        bail!("duration `{s}` out of range (0 to 86400 seconds)");
    }
    Ok(v)
}

pub fn sleep(_s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let [secs] = args else {
        bail!("usage: sleep S");
    };
    let d = Duration::from_secs_f64(seconds(secs)?);
    let end = Instant::now() + d;
    crate::session::CANCEL.store(false, Ordering::SeqCst);
    while Instant::now() < end {
        if crate::session::CANCEL.swap(false, Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    Ok(Output::None)
}
