//! The guest side: boots the kernel in `bench` mode under `-icount shift=0`
//! and turns its `bench ...` console lines into rows (see kernel/src/bench.rs
//! for the line format). Console lines are timestamped on arrival, which
//! gives the informational hits/s under TCG wall time.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ::tests::{QemuConfig, Wiring};
use anyhow::{Context, Result, bail};

/// The fw_cfg file the kernel reads the calls per row from.
const FW_CFG_CALLS: &str = "opt/kdbg/bench-iterations";

/// One measured (or unavailable) row.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub name: String,
    pub target: String,
    /// How the probed instruction runs: emulated / out-of-line / boosted.
    pub path: String,
    pub calls: u64,
    /// Instructions of the unprobed calls (same boot, just before).
    pub base_insns: u64,
    /// Instructions of the probed calls.
    pub insns: u64,
    pub traps: u64,
    pub ticks: u64,
    pub wrong: u64,
    pub hits: u64,
    pub missed: u64,
    pub produced: u64,
    pub dropped: u64,
    /// Wall time of the probed calls (host clock, console timestamps).
    pub wall: Option<Duration>,
    /// Why the row could not be measured.
    pub na: Option<String>,
}

impl Row {
    /// Unprobed instructions per call.
    pub fn base_per_call(&self) -> f64 {
        self.base_insns as f64 / self.calls.max(1) as f64
    }
    /// Extra guest instructions per hit.
    pub fn delta(&self) -> f64 {
        (self.insns as f64 - self.base_insns as f64) / self.calls.max(1) as f64
    }
    pub fn traps_per_hit(&self) -> f64 {
        self.traps as f64 / self.calls.max(1) as f64
    }
    /// Extra instructions per trap (the mechanism's cost per trap).
    pub fn per_trap(&self) -> Option<f64> {
        (self.traps > 0).then(|| self.delta() / self.traps_per_hit())
    }
    pub fn hits_per_sec(&self) -> Option<f64> {
        self.wall
            .filter(|w| !w.is_zero())
            .map(|w| self.calls as f64 / w.as_secs_f64())
    }
}

/// A `bench PHASE` line: one probed call split at its handlers.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub name: String,
    pub calls: u64,
    pub base: u64,
    pub whole: u64,
    pub to_first: u64,
    pub first_to_second: u64,
    pub after_last: u64,
}

/// A `bench SMP` line (a boot with several vCPUs, kernel/src/bench/smp.rs):
/// one row's probe hit on CPU 0 alone and on every CPU at once, as
/// instructions of all vCPUs in each window (-icount's one clock).
#[derive(Clone, Debug, Default)]
pub struct SmpRow {
    pub name: String,
    pub cpus: u64,
    pub calls: u64,
    pub one_base: u64,
    pub one: u64,
    pub all_base: u64,
    pub all: u64,
    pub hits: u64,
    pub missed: u64,
    pub wrong: u64,
    /// Every CPU was inside its share at one moment (the shares overlapped).
    pub interleaved: bool,
}

impl SmpRow {
    /// Instructions per hit with one CPU hitting.
    pub fn one_per_hit(&self) -> f64 {
        self.one.saturating_sub(self.one_base) as f64 / self.calls.max(1) as f64
    }

    /// Instructions per hit with every CPU hitting.
    pub fn all_per_hit(&self) -> f64 {
        self.all.saturating_sub(self.all_base) as f64 / (self.cpus * self.calls).max(1) as f64
    }

    /// All CPUs' per-hit cost over one CPU's, minus one (0.05 = 5 % more).
    pub fn growth(&self) -> f64 {
        self.all_per_hit() / self.one_per_hit().max(f64::MIN_POSITIVE) - 1.0
    }

    /// Every call was a hit: `calls` on one CPU plus `cpus x calls`.
    pub fn hits_exact(&self) -> bool {
        self.hits == self.calls * (1 + self.cpus) && self.missed == 0
    }
}

/// Everything one bench boot produced.
#[derive(Clone, Debug, Default)]
pub struct Guest {
    pub calls: u64,
    pub rows: Vec<Row>,
    pub phases: Vec<Phase>,
    pub smp: Vec<SmpRow>,
    pub wall: Duration,
}

