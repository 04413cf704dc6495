//! The `kdbg` command line: options, batch mode, and the choice between
//! REPL and batch.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::cmd::parse_line;
use crate::output::Output;
use crate::render::Render;
use crate::rsp::Endpoint;
use crate::session::{Options, Session};

pub const USAGE: &str = "\
kdbg: an interactive x86_64 kernel debugger

usage:
  kdbg --connect tcp:HOST:PORT|unix:PATH|/dev/ttyX[,BAUD] --symbols ELF [options]
  kdbg --kernel ELF [options]           start QEMU with the kernel and attach
  kdbg --core FILE --symbols ELF        open a core file (`dump core`) offline, read-only
  kdbg addr2line -e ELF [ADDR...]       binutils-compatible addr2line
  kdbg report FILE [--json] [hist PROBE [lat|ret|ARG] | count [PROBE] [by FIELD]]
                                        show a recording (`record FILE`, --record)
  kdbg help [CMD] [--markdown]          the command reference

options:
  --json                 one JSON object per command result and per event (NDJSON)
  --batch FILE           run the commands in FILE (stdin is read when it is not a tty)
  --record FILE          append every delivered event to FILE from the start (`record`)
  --keep-going           in batch mode, carry on after a failing command
  --timeout S            how long to wait for the stub's answers (default 5)
  --tsc-hz N             the kernel's TSC rate, for timestamps (if the stub does not say)
  --stopped              leave the kernel stopped after attaching (default: it runs)
  --remove-probes        remove the probes on exit (default: they stay)
  --kernel-exits-with-kdbg  the kernel's QEMU stops when kdbg leaves (set by
                         `cargo xtask run`; implied by --kernel)
  --memory FILE          guest RAM shared through a file (QEMU memory-backend-file,
                         share=on; `cargo xtask run` passes it): memory reads and
                         events from the mapping instead of the UART
  --console FILE         with --kernel: write the kernel console there
  --append ARGS          with --kernel: the kernel command line
  --color auto|always|never
  -V, --version          the version
  -h, --help             this text";

#[derive(Debug, Default)]
pub struct Args {
    pub connect: Option<String>,
    pub symbols: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub core: Option<PathBuf>,
    pub json: bool,
    pub batch: Option<PathBuf>,
    pub keep_going: bool,
    pub timeout: Option<f64>,
    pub tsc_hz: Option<u64>,
    pub stopped: bool,
    pub remove_probes: bool,
    pub kernel_exits_with_kdbg: bool,
    pub console: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub append: Option<String>,
    pub color: Option<String>,
    pub record: Option<PathBuf>,
}

pub fn parse_args(argv: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| anyhow!("{name} needs {what}; see kdbg --help"))
        };
        match name {
            "--connect" | "-c" => a.connect = Some(value("an endpoint")?),
            "--symbols" | "-s" => a.symbols = Some(value("an ELF path")?.into()),
            "--kernel" | "-k" => a.kernel = Some(value("an ELF path")?.into()),
            "--core" => a.core = Some(value("a core file path")?.into()),
            "--json" => a.json = true,
            "--batch" | "-b" => a.batch = Some(value("a script path")?.into()),
            "--keep-going" => a.keep_going = true,
            "--timeout" => {
                let v = value("seconds")?;
                a.timeout = Some(
                    v.parse()
                        .map_err(|_| anyhow!("bad --timeout `{v}`: use seconds"))?,
                )
            }
            "--tsc-hz" => {
                let v = value("a rate")?;
                a.tsc_hz =
                    Some(crate::cmd::parse::number(&v).map_err(|e| anyhow!("--tsc-hz: {e}"))?)
            }
            "--stopped" => a.stopped = true,
            "--remove-probes" => a.remove_probes = true,
            "--kernel-exits-with-kdbg" => a.kernel_exits_with_kdbg = true,
            "--console" => a.console = Some(value("a file")?.into()),
            "--memory" | "-m" => a.memory = Some(value("the guest RAM file")?.into()),
            "--append" => a.append = Some(value("a command line")?),
            "--color" => a.color = Some(value("auto|always|never")?),
            "--record" => a.record = Some(value("a file")?.into()),
            _ => bail!("unknown option `{arg}`; see kdbg --help"),
        }
    }
    if a.connect.is_some() && a.kernel.is_some() {
        bail!("use either --connect or --kernel, not both");
    }
    if a.core.is_some() && (a.connect.is_some() || a.kernel.is_some()) {
        bail!("--core opens a core file offline: use it without --connect or --kernel");
    }
    Ok(a)
}

pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kdbg: {e:#}");
            2
        }
    }
}

