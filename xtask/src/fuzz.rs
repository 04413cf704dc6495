//! `cargo xtask fuzz`: the stub's protocol fuzzer (tests/src/fuzz.rs) with
//! a chosen seed and budget, or the replay of a saved failing input. It
//! builds the kernel and runs the suite's fuzz test with `KDBG_FUZZ_*` set.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

pub fn command(args: &[String]) -> Result<ExitCode> {
    let mut envs: Vec<(&str, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let (name, var) = match args[i].as_str() {
            "--seed" => ("--seed", "KDBG_FUZZ_SEED"),
            "--inputs" => ("--inputs", "KDBG_FUZZ_INPUTS"),
            "--reconnects" => ("--reconnects", "KDBG_FUZZ_RECONNECTS"),
            "--replay" => ("--replay", "KDBG_FUZZ_REPLAY"),
            other => bail!("unexpected argument `{other}`\n{}", crate::USAGE),
        };
        let value = crate::option_value(args, &mut i, name)?;
        if var == "KDBG_FUZZ_REPLAY" {
            let path = std::path::Path::new(value);
            if !path.is_file() {
                bail!("{name}: no file {value}");
            }
            let abs = path.canonicalize().context("the replay file")?;
            envs.push((var, abs.display().to_string()));
        } else {
            let n: u64 = value
                .parse()
                .ok()
                .with_context(|| format!("{name} needs a number, not `{value}`"))?;
            envs.push((var, n.to_string()));
        }
        i += 1;
    }
    let kernel = crate::build::kernel()?;
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(crate::build::root())
        .args([
            "test",
            "-p",
            "tests",
            "--test",
            "stub_fuzz",
            "--",
            "--nocapture",
        ])
        .env("KDBG_KERNEL", &kernel);
    for (k, v) in &envs {
        cmd.env(k, v);
    }
    let status = cmd.status().context("running the fuzz test")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
