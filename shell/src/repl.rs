//! The interactive prompt (rustyline): completion of commands, symbols,
//! probe ids and paths from the command table; hints; history across runs;
//! Ctrl-C stops the running kernel (or clears the line); Ctrl-D leaves;
//! events print above the prompt.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, ExternalPrinter, Helper};

use crate::cmd::table::{self, ArgKind, COMMANDS};
use crate::session::{CANCEL, Session, Shared};

pub struct KdbgHelper {
    pub shared: Arc<Shared>,
    files: FilenameCompleter,
}

impl KdbgHelper {
    pub fn new(shared: Arc<Shared>) -> Self {
        KdbgHelper {
            shared,
            files: FilenameCompleter::new(),
        }
    }
}

/// What to complete at `pos`: (start of the word, candidates).
pub fn complete_line(h: &KdbgHelper, line: &str, pos: usize) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &before[start..];
    let words: Vec<&str> = before[..start].split_whitespace().collect();
    if words.is_empty() {
        let mut c: Vec<String> = COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
            .filter(|n| n.starts_with(word) && n.len() > 1)
            .map(str::to_string)
            .collect();
        c.sort();
        c.dedup();
        return (start, c);
    }
    let name = words[0].split('/').next().unwrap_or("");
    let Some(cmd) = table::find(name) else {
        return (start, Vec::new());
    };
    if word.starts_with('-') && !cmd.flags.is_empty() {
        let c = cmd.flags.iter().filter(|f| f.starts_with(word));
        return (start, c.map(|f| f.to_string()).collect());
    }
    // Flags are not positional arguments.
    let n = words[1..].iter().filter(|w| !cmd.flags.contains(w)).count();
    let Some(arg) = cmd.arg_at(n) else {
        return (start, Vec::new());
    };
    let mut cands: Vec<String> = match arg.kind {
        ArgKind::Location | ArgKind::Function | ArgKind::Symbol | ArgKind::TypeName => {
            let w = word.trim_start_matches('&');
            let off = word.len() - w.len();
            // Code locations complete to functions only; data is for x,
            // watch and ptype.
            let code = matches!(arg.kind, ArgKind::Location | ArgKind::Function);
            return (start + off, h.shared.image.completions(w, code));
        }
        ArgKind::Expr => {
            return (start, crate::exec::inspect::complete_expr(&h.shared, word));
        }
        ArgKind::ProbeId => h
            .shared
            .probes
            .ids()
            .iter()
            .map(|k| k.to_string())
            .collect(),
        ArgKind::Keyword(words) => words.iter().map(|w| w.to_string()).collect(),
        ArgKind::Command => COMMANDS.iter().map(|c| c.name.to_string()).collect(),
        ArgKind::Thread => h
            .shared
            .display
            .task_ids()
            .iter()
            .map(|k| k.to_string())
            .collect(),
        ArgKind::Capture => {
            // Parameter names of the probed function.
            let func = words[1..]
                .iter()
                .find(|w| !cmd.flags.contains(w))
                .copied()
                .unwrap_or("");
            // The aggregation functions, then `by`, come first.
            let mut out: Vec<String> = proto::agg::FN_NAMES
                .iter()
                .chain(&["by"])
                .map(|w| w.to_string())
                .collect();
            if let Ok(elf) = h.shared.image.elf()
                && let Ok(fs) = elf.functions_named(func)
                && let Some(f) = fs.first()
            {
                for p in &f.params {
                    out.push(p.name.clone());
                    out.push(format!("{}:string", p.name));
                }
            }
            // `printf "FMT" ARGS...`: its arguments may use the built-in
            // names too.
            if words.contains(&"printf") {
                out.extend(
                    [
                        "ret",
                        "$duration",
                        "$task",
                        "$comm",
                        "$cpu",
                        "$probe",
                        "$func",
                    ]
                    .map(String::from),
                );
            } else {
                out.push("printf".into());
            }
            out
        }
        ArgKind::Path => {
            return match h.files.complete_path(line, pos) {
                Ok((s, v)) => (s, v.into_iter().map(|p| p.replacement).collect()),
                Err(_) => (start, Vec::new()),
            };
        }
        ArgKind::Number | ArgKind::Text | ArgKind::BreakId => Vec::new(),
    };
    // An optional keyword may be left out (`delete 3` beside `delete
    // break 1`): the ids of the next slot are offered too.
    if let ArgKind::Keyword(_) = arg.kind
        && arg.optional
        && let Some(next) = cmd.args.get(n + 1)
        && next.kind == ArgKind::ProbeId
    {
        cands.extend(h.shared.probes.ids().iter().map(|k| k.to_string()));
    }
    (
        start,
        cands.into_iter().filter(|c| c.starts_with(word)).collect(),
    )
}

