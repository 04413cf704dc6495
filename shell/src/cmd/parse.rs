//! From a typed line to a command and its words.

use super::table::{self, Command};

/// A parsed line: the command, an optional `/MOD` suffix (`x/8gx`), the
/// words after it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub cmd: &'static Command,
    pub modifier: Option<String>,
    pub args: Vec<String>,
    /// The text after the command (and its `/MOD`) as typed, quotes
    /// kept: expressions read it (`print "a b"`, `print 'x'`).
    pub raw: String,
}

impl Invocation {
    /// The expression text: the words as typed (quotes and spacing kept),
    /// else the words joined (invocations built by the shell itself).
    pub fn text(&self) -> String {
        if self.raw.trim().is_empty() {
            self.args.join(" ")
        } else {
            self.raw.trim().to_string()
        }
    }

    /// The text after the first `n` words, as typed (`condition 1 EXPR`).
    pub fn text_after(&self, n: usize) -> String {
        if self.raw.trim().is_empty() {
            self.args.get(n..).unwrap_or(&[]).join(" ")
        } else {
            after_words(&self.raw, n).trim().to_string()
        }
    }

    /// For commands without arguments: refuse any, naming the usage.
    pub fn no_args(&self) -> anyhow::Result<()> {
        if self.args.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "`{}` takes no arguments (usage: {})",
                self.cmd.name,
                self.cmd.usage_line()
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("unknown command `{name}`{}", hint(.suggestion))]
    Unknown {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("unterminated quote: close the \" you opened")]
    Quote,
    #[error("`{0}` takes no /MODIFIER")]
    NoModifier(&'static str),
    #[error("`{cmd}` has no flag `{flag}`{}", flag_list(.flags))]
    NoFlag {
        cmd: &'static str,
        flag: String,
        flags: &'static [&'static str],
    },
}

fn flag_list(flags: &[&str]) -> String {
    if flags.is_empty() {
        " (it takes none)".into()
    } else {
        format!(": use {}", flags.join(", "))
    }
}

fn hint(s: &Option<&'static str>) -> String {
    match s {
        Some(n) => format!(": did you mean `{n}`? (`help` lists commands)"),
        None => ": `help` lists commands".to_string(),
    }
}

/// Split into words; `"..."` groups words and allows `\"` and `\\`.
pub fn words(line: &str) -> Result<Vec<String>, LineError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            // `\"` and `\\` are a quote and a backslash; other escapes
            // (`\n` in a printf format) reach the command as written.
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    if n != '"' && n != '\\' {
                        cur.push('\\');
                    }
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(LineError::Quote);
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `line` after its first `n` words (split as [`words`] does).
fn after_words(line: &str, n: usize) -> &str {
    let mut quoted = false;
    let mut in_word = false;
    let mut done = 0;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c.is_whitespace() && !quoted {
            if in_word {
                done += 1;
                in_word = false;
            }
            continue;
        }
        if !in_word {
            if done == n {
                return &line[i..];
            }
            in_word = true;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    ""
}

/// Parse one line. `Ok(None)` for blank lines and `#` comments.
pub fn parse_line(line: &str) -> Result<Option<Invocation>, LineError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut w = words(trimmed)?;
    let total = w.len();
    let first = w.remove(0);
    let (name, modifier) = match first.split_once('/') {
        Some((n, m)) if !n.is_empty() => (n.to_string(), Some(m.to_string())),
        _ => (first, None),
    };
    // `x /8gx addr` is the same as `x/8gx addr`.
    let mut modifier = modifier;
    let cmd = table::find(&name).ok_or_else(|| LineError::Unknown {
        suggestion: table::suggest(&name),
        name: name.clone(),
    })?;
    if modifier.is_none() && cmd.modifier && w.first().is_some_and(|a| a.starts_with('/')) {
        modifier = Some(w.remove(0)[1..].to_string());
    }
    if modifier.is_some() && !cmd.modifier {
        return Err(LineError::NoModifier(cmd.name));
    }
    // Commands that take flags refuse the ones they do not know (`watch
    // -x foo`). Words of free text and expressions (`print -x`, `set var
    // a = -b`) are not flags; commands without flags check their own words.
    let free_text = cmd
        .args
        .iter()
        .any(|a| matches!(a.kind, table::ArgKind::Text | table::ArgKind::Expr));
    if !free_text
        && !cmd.flags.is_empty()
        && let Some(f) = w.iter().find(|a| {
            a.starts_with('-')
                && a[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '-')
                && !cmd.flags.contains(&a.as_str())
        })
    {
        return Err(LineError::NoFlag {
            cmd: cmd.name,
            flag: f.clone(),
            flags: cmd.flags,
        });
    }
    let raw = after_words(trimmed, total - w.len()).trim().to_string();
    Ok(Some(Invocation {
        cmd,
        modifier,
        args: w,
        raw,
    }))
}

/// A number the user typed that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad number `{0}`: use decimal or 0x-hex (e.g. 42, 0x2a)")]
pub struct BadNumber(pub String);

/// A number: decimal, `0x` hex, `0b` binary, `0o` octal, optional `-`.
pub fn number(s: &str) -> Result<u64, BadNumber> {
    let bad = || BadNumber(s.to_string());
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let digits = digits.replace('_', "");
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(h, 16)
    } else if let Some(b) = digits.strip_prefix("0b") {
        u64::from_str_radix(b, 2)
    } else if let Some(o) = digits.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|_| bad())?;
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// A count the user typed (`disas f 8`, `stepi 3`): at least 1, no sign.
pub fn count(s: &str) -> anyhow::Result<u64> {
    match amount(s)? {
        0 => anyhow::bail!("a count of 0 shows nothing: give 1 or more"),
        n => Ok(n),
    }
}