fn fields(rest: &str) -> BTreeMap<&str, &str> {
    rest.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

fn num(f: &BTreeMap<&str, &str>, key: &str, line: &str) -> Result<u64> {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("bench line without a numeric `{key}=`: {line}"))
}

/// Parses the console of a bench boot. `stamps` gives each line's arrival time.
pub fn parse(lines: &[(Instant, String)]) -> Result<Guest> {
    let mut g = Guest::default();
    let mut begun: BTreeMap<String, Instant> = BTreeMap::new();
    let mut done = false;
    for (at, line) in lines {
        let Some(rest) = line.trim().strip_prefix("bench ") else {
            continue;
        };
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let f = fields(rest);
        let name = f.get("row").map(|s| s.to_string()).unwrap_or_default();
        match kind {
            "START" => g.calls = num(&f, "calls", line)?,
            "BEGIN" => {
                begun.insert(name, *at);
            }
            "ROW" => g.rows.push(Row {
                target: f.get("target").unwrap_or(&"?").to_string(),
                path: f.get("path").unwrap_or(&"?").to_string(),
                calls: num(&f, "calls", line)?,
                base_insns: num(&f, "base_insns", line)?,
                insns: num(&f, "insns", line)?,
                traps: num(&f, "traps", line)?,
                ticks: num(&f, "ticks", line)?,
                wrong: num(&f, "wrong", line)?,
                hits: num(&f, "hits", line)?,
                missed: num(&f, "missed", line)?,
                produced: num(&f, "produced", line)?,
                dropped: num(&f, "dropped", line)?,
                wall: begun.get(&name).map(|b| at.duration_since(*b)),
                na: None,
                name,
            }),
            "NA" => {
                let reason = rest
                    .split_once("reason=")
                    .map_or("unknown", |(_, r)| r)
                    .to_string();
                match g.rows.iter_mut().find(|r| r.name == name) {
                    Some(r) => r.na = Some(reason),
                    None => g.rows.push(Row {
                        name,
                        na: Some(reason),
                        ..Row::default()
                    }),
                }
            }
            "PHASE" => g.phases.push(Phase {
                name,
                calls: num(&f, "calls", line)?,
                base: num(&f, "base", line)?,
                whole: num(&f, "whole", line)?,
                to_first: num(&f, "to_first", line)?,
                first_to_second: num(&f, "first_to_second", line)?,
                after_last: num(&f, "after_last", line)?,
            }),
            "SMP" => g.smp.push(SmpRow {
                name,
                cpus: num(&f, "cpus", line)?,
                calls: num(&f, "calls", line)?,
                one_base: num(&f, "one_base", line)?,
                one: num(&f, "one", line)?,
                all_base: num(&f, "all_base", line)?,
                all: num(&f, "all", line)?,
                hits: num(&f, "hits", line)?,
                missed: num(&f, "missed", line)?,
                wrong: num(&f, "wrong", line)?,
                interleaved: num(&f, "interleaved", line)? == 1,
            }),
            "DONE" => done = true,
            _ => {}
        }
    }
    if !done {
        bail!(
            "the bench run ended without `bench DONE` (the kernel died or timed out; see the console above)"
        );
    }
    Ok(g)
}