fn real_main(argv: &[String]) -> Result<i32> {
    match argv.first().map(String::as_str) {
        Some("addr2line") => return crate::addr2line::run(&argv[1..]),
        Some("report") => return crate::record::report::run(&argv[1..]),
        Some("help") => {
            let out = crate::exec::help(&argv[1..])?;
            if let Output::Help { text } = out {
                use std::io::Write;
                // A closed pipe (`kdbg help | head`) is not an error.
                let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
            }
            return Ok(0);
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(0);
        }
        Some("-V" | "--version") => {
            println!("kdbg {}", env!("CARGO_PKG_VERSION"));
            return Ok(0);
        }
        _ => {}
    }
    let args = parse_args(argv)?;
    let stdout_tty = std::io::stdout().is_terminal();
    let color = match args.color.as_deref() {
        None | Some("auto") => stdout_tty && !args.json,
        Some("always") => true,
        Some("never") => false,
        Some(o) => bail!("--color {o}: use auto, always or never"),
    };
    let render = Render {
        json: args.json,
        color,
    };
    let mut _qemu = None;
    let (endpoint, symbols) = if let Some(core) = &args.core {
        let ep = crate::coredump::open(core, args.symbols.as_deref())?;
        (Some(ep), args.symbols.clone())
    } else if let Some(k) = &args.kernel {
        let q = crate::qemu::Qemu::start(k, args.console.as_deref(), args.append.as_deref())?;
        let ep = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: q.port,
        };
        _qemu = Some(q);
        (
            Some(ep),
            Some(args.symbols.clone().unwrap_or_else(|| k.clone())),
        )
    } else {
        let ep = args
            .connect
            .as_deref()
            .map(str::parse::<Endpoint>)
            .transpose()?;
        (ep, args.symbols.clone())
    };
    if symbols.is_none() {
        eprintln!(
            "kdbg: no --symbols: only addresses, $argN and %reg work (give the kernel ELF for names)"
        );
    }
    let progress = std::io::stderr().is_terminal() && args.batch.is_none();
    let started = std::time::Instant::now();
    if let (true, Some(p)) = (progress, &symbols) {
        let mib = std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0);
        eprint!("kdbg: loading symbols from {} ({mib} MiB)...", p.display());
    }
    let mut session = Session::new(Options {
        endpoint,
        symbols,
        render,
        timeout: Duration::from_secs_f64(args.timeout.unwrap_or(5.0)),
        tsc_hz: args.tsc_hz,
        resume: !args.stopped,
        memory: args.memory.clone(),
    })?;
    if progress && session.shared.image.loaded() {
        eprintln!(" done in {:.1} s", started.elapsed().as_secs_f64());
    }
    session.remove_probes_on_exit = args.remove_probes;
    session.show_attach_summary();
    if let Some(path) = &args.record {
        let info = crate::exec::record::start(&session, path)?;
        if !args.json {
            eprintln!("kdbg: {}", crate::exec::record::text(&info));
        }
    }
    session.kernel_exits_with_kdbg = args.kernel_exits_with_kdbg || args.kernel.is_some();
    let interactive = args.batch.is_none() && std::io::stdin().is_terminal();
    let code = if interactive {
        crate::repl::run(&mut session)?
    } else {
        let (name, lines): (String, Box<dyn BufRead>) = match &args.batch {
            Some(p) => (
                p.display().to_string(),
                Box::new(std::io::BufReader::new(std::fs::File::open(p).map_err(
                    |e| anyhow!("cannot open script {}: {e}", p.display()),
                )?)),
            ),
            None => ("<stdin>".into(), Box::new(std::io::stdin().lock())),
        };
        run_script(&mut session, &name, lines, args.keep_going)
    };
    session.leave();
    // After leaving, so the events of the last moments are in it.
    match crate::exec::record::stop(&session) {
        Ok(Some(info)) if !args.json => eprintln!("kdbg: {}", crate::exec::record::text(&info)),
        Ok(_) => {}
        Err(e) => eprintln!("kdbg: {e:#}"),
    }
    Ok(code)
}

/// Print a command's result through the session's printer.
pub fn show(session: &Session, name: &str, out: &Output) {
    let r = session.shared.display.render();
    let text = r.output(name, out);
    if !text.is_empty() {
        session.shared.print(text);
    }
}

pub fn show_error(session: &Session, name: &str, at: Option<&str>, msg: &str) {
    let r = session.shared.display.render();
    let line = r.error(name, at, msg);
    if r.json {
        session.shared.print(line);
    } else {
        // One write: an event printed meanwhile cannot land inside it.
        use std::io::Write;
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{line}\n").as_bytes());
    }
}

/// Run one line; returns false when it failed.
pub fn run_line(session: &mut Session, line: &str, at: Option<&str>) -> bool {
    match parse_line(line) {
        Ok(None) => true,
        Ok(Some(inv)) => match crate::exec::run(session, &inv) {
            Ok(out) => {
                show(session, inv.cmd.name, &out);
                true
            }
            Err(e) => {
                show_error(session, inv.cmd.name, at, &format!("{e:#}"));
                false
            }
        },
        Err(e) => {
            show_error(session, "", at, &e.to_string());
            false
        }
    }
}

/// Batch mode: the first failing command stops the run (unless
/// `keep_going`) with exit status 1 and `FILE:LINE: error: ...`.
pub fn run_script(
    session: &mut Session,
    name: &str,
    lines: Box<dyn BufRead>,
    keep_going: bool,
) -> i32 {
    let mut failed = false;
    for (n, line) in lines.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                show_error(session, "", Some(name), &format!("cannot read: {e}"));
                return 1;
            }
        };
        let at = format!("{name}:{}", n + 1);
        if !run_line(session, &line, Some(&at)) {
            failed = true;
            if !keep_going {
                return 1;
            }
        }
        if session.quit {
            break;
        }
    }
    i32::from(failed)
}