/// A quantity that may be 0 (`events 0`: only the counters), no sign.
pub fn amount(s: &str) -> anyhow::Result<u64> {
    if s.starts_with('-') {
        anyhow::bail!("`{s}` is not a count: give a positive number (e.g. 5)");
    }
    Ok(number(s)?)
}

/// `key=value` options among the words; returns the rest.
pub fn split_options(args: &[String]) -> (Vec<(String, String)>, Vec<String>) {
    let mut opts = Vec::new();
    let mut rest = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v))
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                opts.push((k.to_string(), v.to_string()))
            }
            _ => rest.push(a.clone()),
        }
    }
    (opts, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_quotes() {
        assert_eq!(words("a  b\tc").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(
            words(r#"write x "a b\"c""#).unwrap(),
            vec!["write", "x", "a b\"c"]
        );
        assert_eq!(words(r#""""#).unwrap(), vec![""]);
        assert_eq!(
            words(r#"printf "a\tb %d\n" n"#).unwrap(),
            vec!["printf", "a\\tb %d\\n", "n"]
        );
        assert_eq!(words("\"open").unwrap_err(), LineError::Quote);
    }

    #[test]
    fn raw_text_keeps_quotes_and_spacing() {
        let i = parse_line(r#"print "a  b""#).unwrap().unwrap();
        assert_eq!(i.args, vec!["a  b"]);
        assert_eq!(i.text(), r#""a  b""#);
        let i = parse_line(r#"print/x  "a\"b" == 1"#).unwrap().unwrap();
        assert_eq!(i.text(), r#""a\"b" == 1"#);
        let i = parse_line(r#"p /x "x y"[1]"#).unwrap().unwrap();
        assert_eq!(i.modifier.as_deref(), Some("x"));
        assert_eq!(i.text(), r#""x y"[1]"#);
        let i = parse_line("print   'a' +  1").unwrap().unwrap();
        assert_eq!(i.text(), "'a' +  1");
        let i = parse_line("continue").unwrap().unwrap();
        assert_eq!(i.text(), "");
    }

    #[test]
    fn parses_commands() {
        let i = parse_line("jprobe spawn_task name:string")
            .unwrap()
            .unwrap();
        assert_eq!(i.cmd.name, "jprobe");
        assert_eq!(i.args, vec!["spawn_task", "name:string"]);
        assert!(parse_line("   ").unwrap().is_none());
        assert!(parse_line("# comment").unwrap().is_none());
        let x = parse_line("x/8gx &ticks").unwrap().unwrap();
        assert_eq!(x.cmd.name, "x");
        assert_eq!(x.modifier.as_deref(), Some("8gx"));
        let x = parse_line("x /s msg").unwrap().unwrap();
        assert_eq!(x.modifier.as_deref(), Some("s"));
        assert_eq!(x.args, vec!["msg"]);
        assert_eq!(parse_line("c").unwrap().unwrap().cmd.name, "continue");
    }

    #[test]
    fn unknown_command_suggests() {
        let e = parse_line("kprob foo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown command `kprob`: did you mean `kprobe`? (`help` lists commands)"
        );
        let e = parse_line("frobnicate").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown command `frobnicate`: `help` lists commands"
        );
        assert!(parse_line("regs/x").is_err());
        assert_eq!(
            parse_line("watch -x foo").unwrap_err().to_string(),
            "`watch` has no flag `-x`: use -r, -a"
        );
        assert_eq!(
            parse_line("regs --all").unwrap_err().to_string(),
            "`regs` has no flag `--all`: use -v"
        );
        // Negative numbers are not flags; free text and expressions are
        // not checked.
        assert!(parse_line("write 0x1000 -1").is_ok());
        assert!(parse_line("monitor stream -x").is_ok());
        assert!(parse_line("print -x").is_ok());
    }

    #[test]
    fn numbers() {
        assert_eq!(number("42"), Ok(42));
        assert_eq!(number("0x2a"), Ok(42));
        assert_eq!(number("0b101"), Ok(5));
        assert_eq!(number("-1"), Ok(u64::MAX));
        assert_eq!(number("1_000"), Ok(1000));
        let e = number("0xzz").unwrap_err().to_string();
        assert_eq!(
            e,
            "bad number `0xzz`: use decimal or 0x-hex (e.g. 42, 0x2a)"
        );
        assert!(number("").is_err());
        assert!(number("12abc").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(count("5").unwrap(), 5);
        assert!(count("-1").unwrap_err().to_string().contains("not a count"));
        assert!(count("0").unwrap_err().to_string().contains("count of 0"));
        assert_eq!(amount("0").unwrap(), 0);
        assert!(
            amount("-1")
                .unwrap_err()
                .to_string()
                .contains("not a count")
        );
        assert!(count("x").unwrap_err().to_string().contains("bad number"));
    }

    #[test]
    fn options() {
        let (o, r) = split_options(&["maxactive=4".into(), "name->f".into(), "x".into()]);
        assert_eq!(o, vec![("maxactive".to_string(), "4".to_string())]);
        assert_eq!(r, vec!["name->f", "x"]);
    }
}
