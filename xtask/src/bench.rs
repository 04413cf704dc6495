//! `cargo xtask bench [guest|host|symbols|profile|stepping] [--iterations N] [--elf PATH]`:
//! kdbg's cost table (issue 8).
//!
//! - `guest`: boots the kernel in `bench` mode under `-icount shift=0` and
//!   prints guest instructions, traps and FPU saves per probe hit, each a
//!   difference against the unprobed call in the same boot
//!   ([`guest`], kernel/src/bench.rs).
//! - `host`: the stub's round trip and read throughput, the event stream,
//!   and the time to kdbg's prompt ([`host`]).
//! - `symbols --elf PATH`: the symbols library against binutils
//!   (`bench_symbols`, the symbols engineer's module).
//! - `profile`: one call per row under QEMU's execution log; the
//!   instructions of one probed hit per function ([`profile`]): the tool
//!   for finding where a hit's instructions go.
//!
//! With no part named, runs guest and host (and symbols when `--elf` is
//! given). `KDBG_BENCH_COMMIT` names the commit when the tree has no `.git`. Writes `target/kdbg/bench.json` and the generated blocks of
//! `docs/BENCHMARKS.md` (text outside the `<!-- bench:... -->` markers,
//! such as the symbols section, is left alone).

mod guest;
mod host;
mod profile;
mod report;
mod rsp;
mod stepping;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Calls per guest row by default: exact counts need few; enough for a
/// stable hits/s.
pub const DEFAULT_ITERATIONS: u64 = 20_000;
/// Upper bound for the guest boot.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

pub const USAGE: &str = "\
usage: cargo xtask bench [guest|host|symbols|profile|stepping] [--iterations N] [--elf PATH] [--no-docs] [--smp N]
  guest          probe costs in guest instructions (QEMU -icount shift=0)
  host           stub round trip, memory read throughput, event stream, time to prompt
  symbols        the symbols library on --elf PATH against binutils addr2line
  profile        instructions of one hit per row, function by function (QEMU exec log)
  stepping       round trips and stub steps of one source `next`, kdbg beside gdb (docs/BENCHMARKS.md)
  (none)         guest and host, and symbols when --elf is given
  --iterations N calls per guest row (default 20000)
  --no-docs      do not rewrite docs/BENCHMARKS.md (bench.json is still written)
  --smp N        boot the kernels with N vCPUs (guest rows: -icount runs them in one host
                 thread; adds the rows of a hit on every CPU at once against one CPU;
                 implies --no-docs: the table in docs is the 1-vCPU one)";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    guest: bool,
    host: bool,
    symbols: bool,
    profile: bool,
    /// `stepping`: one `next`, kdbg beside gdb (issue 23).
    stepping: bool,
    iterations: u64,
    docs: bool,
    /// Arguments handed to `bench_symbols::run` (`--elf PATH` and its own options).
    symbols_args: Vec<String>,
    /// vCPUs of every kernel the bench boots (`--smp N`).
    smp: u32,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut part = None;
    let mut a = Args {
        guest: false,
        host: false,
        symbols: false,
        profile: false,
        stepping: false,
        iterations: DEFAULT_ITERATIONS,
        docs: true,
        symbols_args: Vec::new(),
        smp: 1,
    };
    let mut elf = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            p @ ("guest" | "host" | "symbols" | "profile" | "stepping") if part.is_none() => {
                part = Some(p.to_string())
            }
            "--iterations" => {
                let v = crate::option_value(args, &mut i, "--iterations")?;
                a.iterations = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    anyhow::anyhow!("--iterations `{v}`: give a positive whole number of calls")
                })?;
            }
            "--no-docs" => a.docs = false,
            "--smp" => a.smp = crate::smp_value(args, &mut i)?,
            "--elf" | "--count" | "--seed" => {
                let name = args[i].clone();
                let v = crate::option_value(args, &mut i, &name)?;
                elf |= name == "--elf";
                a.symbols_args.push(name);
                a.symbols_args.push(v.to_string());
            }
            other => bail!("unknown argument `{other}` for `cargo xtask bench`\n{USAGE}"),
        }
        i += 1;
    }
    match part.as_deref() {
        Some("guest") => a.guest = true,
        Some("host") => a.host = true,
        Some("symbols") => a.symbols = true,
        Some("profile") => a.profile = true,
        Some("stepping") => a.stepping = true,
        _ => {
            a.guest = true;
            a.host = true;
            a.symbols = elf;
        }
    }
    if a.symbols && !elf {
        bail!(
            "`cargo xtask bench symbols` needs --elf PATH (a vmlinux with DWARF, or target/kdbg/kernel)\n{USAGE}"
        );
    }
    Ok(a)
}

