//! `cargo xtask`: build the kernel, boot it in QEMU, run every test.
//!
//! ```text
//! cargo xtask build                      kernel -> target/kdbg/kernel, and the kdbg binary
//! cargo xtask qemu [--stub CHARDEV] [--append ARGS] [--timeout S] [--icount] [--smp N]
//! cargo xtask run [--append ARGS] [--smp N] [-- KDBG_ARGS...]
//! cargo xtask linux [--kaslr] [-- KDBG_ARGS...]   Debian's kernel under QEMU's gdbstub, kdbg attached
//! cargo xtask test [--smp N]              host tests, kernel selftests, end-to-end tests
//! cargo xtask clippy                     clippy -D warnings, host and kernel crates
//! cargo xtask bench [guest|host|symbols|profile|stepping] [--iterations N] [--elf PATH] [--smp N]   the cost table (docs/BENCHMARKS.md)
//! cargo xtask fuzz [--seed S] [--inputs N] [--reconnects R] | --replay FILE   the stub's protocol fuzzer
//! ```

mod bench;
mod bench_symbols;
mod build;
mod fuzz;
mod kallsyms;
mod linux;
mod qemu;
mod run;
mod test;

use std::process::ExitCode;

use anyhow::{Result, bail};

pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build                      build the kernel (target/kdbg/kernel) and the kdbg binary
  qemu [options]             boot the reference kernel, console on stdout
      --stub CHARDEV         where COM2 (the GDB stub) goes: tcp:127.0.0.1:PORT (default: a free port),
                             unix:PATH, pty, ...
      --append ARGS          kernel command line (default: serve)
      --timeout S            kill QEMU after S seconds (default: 3600)
      --icount               run with -icount shift=0 (deterministic, TSC = instructions;
                             with --smp the vCPUs then share one host thread)
      --smp N                N virtual CPUs (default 1); they run in parallel host threads
                             (MTTCG) unless --icount is given
      --no-shared-memory     plain RAM (default: guest RAM is a private file kdbg --memory maps)
  run [--append ARGS] [--smp N] [--no-shared-memory] [-- KDBG_ARGS...]
                             build, boot, and open the kdbg shell on the kernel (--smp N:
                             N vCPUs, default 2, in parallel host threads; guest RAM shared
                             with kdbg through a private file unless --no-shared-memory)
  linux [--kaslr] [-- KDBG_ARGS...]
                             Debian's current cloud kernel (+ -dbg vmlinux, busybox initramfs,
                             fetched once into target/linux) under QEMU's gdbstub, kdbg attached
  test [--smp N]             every test: kernel selftests in QEMU, host unit tests, end-to-end tests
                             (--smp N: the selftests and every e2e kernel boot with N vCPUs;
                             the SMP suites run at 4 vCPUs whatever N is)
  clippy                     cargo clippy -D warnings for the host crates and the kernel crates
  bench [guest|host|symbols|profile|stepping] [--iterations N] [--elf PATH] [--smp N]
                             probe costs in guest instructions, stub and stream figures,
                             symbols vs binutils; writes docs/BENCHMARKS.md, target/kdbg/bench.json
  fuzz [--seed S] [--inputs N] [--reconnects R]
                             the stub's protocol fuzzer on the real stub in QEMU (default: the
                             suite's fixed seed, 3000 inputs, 12 reconnects); a failure is minimized
                             and saved under target/kdbg/fuzz/
  fuzz --replay FILE         replay a saved failing input on a fresh kernel
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: &[String]) -> Result<ExitCode> {
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match cmd.as_str() {
        "build" => {
            no_args(rest)?;
            build::kernel()?;
            build::kdbg()?;
            Ok(ExitCode::SUCCESS)
        }
        "qemu" => qemu::command(rest),
        "run" => run::command(rest),
        "linux" => linux::command(rest),
        "test" => {
            let mut smp = 1;
            let mut i = 0;
            while i < rest.len() {
                match rest[i].as_str() {
                    "--smp" => smp = smp_value(rest, &mut i)?,
                    other => bail!("unexpected argument `{other}`\n{USAGE}"),
                }
                i += 1;
            }
            test::command(smp)
        }
        "clippy" => {
            no_args(rest)?;
            build::clippy()
        }
        "bench" => bench::command(rest),
        "fuzz" => fuzz::command(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

fn no_args(rest: &[String]) -> Result<()> {
    if let Some(a) = rest.first() {
        bail!("unexpected argument `{a}`\n{USAGE}");
    }
    Ok(())
}

/// Takes the vCPU count of `--smp N` at `args[*i]`, advancing `i`.
pub fn smp_value(args: &[String], i: &mut usize) -> Result<u32> {
    let v = option_value(args, i, "--smp")?;
    tests::parse_smp(v).map_err(anyhow::Error::msg)
}

/// Takes the value of option `name` at `args[*i]`, advancing `i`.
pub fn option_value<'a>(args: &'a [String], i: &mut usize, name: &str) -> Result<&'a str> {
    *i += 1;
    match args.get(*i) {
        Some(v) => Ok(v),
        None => bail!("{name} needs a value\n{USAGE}"),
    }
}
