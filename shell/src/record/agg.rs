//! Incremental aggregation of events per probe: what `hist` plots, over
//! every event since the probe was set (not a window of kept events).
//! Updated once per stored event; a probe costs a few power-of-two bucket
//! maps (at most 129 buckets each), whatever the number of events.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::events::{Bucket, EventView, bucket_key, buckets_from};

/// Counts per power-of-two bucket of one value series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub counts: BTreeMap<i32, u64>,
    /// Values added.
    pub n: u64,
}

impl Series {
    pub fn add(&mut self, v: i128) {
        *self.counts.entry(bucket_key(v)).or_default() += 1;
        self.n += 1;
    }
    pub fn buckets(&self) -> Vec<Bucket> {
        buckets_from(&self.counts)
    }
}

/// What one probe's events added up to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeAgg {
    /// Events of the probe since it was set (or since the aggregation began).
    pub events: u64,
    /// The kind of its events (`kretprobe`, `jprobe`, ...).
    pub kind: &'static str,
    /// Captured argument names, in the order first seen.
    pub args: Vec<String>,
    /// Numeric arguments by name.
    pub numeric: BTreeMap<String, Series>,
    pub lat_ns: Series,
    pub lat_cycles: Series,
    pub ret: Series,
}

fn number(v: &serde_json::Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
}

impl ProbeAgg {
    pub fn add(&mut self, v: &EventView) {
        self.events += 1;
        self.kind = v.kind;
        for a in &v.args {
            if !self.args.contains(&a.name) {
                self.args.push(a.name.clone());
            }
            if let Some(n) = number(&a.value) {
                self.numeric.entry(a.name.clone()).or_default().add(n);
            }
        }
        if let Some(d) = v.duration_ns {
            self.lat_ns.add(d as i128);
        }
        if let Some(t) = v.duration_tsc {
            self.lat_cycles.add(i128::from(t));
        }
        if let Some(r) = &v.ret {
            self.ret
                .add(r.value.as_i64().map(i128::from).unwrap_or(r.raw as i128));
        }
    }

    fn numeric_names(&self) -> String {
        let names: Vec<&str> = self
            .args
            .iter()
            .filter(|a| self.numeric.contains_key(*a))
            .map(String::as_str)
            .collect();
        if names.is_empty() {
            "none captured".into()
        } else {
            names.join(", ")
        }
    }
}

/// Aggregates of every probe.
#[derive(Debug, Clone, Default)]
pub struct Agg {
    probes: BTreeMap<u32, ProbeAgg>,
}

impl Agg {
    pub fn add(&mut self, v: &EventView) {
        self.probes.entry(v.probe).or_default().add(v);
    }

    /// A probe was (re)set under this id: start its aggregation afresh.
    pub fn reset(&mut self, probe: u32) {
        self.probes.remove(&probe);
    }

    pub fn probe(&self, probe: u32) -> Option<&ProbeAgg> {
        self.probes.get(&probe)
    }

    /// Events per probe.
    pub fn counts(&self) -> BTreeMap<u32, u64> {
        self.probes.iter().map(|(k, v)| (*k, v.events)).collect()
    }
}

/// A histogram ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    /// `lat`, `ret` or an argument's name.
    pub what: String,
    /// `ns`, `cycles` or `value`.
    pub unit: String,
    pub buckets: Vec<Bucket>,
    /// Values in the histogram.
    pub values: u64,
    /// Events of the probe it was made from.
    pub events: u64,
}

