//! `cargo xtask bench symbols --elf PATH [--count N] [--seed S]`: how fast
//! the symbols library answers on a big ELF (a Linux vmlinux with full
//! DWARF), against binutils `addr2line` on the same addresses in the same
//! run. Prints a table; the figures go to docs/BENCHMARKS.md.
//!
//! Needs `symbols` in xtask's dependencies (`symbols.workspace = true`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use symbols::Elf;
use symbols::binutils::{Options, Session};

struct Args {
    elf: PathBuf,
    count: usize,
    seed: u64,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut elf = None;
    let mut count = 20_000;
    let mut seed = 1;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--elf" => elf = Some(PathBuf::from(it.next().context("--elf needs a path")?)),
            "--count" => count = it.next().context("--count needs a number")?.parse()?,
            "--seed" => seed = it.next().context("--seed needs a number")?.parse()?,
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench symbols --elf PATH [--count N] [--seed S]"
            ),
        }
    }
    let elf = elf.context(
        "usage: cargo xtask bench symbols --elf PATH (a vmlinux with DWARF: apt-get download linux-image-$(uname -r)-dbg; dpkg-deb -x)",
    )?;
    Ok(Args { elf, count, seed })
}

fn addresses(range: std::ops::Range<u64>, n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            range.start + x % (range.end - range.start)
        })
        .collect()
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs binutils addr2line; returns (wall time, output, peak RSS MiB).
fn binutils(elf: &Path, flags: &[&str], addrs: &[u64]) -> anyhow::Result<(Duration, String, f64)> {
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let start = Instant::now();
    // /usr/bin/time is not always installed: read the child's peak from wait4.
    let mut child = Command::new("addr2line")
        .args(flags)
        .arg("-e")
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running binutils addr2line (apt-get install binutils)")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let elapsed = start.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread"))??;
    Ok((
        elapsed,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        children_peak_mib(),
    ))
}

