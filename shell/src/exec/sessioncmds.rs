//! Session commands: `monitor`, `reconnect`, `help`, `quit`.

use anyhow::{Result, anyhow, bail};

use crate::cmd::Invocation;
use crate::cmd::table::{self, COMMANDS, Group};
use crate::output::Output;
use crate::session::Session;

/// `monitor TEXT...`.
pub fn monitor(s: &mut Session, inv: &Invocation) -> Result<Output> {
    if let [w, mode, ..] = inv.args.as_slice()
        && w == "stream"
        && mode != "record"
    {
        bail!(
            "`monitor stream {mode}` would stop every event reaching kdbg (it reads checksummed records): \
             use `live off` to hide events, or gdb's `monitor` for other modes"
        );
    }
    // Probes set or deleted by hand (`monitor kretprobe sys_open
    // fetch=str64@arg0`): the shell adopts them before their first event
    // is shown, as for its own.
    let probe_cmd = inv
        .args
        .first()
        .is_some_and(|w| ["kprobe", "jprobe", "kretprobe", "probe"].contains(&w.as_str()));
    if probe_cmd {
        s.shared.probes.begin_registering();
    }
    let text = s
        .client()
        .and_then(|mut c| Ok(c.monitor(&inv.args.join(" "))?));
    if probe_cmd {
        let _ = crate::exec::probes::sync(s);
        s.shared.flush_orphans();
    }
    Ok(Output::Monitor { text: text? })
}

/// `reconnect`.
pub fn reconnect(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    s.connect()?;
    s.show_attach_summary();
    Ok(Output::Message {
        text: format!(
            "connected to {}",
            s.endpoint
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default()
        ),
    })
}

/// `quit [--remove-probes]`.
pub fn quit(s: &mut Session, inv: &Invocation) -> Result<Output> {
    for w in &inv.args {
        match w.as_str() {
            "--remove-probes" | "-r" => s.remove_probes_on_exit = true,
            "--keep-probes" => s.remove_probes_on_exit = false,
            _ => bail!("usage: quit [--remove-probes]"),
        }
    }
    // Maps are printed at quit (bpftrace's habit), before any probe goes.
    if s.connected() {
        crate::exec::maps::print_all_async(s);
    }
    s.quit = true;
    Ok(Output::Quit)
}

/// The `help` command (a row handler).
pub fn help_cmd(_s: &mut Session, inv: &Invocation) -> Result<Output> {
    help(&inv.args)
}

/// `help`, `help CMD`, `help --markdown`.
pub fn help(args: &[String]) -> Result<Output> {
    match args {
        [] => {
            let mut s = String::new();
            for g in Group::ALL {
                s.push_str(&format!("{}:\n", g.title()));
                for c in COMMANDS.iter().filter(|c| c.group == g) {
                    let usage = c.usage_line();
                    if usage.len() > 36 {
                        s.push_str(&format!("  {usage}\n  {:<36} {}\n", "", c.summary));
                    } else {
                        s.push_str(&format!("  {usage:<36} {}\n", c.summary));
                    }
                }
            }
            s.push_str(
                "\n`help CMD` explains one command. Events print above the prompt as they arrive.",
            );
            Ok(Output::Help { text: s })
        }
        [m] if m == "--markdown" => Ok(Output::Help {
            text: table::markdown(),
        }),
        [name] => {
            let c = table::find(name).ok_or_else(|| match table::suggest(name) {
                Some(n) => anyhow!("no command `{name}`: did you mean `{n}`?"),
                None => anyhow!("no command `{name}`: `help` lists them"),
            })?;
            let mut s = format!("usage: {}\n{}", c.usage_line(), c.summary);
            if !c.aliases.is_empty() {
                s.push_str(&format!("\naliases: {}", c.aliases.join(", ")));
            }
            if c.requires_halted {
                s.push_str("\nneeds the kernel stopped (`interrupt` first)");
            }
            if !c.details.is_empty() {
                s.push_str(&format!("\n\n{}", c.details));
            }
            Ok(Output::Help { text: s })
        }
        _ => bail!("usage: help [CMD]"),
    }
}
