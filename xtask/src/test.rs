//! `cargo xtask test`: the kernel selftests in QEMU, then every host test
//! (unit tests and the end-to-end tests in `tests/`) through `cargo test`.
//! Prints a final `N passed, N failed` line; any failure fails the command.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tests::{KernelExit, QemuConfig, Wiring};

/// Upper bound for one in-kernel selftest run (the 4-vCPU run needs about
/// two minutes on a loaded two-core machine; MTTCG slows down more than
/// icount when the host is overloaded).
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Upper bound for `cargo test` (build included): a hung test must not hang
/// CI (whose limit is 90 minutes; an unloaded run takes ~15).
const HOST_TEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

/// `smp`: vCPUs of the selftest run and (through `KDBG_SMP`) of every
/// e2e test's kernel that does not choose its own.
pub fn command(smp: u32) -> Result<ExitCode> {
    let started = Instant::now();
    crate::qemu::ensure()?;
    let kernel = crate::build::kernel()?;
    let kdbg = crate::build::kdbg()?;
    let mut tally = Tally::default();

    eprintln!(
        "xtask: kernel selftests (QEMU, -append selftest, {smp} vCPU{}, -icount: one thread)",
        if smp == 1 { "" } else { "s" }
    );
    selftests(&kernel, "selftest kdbg.truth", smp, true, "", &mut tally)?;

    eprintln!(
        "xtask: SMP selftests at {SMP_VCPUS} vCPUs (parallel host threads, no -icount): {SMP_SUITES}"
    );
    selftests(
        &kernel,
        &format!("selftest={SMP_SUITES}"),
        SMP_VCPUS,
        false,
        "smp4",
        &mut tally,
    )?;

    eprintln!("xtask: host and end-to-end tests (cargo test)");
    host_tests(&kernel, &kdbg, smp, &mut tally)?;

    eprintln!("xtask: lints (cargo fmt --check, clippy -D warnings for host and kernel crates)");
    lints(&mut tally)?;

    println!();
    if !tally.failed.is_empty() {
        println!("failed:");
        for f in &tally.failed {
            println!("    {f}");
        }
    }
    println!(
        "{} passed, {} failed ({:.0}s)",
        tally.passed,
        tally.failed.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(if tally.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The style gates the README promises: rustfmt and clippy `-D warnings`,
/// host crates and kernel crates (with the kernel's target and flags).
fn lints(tally: &mut Tally) -> Result<()> {
    let fmt = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(crate::build::root())
        .args(["fmt", "--all", "--", "--check"])
        .status()
        .context("running cargo fmt --check")?;
    record(tally, "lint::rustfmt", fmt.success());
    let clippy = crate::build::clippy()?;
    record(tally, "lint::clippy", clippy == ExitCode::SUCCESS);
    Ok(())
}

fn record(tally: &mut Tally, name: &str, ok: bool) {
    if ok {
        tally.passed += 1;
    } else {
        tally.failed.push(name.to_string());
    }
}

/// One selftest result line: `test SUITE::CASE ... ok` / `... FAILED: reason`.
fn parse_selftest_line(line: &str) -> Option<(String, bool)> {
    let rest = line.trim().strip_prefix("test ")?;
    let (name, outcome) = rest.split_once(" ... ")?;
    if outcome.trim() == "ok" {
        Some((name.trim().to_string(), true))
    } else if outcome.starts_with("FAILED") {
        Some((name.trim().to_string(), false))
    } else {
        None
    }
}

/// The suites that run a second time at [`SMP_VCPUS`] vCPUs.
const SMP_SUITES: &str = "smp,sched,kprobe,kretprobe,jprobe,capture,maps";
/// vCPUs of the SMP selftest run.
const SMP_VCPUS: u32 = 4;

/// One selftest boot. `tag` names the run (its console directory and the
/// prefix of its results: `kernel selftest smp4:kprobe::...`).
fn selftests(
    kernel: &std::path::Path,
    append: &str,
    smp: u32,
    icount: bool,
    tag: &str,
    tally: &mut Tally,
) -> Result<()> {
    let dir = tests::target_dir().join(if tag.is_empty() {
        "e2e/xtask-selftest".to_string()
    } else {
        format!("e2e/xtask-selftest-{tag}")
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let console = dir.join("console.log");
    let _ = std::fs::remove_file(&console);
    let mut cfg = QemuConfig::new();
    cfg.kernel = kernel.to_path_buf();
    cfg.append = append.into();
    cfg.console = Wiring::File(console.clone());
    cfg.debugcon = Some(dir.join("debugcon.log"));
    cfg.icount = icount;
    cfg.smp = smp;
    cfg.timeout = SELFTEST_TIMEOUT;
    let mut vm = cfg.spawn()?;
    let mut shown = 0usize;
    let deadline = Instant::now() + SELFTEST_TIMEOUT;
    let exit = loop {
        let exited = vm.try_exit();
        let text = vm.console();
        if text.len() > shown {
            print!("{}", &text[shown..]);
            let _ = std::io::stdout().flush();
            shown = text.len();
        }
        if let Some(e) = exited {
            break Some(e);
        }
        if Instant::now() >= deadline {
            vm.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = vm.console();
    let mut seen = 0;
    for line in text.lines() {
        if let Some((name, ok)) = parse_selftest_line(line) {
            seen += 1;
            if ok {
                tally.passed += 1;
            } else if tag.is_empty() {
                tally.failed.push(format!("kernel selftest {name}"));
            } else {
                tally.failed.push(format!("kernel selftest {tag}:{name}"));
            }
        }
    }
    match exit {
        Some(KernelExit::Success) if seen > 0 => {}
        Some(KernelExit::Success) => tally.failed.push("kernel selftests: no test ran".into()),
        Some(KernelExit::Failure) => {
            if tally.failed.is_empty() {
                tally
                    .failed
                    .push("kernel selftests: the kernel reported failure".into());
            }
        }
        Some(other) => tally.failed.push(format!(
            "kernel selftests: the kernel died ({other:?}) after {seen} tests; console in {}",
            console.display()
        )),
        None => tally.failed.push(format!(
            "kernel selftests: timed out after {}s; console in {}",
            SELFTEST_TIMEOUT.as_secs(),
            console.display()
        )),
    }
    Ok(())
}

/// `test result: ok. 4 passed; 1 failed; ...` -> (4, 1).
fn parse_result_line(line: &str) -> Option<(usize, usize)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let num = |key: &str| -> Option<usize> {
        let idx = rest.find(key)?;
        rest[..idx]
            .trim_end()
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((num(" passed")?, num(" failed")?))
}

fn host_tests(
    kernel: &std::path::Path,
    kdbg: &std::path::Path,
    smp: u32,
    tally: &mut Tally,
) -> Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(crate::build::root())
        .args(["test", "--no-fail-fast"])
        .env("KDBG_KERNEL", kernel)
        .env("KDBG_BIN", kdbg)
        .env("KDBG_SMP", smp.to_string())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, timed_out, pid) = (done.clone(), timed_out.clone(), child.id());
        std::thread::spawn(move || {
            let deadline = Instant::now() + HOST_TEST_TIMEOUT;
            while Instant::now() < deadline {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            timed_out.store(true, Ordering::SeqCst);
            kill_tree(pid);
        })
    };
    let mut current_binary = String::new();
    let mut results = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.trim().strip_prefix("Running ") {
            current_binary = rest.to_string();
        }
        if let Some(name) = line
            .trim()
            .strip_prefix("test ")
            .and_then(|r| r.strip_suffix(" ... FAILED"))
        {
            tally.failed.push(format!("{name} ({current_binary})"));
        }
        if let Some((p, _f)) = parse_result_line(&line) {
            tally.passed += p;
            results += 1;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    if timed_out.load(Ordering::SeqCst) {
        tally.failed.push(format!(
            "cargo test: killed after {} minutes (a test hung; see the last test names above)",
            HOST_TEST_TIMEOUT.as_secs() / 60
        ));
        return Ok(());
    }
    if !status.success() && results == 0 {
        tally
            .failed
            .push("cargo test: did not build (see the errors above)".into());
    } else if !status.success() && tally.failed.is_empty() {
        tally
            .failed
            .push(format!("cargo test exited with {status}"));
    }
    Ok(())
}

/// Kills `pid` and all its descendants (found through /proc), children first.
fn kill_tree(pid: u32) {
    let mut children: Vec<u32> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                children.push(child);
            }
        }
    }
    for c in children {
        kill_tree(c);
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status();
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn kill_tree_kills_grandchildren() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 100 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{grandchild}")).exists());
        kill_tree(child.id());
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(200));
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its (killed) parent's reaper.
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "grandchild still running: {stat}"
        );
    }

    #[test]
    fn selftest_lines() {
        assert_eq!(
            parse_selftest_line("test trap::int3 ... ok"),
            Some(("trap::int3".into(), true))
        );
        assert_eq!(
            parse_selftest_line("test sched::progress ... FAILED: task 3 stuck"),
            Some(("sched::progress".into(), false))
        );
        assert_eq!(parse_selftest_line("selftest: 3 passed, 0 failed"), None);
        assert_eq!(parse_selftest_line("test x ... running"), None);
    }

    #[test]
    fn cargo_result_lines() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
            ),
            Some((4, 0))
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 12 passed; 3 failed; 0 ignored"),
            Some((12, 3))
        );
        assert_eq!(parse_result_line("running 4 tests"), None);
    }
}