/// The histogram `hist PROBE [WHAT]` shows: `kind` is the probe's kind
/// when known from its definition ("" when not).
pub fn hist(p: Option<&ProbeAgg>, probe: u32, kind: &str, what: Option<&str>) -> Result<Hist> {
    let empty = ProbeAgg::default();
    let a = p.unwrap_or(&empty);
    let kind = if kind.is_empty() { a.kind } else { kind };
    let what = match what {
        Some("ret") => "ret".to_string(),
        Some("lat") | Some("latency") => "lat".to_string(),
        Some(w) if a.args.iter().any(|n| n == w) => w.to_string(),
        Some(w) if a.events == 0 => bail!(
            "no events of probe #{probe} yet: nothing to plot for `{w}` (`wait events N` waits for some)"
        ),
        Some(w) => bail!(
            "`hist {probe} {w}`: use lat (latency), ret (return values) or a captured argument ({})",
            a.args.join(", ")
        ),
        None if a.lat_cycles.n > 0 || a.lat_ns.n > 0 || kind == "kretprobe" => "lat".to_string(),
        None => "ret".to_string(),
    };
    let (series, unit) = match what.as_str() {
        "lat" if a.lat_ns.n > 0 => (&a.lat_ns, "ns"),
        "lat" => (&a.lat_cycles, "cycles"),
        "ret" => (&a.ret, "value"),
        w => (a.numeric.get(w).unwrap_or(&empty.ret), "value"),
    };
    if series.n == 0 && a.events > 0 {
        if what != "lat" && what != "ret" {
            bail!(
                "`{what}` of probe #{probe} is not a number (a string or pointer text cannot be plotted): use one of its numeric arguments ({}){}",
                a.numeric_names(),
                if kind == "kretprobe" {
                    ", lat or ret"
                } else {
                    ""
                }
            );
        }
        let noun = if what == "lat" {
            "latencies"
        } else {
            "return values"
        };
        if kind != "kretprobe" {
            bail!(
                "probe #{probe} is a {}: only kretprobes have {noun}; plot a numeric argument instead ({})",
                if kind.is_empty() {
                    "probe without returns"
                } else {
                    kind
                },
                a.numeric_names()
            );
        }
        bail!("probe #{probe} has no {noun} yet");
    }
    Ok(Hist {
        what,
        unit: unit.into(),
        buckets: series.buckets(),
        values: series.n,
        events: a.events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ValueView, sample};

    pub(crate) fn ev(probe: u32, n: u64, ret: Option<i64>) -> EventView {
        EventView {
            probe,
            kind: if ret.is_some() { "kretprobe" } else { "jprobe" },
            task: 1,
            function: "fib".into(),
            addr: 0x1000,
            args: vec![
                ValueView {
                    name: "n".into(),
                    type_name: "u64".into(),
                    value: n.into(),
                    text: n.to_string(),
                },
                sample::path_arg("/x"),
            ],
            ret: ret.map(sample::ret),
            duration_ns: ret.map(|_| 1500.0),
            duration_tsc: ret.map(|_| 3000),
            ..EventView::default()
        }
    }

    /// Every event counts, however many there are (no window).
    #[test]
    fn counts_every_event() {
        let mut a = Agg::default();
        for i in 0..25_000u64 {
            a.add(&ev(1, i % 8, None));
        }
        let h = hist(a.probe(1), 1, "jprobe", Some("n")).unwrap();
        assert_eq!(h.events, 25_000);
        assert_eq!(h.values, 25_000);
        let total: u64 = h.buckets.iter().map(|b| b.count).sum();
        assert_eq!(total, 25_000);
        // n in 0..8: 0 -> [0,1), 1 -> [1,2), 2,3 -> [2,4), 4..7 -> [4,8).
        let counts: Vec<u64> = h.buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![3125, 3125, 6250, 12_500]);
        a.reset(1);
        assert!(a.probe(1).is_none());
    }

    #[test]
    fn defaults_and_refusals() {
        let mut a = Agg::default();
        a.add(&ev(2, 1, Some(-2)));
        a.add(&ev(2, 1, Some(3)));
        let h = hist(a.probe(2), 2, "kretprobe", None).unwrap();
        assert_eq!((h.what.as_str(), h.unit.as_str()), ("lat", "ns"));
        let r = hist(a.probe(2), 2, "kretprobe", Some("ret")).unwrap();
        assert_eq!(r.values, 2);
        let e = hist(a.probe(2), 2, "kretprobe", Some("path")).unwrap_err();
        assert!(e.to_string().contains("`path` of probe #2 is not a number"));
        assert!(e.to_string().contains("(n), lat or ret"), "{e}");
        a.add(&ev(3, 1, None));
        let e = hist(a.probe(3), 3, "jprobe", Some("lat")).unwrap_err();
        assert!(
            e.to_string().contains("is a jprobe: only kretprobes"),
            "{e}"
        );
        let e = hist(None, 4, "jprobe", Some("n")).unwrap_err();
        assert!(e.to_string().contains("no events of probe #4 yet"), "{e}");
        let e = hist(a.probe(3), 3, "jprobe", Some("zz")).unwrap_err();
        assert!(e.to_string().contains("captured argument (n, path)"), "{e}");
    }
}