/// The grey text after the cursor: the rest of a command name, or the
/// usage of its arguments.
pub fn hint_for(line: &str, pos: usize) -> Option<String> {
    if pos < line.len() || line.is_empty() {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    if !line.ends_with(' ') && words.len() == 1 {
        let w = words[0];
        let c = COMMANDS.iter().find(|c| c.name.starts_with(w))?;
        return Some(c.name[w.len()..].to_string());
    }
    if line.ends_with(' ') && words.len() == 1 {
        let c = table::find(words[0].split('/').next()?)?;
        let usage = c.usage_line();
        let rest = usage.strip_prefix(c.name)?.trim_start();
        return (!rest.is_empty()).then(|| rest.to_string());
    }
    None
}

impl Completer for KdbgHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, c) = complete_line(self, line, pos);
        // A unique completion of a whole word gets the space after it.
        let unique = c.len() == 1 && !c[0].ends_with('/');
        Ok((
            start,
            c.into_iter()
                .map(|s| Pair {
                    display: s.clone(),
                    replacement: if unique { format!("{s} ") } else { s },
                })
                .collect(),
        ))
    }
}

impl Hinter for KdbgHelper {
    type Hint = String;
    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        hint_for(line, pos)
    }
}

impl Highlighter for KdbgHelper {
    /// Called at every redraw (also when an event or a stop line is
    /// printed above the prompt): show the state as it is now.
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        default: bool,
    ) -> Cow<'b, str> {
        let now = self.shared.prompt();
        if default && now.len() == prompt.len() {
            Cow::Borrowed(now)
        } else {
            Cow::Borrowed(prompt)
        }
    }

    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.shared.display.render().color {
            Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
        } else {
            Cow::Borrowed(hint)
        }
    }
}

impl Validator for KdbgHelper {}
impl Helper for KdbgHelper {}

extern "C" fn on_sigint(_: libc::c_int) {
    CANCEL.store(true, Ordering::SeqCst);
}

fn history_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("KDBG_HISTORY") {
        return Some(p.into());
    }
    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".kdbg_history"))
}

pub fn run(session: &mut Session) -> Result<i32> {
    let config = Config::builder()
        .auto_add_history(true)
        .max_history_size(5000)?
        .build();
    let mut ed: Editor<KdbgHelper, rustyline::history::DefaultHistory> =
        Editor::with_config(config)?;
    ed.set_helper(Some(KdbgHelper::new(session.shared.clone())));
    let hist = history_path();
    if let Some(h) = &hist {
        let _ = ed.load_history(h);
    }
    let mut printer_thread = None;
    if let Ok(mut printer) = ed.create_external_printer() {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        session.set_printer(tx);
        printer_thread = std::thread::Builder::new()
            .name("printer".into())
            .spawn(move || {
                for line in rx {
                    if printer.print(format!("{line}\n")).is_err() {
                        println!("{line}");
                    }
                }
            })
            .ok();
    }
    // Ctrl-C while a command waits cancels it (readline handles its own).
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    eprintln!(
        "kdbg: {}; `help` lists commands, Tab completes, Ctrl-C stops the kernel, Ctrl-D leaves",
        if session.connected() {
            format!(
                "attached to {}{}",
                session
                    .endpoint
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
                if session.running() {
                    ", kernel running"
                } else {
                    ", kernel stopped"
                }
            )
        } else {
            "not connected".to_string()
        }
    );
    loop {
        match ed.readline(session.shared.prompt()) {
            Ok(line) => {
                CANCEL.store(false, Ordering::SeqCst);
                // Saved per line, so a killed or crashed shell loses no history.
                if let Some(h) = &hist {
                    let _ = ed.save_history(h);
                }
                crate::cli::run_line(session, &line, None);
                if session.quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => {
                if session.running() {
                    crate::cli::run_line(session, "interrupt", None);
                }
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("kdbg: terminal error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &hist {
        let _ = ed.save_history(h);
    }
    if let Some(note) = session.leaving_note() {
        eprintln!("{note}");
    }
    // Events printed after this go straight to stdout.
    session.shared.display.set_printer(None);
    drop(printer_thread);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert_eq!(hint_for("kpro", 4).as_deref(), Some("be"));
        assert_eq!(
            hint_for("jprobe ", 7).as_deref(),
            Some("[--dry-run] FUNC [ARGS...|AGG] [printf \"FMT\" ARGS...] [if EXPR]")
        );
        assert_eq!(hint_for("jprobe x", 8), None);
        assert_eq!(hint_for("", 0), None);
    }
}