/// Boots `kernel` in bench mode with `calls` calls per row and parses the
/// result. The console is echoed to stderr when `echo` is set.
pub fn run(kernel: &Path, calls: u64, timeout: Duration, echo: bool) -> Result<Guest> {
    let mut cfg = QemuConfig::new();
    cfg.kernel = kernel.to_path_buf();
    cfg.append = "bench".into();
    cfg.console = Wiring::Stdio;
    cfg.icount = true;
    cfg.timeout = timeout;
    cfg.extra = vec![
        "-fw_cfg".into(),
        format!("name={FW_CFG_CALLS},string={calls}"),
    ];
    let mut cmd = Command::new(::tests::qemu_binary()?);
    cmd.args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    ::tests::kill_with_parent(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting QEMU for the bench boot")?;
    let out = child.stdout.take().context("QEMU's stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                if echo {
                    eprintln!("  | {line}");
                }
                lines.push((at, line));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the bench boot took longer than {}s; QEMU killed (fewer calls: --iterations N)",
                    timeout.as_secs()
                );
            }
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    let mut g = parse(&lines)?;
    g.wall = started.elapsed();
    match ::tests::KernelExit::from_status(status) {
        ::tests::KernelExit::Success => Ok(g),
        other => {
            let wrong: u64 = g.rows.iter().map(|r| r.wrong).sum();
            bail!(
                "the bench kernel exited with {other:?} ({wrong} probed calls computed a wrong result)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lines: &[&str]) -> Vec<(Instant, String)> {
        let t0 = Instant::now();
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| (t0 + Duration::from_millis(100 * i as u64), l.to_string()))
            .collect()
    }

    #[test]
    fn parses_rows_na_phases_and_wall_time() {
        let g = parse(&at(&[
            "kdbg reference kernel 0.1.0",
            "bench START calls=100 batch=16",
            "bench BEGIN row=kprobe_boosted",
            "bench ROW row=kprobe_boosted target=bench_target path=boosted calls=100 base_insns=1000 insns=35000 traps=100 ticks=0 wrong=0 hits=100 missed=0 produced=0 dropped=0",
            "bench NA row=jprobe reason=register_jprobe refused bench_target",
            "bench PHASE row=kretprobe calls=10 base=120 whole=13000 to_first=5500 first_to_second=6400 after_last=1100",
            "bench DONE wrong=0",
        ]))
        .unwrap();
        assert_eq!(g.calls, 100);
        assert_eq!(g.rows.len(), 2);
        let r = &g.rows[0];
        assert_eq!(r.delta(), 340.0);
        assert_eq!(r.traps_per_hit(), 1.0);
        assert_eq!(r.per_trap(), Some(340.0));
        assert_eq!(r.wall, Some(Duration::from_millis(100)));
        assert_eq!(r.hits_per_sec().map(|h| h.round()), Some(1000.0));
        assert_eq!(
            g.rows[1].na.as_deref(),
            Some("register_jprobe refused bench_target")
        );
        assert_eq!(g.phases[0].first_to_second, 6400);
    }

    #[test]
    fn parses_smp_rows_per_hit_and_growth() {
        // The kprobe_boosted figures of a real `--smp 4` boot.
        let g = parse(&at(&[
            "bench START calls=20000 batch=16",
            "bench SMP row=kprobe_boosted cpus=4 calls=20000 one_base=245062 one=6028980 all_base=981297 all=23984714 hits=100000 missed=0 wrong=0 interleaved=1",
            "bench SMP row=kretprobe cpus=4 calls=10 one_base=0 one=1000 all_base=0 all=4800 hits=49 missed=1 wrong=0 interleaved=0",
            "bench DONE wrong=0",
        ]))
        .unwrap();
        let r = &g.smp[0];
        assert_eq!(r.name, "kprobe_boosted");
        assert_eq!(format!("{:.2}", r.one_per_hit()), "289.20");
        assert_eq!(format!("{:.2}", r.all_per_hit()), "287.54");
        assert!(r.growth() < 0.0 && r.growth() > -0.01, "{}", r.growth());
        assert!(r.hits_exact() && r.interleaved);
        let k = &g.smp[1];
        assert_eq!(k.one_per_hit(), 100.0);
        assert_eq!(k.all_per_hit(), 120.0);
        assert!((k.growth() - 0.2).abs() < 1e-9);
        assert!(!k.hits_exact() && !k.interleaved);
    }

    #[test]
    fn a_run_without_done_is_an_error() {
        let e = parse(&at(&["bench START calls=1 batch=16"])).unwrap_err();
        assert!(e.to_string().contains("bench DONE"), "{e}");
    }

    #[test]
    fn a_row_line_missing_a_field_is_an_error() {
        let e = parse(&at(&[
            "bench ROW row=x target=t path=p calls=1",
            "bench DONE wrong=0",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("base_insns"), "{e}");
    }
}
