//! Command handlers: each returns data ([`Output`]); the caller renders.

pub mod code;
pub mod eventcmds;
pub mod info;
pub mod locate;
pub mod memory;
pub mod probes;
pub mod run;
pub mod stack;
pub mod state;

use anyhow::{Result, anyhow, bail};
use proto::command::ProbeAction;

use crate::cmd::Invocation;
use crate::cmd::table::{self, COMMANDS, Group, Id};
use crate::output::Output;
use crate::rsp::BreakKind;
use crate::session::Session;

/// Run one parsed command.
pub fn run(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let c = inv.cmd;
    if c.needs_target && !s.connected() {
        if s.endpoint.is_some() {
            bail!("not connected to the stub (the connection was lost): use `reconnect`");
        }
        bail!("not connected to a stub: start kdbg with --connect tcp:HOST:PORT or --kernel ELF");
    }
    s.wait_stops_shown();
    s.sync_stops();
    if c.requires_halted && s.running() {
        bail!(
            "`{}` needs the kernel stopped: use `interrupt` (or Ctrl-C) first",
            c.name
        );
    }
    let a = inv.args.as_slice();
    let m = inv.modifier.as_deref();
    match c.id {
        Id::Kprobe => probes::kprobe(s, a),
        Id::Jprobe => probes::entry_probe(s, a, false),
        Id::Kretprobe => probes::entry_probe(s, a, true),
        Id::Probes => {
            no_args(c, a)?;
            probes::list(s)
        }
        Id::Enable => probes::change(s, ProbeAction::Enable, a),
        Id::Disable => probes::change(s, ProbeAction::Disable, a),
        Id::Delete => match a.split_first() {
            Some((w, rest)) if w == "break" || w == "b" => run::delete_breaks(s, rest),
            _ => probes::change(s, ProbeAction::Delete, a),
        },
        Id::Events => eventcmds::events(s, a),
        Id::Live => eventcmds::live(s, a),
        Id::Filter => eventcmds::filter(s, a),
        Id::Hist => eventcmds::hist(s, a),
        Id::Wait => eventcmds::wait(s, a),
        Id::Sleep => eventcmds::sleep(s, a),
        Id::Break => run::breakpoint(s, a, BreakKind::Software, false),
        Id::Tbreak => run::breakpoint(s, a, BreakKind::Software, true),
        Id::Hbreak => run::breakpoint(s, a, BreakKind::Hardware, false),
        Id::Watch => run::watch(s, a),
        Id::Continue => {
            no_args(c, a)?;
            run::cont(s)
        }
        Id::Stepi => run::stepi(s, a),
        Id::Nexti => run::nexti(s, a),
        Id::Interrupt => {
            no_args(c, a)?;
            run::interrupt(s)
        }
        Id::Regs => state::regs(s, a),
        Id::Examine => memory::examine(s, m, a),
        Id::Write => memory::write_mem(s, m, a),
        Id::Disas => code::disas(s, a),
        Id::Backtrace => stack::backtrace(s, a),
        Id::Info => info::info(s, a),
        Id::Ptype => info::ptype(s, a),
        Id::Threads => {
            no_args(c, a)?;
            info::threads(s)
        }
        Id::Thread => info::thread(s, a),
        Id::Monitor => Ok(Output::Monitor {
            text: s.client()?.monitor(&a.join(" "))?,
        }),
        Id::Reconnect => {
            s.connect()?;
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
        Id::Help => help(a),
        Id::Quit => {
            for w in a {
                match w.as_str() {
                    "--remove-probes" | "-r" => s.remove_probes_on_exit = true,
                    "--keep-probes" => s.remove_probes_on_exit = false,
                    _ => bail!("usage: quit [--remove-probes]"),
                }
            }
            s.quit = true;
            Ok(Output::Quit)
        }
    }
}

fn no_args(c: &table::Command, a: &[String]) -> Result<()> {
    if a.is_empty() {
        Ok(())
    } else {
        bail!(
            "`{}` takes no arguments (usage: {})",
            c.name,
            c.usage_line()
        )
    }
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