pub fn command(args: &[String]) -> Result<ExitCode> {
    let mut a = parse(args)?;
    if a.smp > 1 {
        a.docs = false;
        // SAFETY: xtask is single-threaded here (nothing has been spawned
        // yet); every QemuConfig::new() below reads it.
        unsafe { std::env::set_var("KDBG_SMP", a.smp.to_string()) };
        eprintln!(
            "xtask: bench with {} vCPUs (docs/BENCHMARKS.md left alone)",
            a.smp
        );
    }
    let started = Instant::now();
    if a.profile {
        crate::qemu::ensure()?;
        let kernel = crate::build::kernel()?;
        eprintln!("xtask: bench profile: one call per row, QEMU execution log (about a minute)");
        print!("{}", profile::run(&kernel, &report::qemu_version())?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.stepping {
        crate::qemu::ensure()?;
        let kernel = crate::build::kernel()?;
        crate::build::kdbg()?;
        eprintln!("xtask: bench stepping: one `next` per row, kdbg then gdb at the same stop");
        print!("{}", stepping::run(&kernel)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut run = report::Run::new(&a_command_line(args));
    if a.guest || a.host {
        crate::qemu::ensure()?;
        run.qemu = report::qemu_version();
        let kernel = crate::build::kernel()?;
        if a.guest {
            eprintln!(
                "xtask: bench guest: {} calls per row, QEMU -icount shift=0",
                a.iterations
            );
            run.guest = Some(guest::run(&kernel, a.iterations, GUEST_TIMEOUT, false)?);
        }
        if a.host {
            let kdbg = crate::build::kdbg()?;
            eprintln!("xtask: bench host: stub over TCP, event stream, time to prompt");
            run.host = Some(host::run(&kernel, &kdbg)?);
        }
    }
    print!("{}", report::text(&run));
    if a.guest || a.host {
        let json = crate::build::root().join("target/kdbg/bench.json");
        report::write_json(&run, &json)?;
        eprintln!("xtask: wrote {}", json.display());
        if a.docs {
            let md = crate::build::root().join("docs/BENCHMARKS.md");
            report::write_markdown(&run, &md)?;
            eprintln!("xtask: updated {}", md.display());
        }
    }
    if a.symbols {
        eprintln!("xtask: bench symbols");
        symbols(&a.symbols_args)?;
    }
    eprintln!(
        "xtask: bench finished in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `bench_symbols::run`: the symbols engineer's module (xtask/src/bench_symbols.rs).
fn symbols(args: &[String]) -> Result<()> {
    crate::bench_symbols::run(args)
}

fn a_command_line(args: &[String]) -> String {
    let mut s = String::from("cargo xtask bench");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn default_is_guest_and_host() {
        let a = parse(&[]).unwrap();
        assert!(a.guest && a.host && !a.symbols);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
    }

    #[test]
    fn parts_and_options() {
        let a = parse(&args("guest --iterations 10 --no-docs")).unwrap();
        assert!(a.guest && !a.host && !a.docs);
        assert_eq!(a.iterations, 10);
        let a = parse(&args("--elf /x/vmlinux")).unwrap();
        assert!(a.guest && a.host && a.symbols);
        assert_eq!(a.symbols_args, args("--elf /x/vmlinux"));
    }

    #[test]
    fn user_errors_say_what_to_do() {
        let e = parse(&args("symbols")).unwrap_err().to_string();
        assert!(e.contains("--elf PATH"), "{e}");
        let e = parse(&args("--iterations 0")).unwrap_err().to_string();
        assert!(e.contains("positive"), "{e}");
        let e = parse(&args("guest host")).unwrap_err().to_string();
        assert!(e.contains("unknown argument `host`"), "{e}");
    }
}