/// User + system CPU seconds of this process (`self_`) or its waited-for children.
fn cpu_seconds(self_: bool) -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let who = if self_ {
        libc::RUSAGE_SELF
    } else {
        libc::RUSAGE_CHILDREN
    };
    // SAFETY: valid pointer to a rusage struct.
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn children_peak_mib() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Entry point for `cargo xtask bench symbols ...`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let size = std::fs::metadata(&args.elf)
        .with_context(|| format!("{}", args.elf.display()))?
        .len();
    // Warm the page cache so that both tools start from the same state.
    let _ = std::fs::read(&args.elf).map(|v| v.len());
    let flags = Options {
        functions: true,
        inlines: true,
        ..Options::default()
    };
    let mut rows: Vec<(String, String)> = Vec::new();

    // 1. Time to first answer: open + one address with -f -i.
    let t = Instant::now();
    let elf = Elf::open(&args.elf)?;
    let text = elf.section_range(".text").context("no .text section")?;
    let addrs = addresses(text.clone(), args.count, args.seed);
    let mut s = Session::new(&elf, flags);
    let first = s.format(&format!("{:#x}", addrs[0]));
    let ttfa = t.elapsed();
    let (b_first, b_first_out, _) = binutils(&args.elf, &["-f", "-i"], &addrs[..1])?;
    rows.push((
        "time to first answer (open + 1 address, -f -i)".into(),
        format!("{} (binutils {})", ms(ttfa), ms(b_first)),
    ));
    if first != b_first_out {
        rows.push((
            "  first answer differs".into(),
            format!("{first:?} vs {b_first_out:?}"),
        ));
    }
    drop(s);
    drop(elf);

    // 2. N random text addresses with -f -i, fresh open included.
    let t = Instant::now();
    let cpu0 = cpu_seconds(true);
    let elf = Elf::open(&args.elf)?;
    let mut s = Session::new(&elf, flags);
    let ours: String = addrs.iter().map(|a| s.format(&format!("{a:#x}"))).collect();
    let ours_t = t.elapsed();
    let ours_cpu = cpu_seconds(true) - cpu0;
    drop(s);
    let peak_after_a2l = peak_mib();
    let child0 = cpu_seconds(false);
    let (theirs_t, theirs, theirs_peak) = binutils(&args.elf, &["-f", "-i"], &addrs)?;
    let theirs_cpu = cpu_seconds(false) - child0;
    let differing = ours
        .lines()
        .zip(theirs.lines())
        .filter(|(a, b)| a != b)
        .count()
        + ours.lines().count().abs_diff(theirs.lines().count());
    rows.push((
        format!("{} addresses -f -i (incl. open)", args.count),
        format!(
            "{} vs binutils {}: {:.1}x faster; {} of {} output lines differ",
            ms(ours_t),
            ms(theirs_t),
            theirs_t.as_secs_f64() / ours_t.as_secs_f64(),
            differing,
            theirs.lines().count()
        ),
    ));
    rows.push((
        "  CPU time (user+sys), same run".into(),
        format!(
            "{:.2} s vs binutils {:.2} s: {:.1}x less",
            ours_cpu,
            theirs_cpu,
            theirs_cpu / ours_cpu
        ),
    ));

    // 3. Name lookups: symbol table sort + name index, then lookups.
    let t = Instant::now();
    let names: Vec<String> = elf.symbols().map(|s| s.name.to_string()).collect();
    let first_lookup = elf.lookup(&names[names.len() / 2]);
    let index_t = t.elapsed();
    let picks = addresses(0..names.len() as u64, 10_000, args.seed + 1);
    let t = Instant::now();
    let mut found = 0usize;
    for i in &picks {
        found += elf.lookup(&names[*i as usize]).len();
    }
    let lookups_t = t.elapsed();
    rows.push((
        format!("name index ({} symbols) + first lookup", names.len()),
        format!("{} ({} hits)", ms(index_t), first_lookup.len()),
    ));
    rows.push((
        "10,000 exact name lookups".into(),
        format!(
            "{} ({:.2} us each, {found} candidates)",
            ms(lookups_t),
            lookups_t.as_secs_f64() * 1e6 / 10_000.0
        ),
    ));
    let t = Instant::now();
    let completions = elf.names_with_prefix("sched").count();
    rows.push((
        "prefix completion \"sched\"".into(),
        format!("{} ({completions} names)", ms(t.elapsed())),
    ));

    // 4. Parameters of 1,000 functions (with type names).
    let funcs: Vec<u64> = elf
        .symbols()
        .filter(|s| {
            s.kind == symbols::SymbolKind::Function && s.size > 0 && text.contains(&s.address)
        })
        .map(|s| s.address)
        .collect();
    let picks = addresses(0..funcs.len() as u64, 1000, args.seed + 2);
    let t = Instant::now();
    let mut params = 0usize;
    let mut with_dwarf = 0usize;
    for i in &picks {
        if let Ok(f) = elf.function_at(funcs[*i as usize]) {
            params += f.params.len();
            with_dwarf += usize::from(f.has_dwarf);
        }
    }
    let params_t = t.elapsed();
    rows.push((
        "parameters of 1,000 functions".into(),
        format!(
            "{} ({params} parameters, {with_dwarf} functions with DWARF)",
            ms(params_t)
        ),
    ));

    rows.push((
        "peak RSS (VmHWM, incl. mapped file pages)".into(),
        format!(
            "{:.0} MiB after addr2line phase, {:.0} MiB at end; binutils {:.0} MiB",
            peak_after_a2l,
            peak_mib(),
            theirs_peak
        ),
    ));

    println!(
        "symbols benchmark: {} ({:.0} MB), {} addresses, seed {}",
        args.elf.display(),
        size as f64 / 1e6,
        args.count,
        args.seed
    );
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        println!("  {k:<w$}  {v}");
    }
    Ok(())
}
