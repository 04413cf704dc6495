//! The kernel command line (`-append`): one mode and some flags.
//!
//! ```text
//! serve              (default) workload tasks run forever; the stub waits for a debugger
//! selftest           run every in-kernel test suite, then exit QEMU with the verdict
//! selftest=A[,B...]  run only the named suites
//! bench              the benchmark mode (issue 8)
//! kdbg.wait          stop in the stub at boot until a debugger attaches and continues
//! kdbg.truth         log every workload call (arguments, return value) to debugcon (port 0xe9)
//! kdbg.quiet         no periodic activity lines on the console (serve mode)
//! kdbg.crash         serve mode dies on purpose (a #UD in `kdbg_crash`) once the workers
//!                    run: tests the fatal path and what a debugger sees of it
//! kdbg.crash=stack   serve mode starts a task that tramples its stack canary (as a
//!                    stack overflow would): the scheduler's overflow check must stop it
//! ```
//! Anything else: the kernel prints what it accepts and exits with failure.

/// What the kernel does after booting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// `None`: all suites; `Some("a,b")`: those suites.
    Selftest(Option<&'static str>),
    Bench,
}

/// The parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmdline {
    pub mode: Mode,
    pub wait: bool,
    pub truth: bool,
    pub quiet: bool,
    pub crash: Option<Crash>,
}

/// How `kdbg.crash` makes the kernel die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// `kdbg.crash`: an unclaimed #UD.
    InvalidOpcode,
    /// `kdbg.crash=stack`: a task's stack canary overwritten.
    StackOverflow,
}

/// What was wrong with the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// A word that is neither a mode nor a flag.
    Unknown(&'static str),
    /// Two modes given.
    TwoModes(&'static str),
    /// `selftest=` without suite names.
    EmptySuiteList,
}

/// The text shown when the command line is wrong.
pub const ACCEPTED: &str = "accepted: one mode of `serve` (default), `selftest`, `selftest=SUITE[,SUITE...]`, `bench`; flags `kdbg.wait`, `kdbg.truth`, `kdbg.quiet`, `kdbg.crash[=stack]`";

impl Cmdline {
    /// Parses `text`. A first word containing `/` is the kernel path some
    /// loaders (multiboot) put first, and is skipped.
    pub fn parse(text: &'static str) -> Result<Cmdline, CmdlineError> {
        let mut c = Cmdline {
            mode: Mode::Serve,
            wait: false,
            truth: false,
            quiet: false,
            crash: None,
        };
        let mut mode_seen = false;
        for (i, word) in text.split_ascii_whitespace().enumerate() {
            if i == 0 && word.contains('/') {
                continue;
            }
            let mode = match word {
                "serve" => Some(Mode::Serve),
                "selftest" => Some(Mode::Selftest(None)),
                "bench" => Some(Mode::Bench),
                "kdbg.wait" => {
                    c.wait = true;
                    None
                }
                "kdbg.truth" => {
                    c.truth = true;
                    None
                }
                "kdbg.quiet" => {
                    c.quiet = true;
                    None
                }
                "kdbg.crash" => {
                    c.crash = Some(Crash::InvalidOpcode);
                    None
                }
                "kdbg.crash=stack" => {
                    c.crash = Some(Crash::StackOverflow);
                    None
                }
                w => match w.strip_prefix("selftest=") {
                    Some("") => return Err(CmdlineError::EmptySuiteList),
                    Some(list) => Some(Mode::Selftest(Some(list))),
                    None => return Err(CmdlineError::Unknown(w)),
                },
            };
            if let Some(m) = mode {
                if mode_seen {
                    return Err(CmdlineError::TwoModes(word));
                }
                mode_seen = true;
                c.mode = m;
            }
        }
        Ok(c)
    }
}
