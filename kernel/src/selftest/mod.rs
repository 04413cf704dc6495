//! The in-kernel selftests: `selftest` runs every suite, `selftest=A,B` the
//! named ones. One line per test on the console:
//!
//! ```text
//! test SUITE::CASE ... ok
//! test SUITE::CASE ... FAILED: reason
//! selftest: N passed, M failed
//! ```
//! then QEMU exits through isa-debug-exit: status 33 when all passed, 35
//! otherwise (37 if the kernel died on the way). `cargo xtask test` parses
//! exactly these lines.
//!
//! Adding a suite: write `kernel/src/selftest/NAME.rs` with
//! `pub static SUITE: Suite = Suite { name: "NAME", cases: &[Case { name: "...", run: ... }, ...] };`,
//! declare `mod NAME;` below and add `&NAME::SUITE,` to [`SUITES`]. A case
//! returns `Ok(())` or `Err(reason)`; [`check!`](crate::check) makes that short.

use alloc::string::String;

use crate::exit::{ExitCode, qemu_exit};
use crate::println;

mod heap;
mod kallsyms;
mod sched;
mod trap;
mod truth;
mod workloads;
// Suites of the probe core and the stub (one line each):
mod capture;
mod jprobe;
mod kprobe;
mod kretprobe;
mod maps;
mod optprobe;
mod probe_util;
mod rethook;
mod smp;
mod stub;

/// Every suite, in the order `selftest` runs them.
pub static SUITES: &[&Suite] = &[
    &trap::SUITE,
    &sched::SUITE,
    &heap::SUITE,
    &kallsyms::SUITE,
    &workloads::SUITE,
    &truth::SUITE,
    // Suites of the probe core and the stub (one line each):
    &kprobe::SUITE,
    &kretprobe::SUITE,
    &optprobe::SUITE,
    &rethook::SUITE,
    &jprobe::SUITE,
    &capture::SUITE,
    &maps::SUITE,
    &stub::SUITE,
    &smp::SUITE,
];

/// What a test case returns: `Err` carries the reason shown after `FAILED:`.
pub type TestResult = Result<(), String>;

/// One test.
pub struct Case {
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

/// A named group of tests (named after the subsystem it tests).
pub struct Suite {
    pub name: &'static str,
    pub cases: &'static [Case],
}

/// `check!(cond, "format", args...)`: fail the case with the formatted reason.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(alloc::format!($($arg)+));
        }
    };
}

fn suite_names() -> String {
    let mut s = String::new();
    for (i, suite) in SUITES.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(suite.name);
    }
    s
}

/// How long a selftest waits for a task it started to end (timer ticks:
/// 60 s). Generous on purpose: without -icount the guest clock runs with
/// the host's, and on an overloaded host (MTTCG, more vCPU threads than
/// cores) a vCPU can starve for seconds; the deadline only catches a task
/// that never ends.
pub const JOIN_TICKS: u64 = 6000;

/// Runs the selected suites and exits QEMU with the verdict.
pub fn run(filter: Option<&str>) -> ! {
    if let Some(list) = filter {
        for want in list.split(',') {
            if !SUITES.iter().any(|s| s.name == want) {
                println!(
                    "selftest: unknown suite `{want}`; accepted suites: {}",
                    suite_names()
                );
                qemu_exit(ExitCode::Failure);
            }
        }
    }
    let selected = |name: &str| filter.is_none_or(|list| list.split(',').any(|w| w == name));
    let (mut passed, mut failed) = (0usize, 0usize);
    for suite in SUITES.iter().filter(|s| selected(s.name)) {
        for case in suite.cases {
            crate::print!("test {}::{} ... ", suite.name, case.name);
            match (case.run)() {
                Ok(()) => {
                    passed += 1;
                    println!("ok");
                }
                Err(reason) => {
                    failed += 1;
                    println!("FAILED: {reason}");
                }
            }
        }
    }
    println!("selftest: {passed} passed, {failed} failed");
    qemu_exit(if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
