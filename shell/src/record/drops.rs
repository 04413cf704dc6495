//! Drop notices, rate-limited and summarised: the stub reports a probe's
//! total drops whenever they grow (possibly every tick); the shell shows
//! the first growth at once, then at most one summary per probe every
//! [`INTERVAL`] (`dropped 1234 events of probe #2 in the last 5 s`),
//! whether the live display is on or off, and always in `--json`.
//!
//! Locking rule: one mutex, taken and released inside each method.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one summary per this interval.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One line to show: `new` events of `probe` lost over `seconds`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub probe: u32,
    /// Dropped since the previous notice.
    pub new: u64,
    /// Dropped since the probe was set (the kernel's counter).
    pub total: u64,
    /// The time the notice covers (0 for the first notice of a burst).
    pub seconds: f64,
    /// Events stored before the latest drop report it covers.
    pub after_seq: u64,
    /// The first notice after a quiet interval (shown at once).
    pub first: bool,
}

impl Summary {
    pub fn text(&self) -> String {
        let events = if self.new == 1 { "event" } else { "events" };
        if self.first {
            format!(
                "dropped {} {events} of probe #{} (kernel ring full; {} in total); further drops are summarised every {} s",
                self.new,
                self.probe,
                self.total,
                INTERVAL.as_secs()
            )
        } else {
            format!(
                "dropped {} {events} of probe #{} in the last {:.0} s ({} in total)",
                self.new, self.probe, self.seconds, self.total
            )
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "probe": self.probe,
            "dropped": self.total,
            "new": self.new,
            "seconds": self.seconds,
            "after_seq": self.after_seq,
        })
    }
}

#[derive(Default)]
struct Inner {
    /// The last total the stub reported, per probe.
    totals: HashMap<u32, u64>,
    /// Drops not shown yet: (count, since, after_seq).
    pending: BTreeMap<u32, (u64, Instant, u64)>,
    /// When the last notice of each probe was shown.
    shown: HashMap<u32, Instant>,
}

#[derive(Default)]
pub struct DropNotices {
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DropNotices {
    /// The stub reports `total` drops of `probe`; `after_seq` is the number
    /// of events stored so far. Returns a notice to show now, if one is due.
    pub fn report(&self, probe: u32, total: u64, after_seq: u64, now: Instant) -> Option<Summary> {
        let mut i = lock(&self.inner);
        let last = i.totals.insert(probe, total).unwrap_or(0);
        // A smaller total: the probe id was reused or the kernel rebooted.
        let new = if total >= last { total - last } else { total };
        if new == 0 {
            return None;
        }
        let quiet = i
            .shown
            .get(&probe)
            .is_none_or(|t| now.duration_since(*t) >= INTERVAL);
        if quiet && !i.pending.contains_key(&probe) {
            i.shown.insert(probe, now);
            return Some(Summary {
                probe,
                new,
                total,
                seconds: 0.0,
                after_seq,
                first: true,
            });
        }
        let e = i.pending.entry(probe).or_insert((0, now, after_seq));
        e.0 += new;
        e.2 = after_seq;
        None
    }

    /// Summaries whose interval is over (call about once a second).
    pub fn due(&self, now: Instant) -> Vec<Summary> {
        let mut i = lock(&self.inner);
        let ready: Vec<u32> = i
            .pending
            .keys()
            .copied()
            .filter(|p| {
                i.shown
                    .get(p)
                    .is_none_or(|t| now.duration_since(*t) >= INTERVAL)
            })
            .collect();
        let mut out = Vec::new();
        for p in ready {
            let Some((new, _, after_seq)) = i.pending.remove(&p) else {
                continue;
            };
            let since = i.shown.insert(p, now).unwrap_or(now);
            out.push(Summary {
                probe: p,
                new,
                total: i.totals.get(&p).copied().unwrap_or(new),
                seconds: now.duration_since(since).as_secs_f64(),
                after_seq,
                first: false,
            });
        }
        out
    }

    /// A probe was set under `probe`: its counter starts again.
    pub fn reset(&self, probe: u32) {
        let mut i = lock(&self.inner);
        i.totals.remove(&probe);
        i.pending.remove(&probe);
        i.shown.remove(&probe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_at_once_then_one_summary_per_interval() {
        let d = DropNotices::default();
        let t0 = Instant::now();
        let s = d
            .report(2, 10, 100, t0)
            .expect("the first drops show at once");
        assert_eq!((s.new, s.total, s.first), (10, 10, true));
        assert_eq!(
            s.text(),
            "dropped 10 events of probe #2 (kernel ring full; 10 in total); further drops are summarised every 5 s"
        );
        // Reports every tick for the next 5 s: nothing shown, all counted.
        for k in 1..50u64 {
            let at = t0 + Duration::from_millis(100 * k);
            assert_eq!(d.report(2, 10 + k * 3, 100 + k, at), None);
            assert!(d.due(at).is_empty());
        }
        // The same total again adds nothing.
        assert_eq!(
            d.report(2, 10 + 49 * 3, 149, t0 + Duration::from_secs(4)),
            None
        );
        let at = t0 + INTERVAL;
        let v = d.due(at);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].new, v[0].total, v[0].after_seq), (147, 157, 149));
        assert_eq!(
            v[0].text(),
            "dropped 147 events of probe #2 in the last 5 s (157 in total)"
        );
        assert!(
            d.due(at + INTERVAL).is_empty(),
            "nothing new, nothing shown"
        );
        // Quiet for an interval: the next drop shows at once again.
        let later = at + INTERVAL * 2;
        assert!(
            d.report(2, 160, 200, later)
                .is_some_and(|s| s.first && s.new == 3)
        );
        // Another probe has its own interval.
        assert!(d.report(5, 1, 201, later).is_some());
        d.reset(2);
        assert_eq!(d.report(2, 4, 202, later).map(|s| s.new), Some(4));
    }
}
