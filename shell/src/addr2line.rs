//! `kdbg addr2line -e ELF [-f] [-i] [-C] [-a] [-p] [-s] [ADDR...]`: binutils
//! `addr2line` with the same output, on kdbg's symbol library. Reads
//! addresses from stdin (one per line) when none are given.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use symbols::binutils::{Options, Session};

const USAGE: &str = "usage: kdbg addr2line -e ELF [-f] [-i] [-C] [-a] [-p] [-s] [ADDR...]
  -e, --exe=ELF       the ELF file (kernel image with symbols)
  -f, --functions     print function names
  -i, --inlines       print the chain of inlined frames
  -C, --demangle      demangle names
  -a, --addresses     print the address first
  -p, --pretty-print  one line per address
  -s, --basenames     print only the base of file names
Addresses are hex (0x optional); with none, they are read from stdin.
The output is the same as binutils addr2line's for the same flags.";

pub(crate) struct Args {
    pub(crate) exe: String,
    pub(crate) opts: Options,
    pub(crate) addrs: Vec<String>,
}

pub(crate) fn parse(args: &[String]) -> anyhow::Result<Option<Args>> {
    let mut exe = None;
    let mut opts = Options::default();
    let mut addrs = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if let Some(long) = a.strip_prefix("--") {
            let (key, value) = match long.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (long, None),
            };
            match key {
                "" => {
                    addrs.extend(args[i..].iter().cloned());
                    break;
                }
                "exe" => {
                    let v = match value {
                        Some(v) => v,
                        None => {
                            i += 1;
                            args.get(i - 1)
                                .cloned()
                                .context("--exe needs a file name")?
                        }
                    };
                    exe = Some(v);
                }
                "functions" => opts.functions = true,
                "inlines" => opts.inlines = true,
                "demangle" => opts.demangle = true,
                "addresses" => opts.addresses = true,
                "pretty-print" => opts.pretty = true,
                "basenames" => opts.basenames = true,
                "help" => return Ok(None),
                _ => bail!("kdbg addr2line: unknown option --{key}\n{USAGE}"),
            }
        } else if a.len() > 1 && a.starts_with('-') {
            let flags: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < flags.len() {
                match flags[j] {
                    'e' => {
                        let rest: String = flags[j + 1..].iter().collect();
                        if rest.is_empty() {
                            i += 1;
                            exe = Some(args.get(i - 1).cloned().context("-e needs a file name")?);
                        } else {
                            exe = Some(rest);
                        }
                        break;
                    }
                    'f' => opts.functions = true,
                    'i' => opts.inlines = true,
                    'C' => opts.demangle = true,
                    'a' => opts.addresses = true,
                    'p' => opts.pretty = true,
                    's' => opts.basenames = true,
                    'h' | 'H' => return Ok(None),
                    c => bail!("kdbg addr2line: unknown option -{c}\n{USAGE}"),
                }
                j += 1;
            }
        } else {
            addrs.push(a.clone());
        }
    }
    let exe = exe.unwrap_or_else(|| "a.out".to_string());
    Ok(Some(Args { exe, opts, addrs }))
}

/// Runs `kdbg addr2line` with `args` (the words after `addr2line`).
/// Returns the process exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    let Some(args) = parse(args)? else {
        println!("{USAGE}");
        return Ok(0);
    };
    let elf = symbols::Elf::open(&args.exe)?;
    let mut session = Session::new(&elf, args.opts);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = (|| -> std::io::Result<()> {
        if args.addrs.is_empty() {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                out.write_all(session.format(&line?).as_bytes())?;
                // Callers may wait for the answer before writing the next address.
                out.flush()?;
            }
        } else {
            for a in &args.addrs {
                out.write_all(session.format(a).as_bytes())?;
            }
        }
        out.flush()
    })();
    match result {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context("kdbg addr2line: writing the output"),
    }
}
