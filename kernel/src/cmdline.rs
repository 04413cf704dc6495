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
//! kdbg.idle=SECS     a kernel stopped in the stub with no byte from the host for SECS
//!                    seconds takes the host as gone (detach) and resumes; default:
//!                    stays stopped until a host resumes it
//! kdbg.crash         serve mode dies on purpose (a #UD in `kdbg_crash`) once the workers
//!                    run: tests the fatal path and what a debugger sees of it
//! kdbg.crash=stack   serve mode starts a task that tramples its stack canary (as a
//!                    stack overflow would): the scheduler's overflow check must stop it
//! kdbg.crash=KIND    serve mode starts a task `crasher` that dies on purpose: `ud`
//!                    (same as `kdbg.crash`), `panic` (an index out of bounds), `gp`
//!                    (a bad segment selector), `pf` (a read at 0x18), `de` (a divide
//!                    by zero), `df` (a double fault), `overflow` (unbounded recursion
//!                    into the stack's guard page), `alloc` (a panic inside the
//!                    allocator, heap lock held), `stub` (a panic inside the stub's
//!                    own death path: the fallback dump)
//! kdbg.ondeath=P     what a dying kernel does when no debugger is attached: `wait`
//!                    (default in serve mode) stays in the stub for a debugger on COM2,
//!                    `exit` (default in selftest and bench) exits QEMU with status 37,
//!                    `reboot` resets the machine
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
    /// `kdbg.ondeath=`; `None`: the mode's default.
    pub ondeath: Option<stub::death::OnDeath>,
    /// `kdbg.idle=SECS` (0: stay stopped).
    pub idle_secs: u64,
}

impl Cmdline {
    /// The death policy in force: `kdbg.ondeath=`, else `wait` when serving
    /// and `exit` otherwise.
    pub fn on_death(&self) -> stub::death::OnDeath {
        use stub::death::OnDeath;
        self.ondeath.unwrap_or(match self.mode {
            Mode::Serve => OnDeath::Wait,
            _ => OnDeath::Exit,
        })
    }
}

/// How `kdbg.crash` makes the kernel die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// `kdbg.crash`: an unclaimed #UD.
    InvalidOpcode,
    /// `kdbg.crash=stack`: a task's stack canary overwritten.
    StackOverflow,
    /// `kdbg.crash=panic`: a Rust panic (index out of bounds).
    Panic,
    /// `kdbg.crash=gp`: #GP with a non-zero error code (a bad selector).
    GeneralProtection,
    /// `kdbg.crash=pf`: #PF reading address 0x18.
    PageFault,
    /// `kdbg.crash=de`: #DE (a divide by zero).
    DivideError,
    /// `kdbg.crash=df`: a double fault (a #PF whose gate is unusable).
    DoubleFault,
    /// `kdbg.crash=overflow`: unbounded recursion into the guard page.
    Recursion,
    /// `kdbg.crash=alloc`: a panic inside the allocator.
    Alloc,
    /// `kdbg.crash=stub`: a panic inside the stub's death path.
    Stub,
}

impl Crash {
    fn parse(kind: &str) -> Option<Crash> {
        Some(match kind {
            "ud" => Crash::InvalidOpcode,
            "stack" => Crash::StackOverflow,
            "panic" => Crash::Panic,
            "gp" => Crash::GeneralProtection,
            "pf" => Crash::PageFault,
            "de" => Crash::DivideError,
            "df" => Crash::DoubleFault,
            "overflow" => Crash::Recursion,
            "alloc" => Crash::Alloc,
            "stub" => Crash::Stub,
            _ => return None,
        })
    }
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
    /// `kdbg.crash=` with an unknown kind.
    BadCrash(&'static str),
    /// `kdbg.ondeath=` with an unknown policy.
    BadOnDeath(&'static str),
    /// `kdbg.idle=` without a number of seconds.
    BadIdle(&'static str),
}

/// The text shown when the command line is wrong.
pub const ACCEPTED: &str = "accepted: one mode of `serve` (default), `selftest`, `selftest=SUITE[,SUITE...]`, `bench`; flags `kdbg.wait`, `kdbg.truth`, `kdbg.quiet`, `kdbg.crash[=ud|panic|gp|pf|de|df|stack|overflow|alloc|stub]`, `kdbg.ondeath=wait|exit|reboot`, `kdbg.idle=SECS`";

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
            ondeath: None,
            idle_secs: 0,
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
                w if w.starts_with("kdbg.crash=") => {
                    let kind = w.trim_start_matches("kdbg.crash=");
                    c.crash = Some(Crash::parse(kind).ok_or(CmdlineError::BadCrash(w))?);
                    None
                }
                w if w.starts_with("kdbg.ondeath=") => {
                    let p = w.trim_start_matches("kdbg.ondeath=");
                    c.ondeath =
                        Some(stub::death::OnDeath::parse(p).ok_or(CmdlineError::BadOnDeath(w))?);
                    None
                }
                w if w.starts_with("kdbg.idle=") => {
                    let v = w.trim_start_matches("kdbg.idle=");
                    c.idle_secs = v.parse().map_err(|_| CmdlineError::BadIdle(w))?;
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
