//! The real `kdbg` binary in `--json` mode on a pipe, for end-to-end tests:
//! send one command line, read its result object; events and stop notices
//! that arrive in between are kept in [`KdbgJson::seen`].

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Qemu;

/// How long one command may take to answer.
pub const REPLY: Duration = Duration::from_secs(60);

/// A `kdbg --connect ... --json` attached to `vm`'s stub.
pub struct KdbgJson {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every object read so far, in order (results, events, notices).
    pub seen: Vec<Value>,
}

impl KdbgJson {
    /// Starts kdbg on `vm` with `--json --timeout 20` and `extra` arguments
    /// (e.g. `--keep-going`).
    pub fn start(vm: &Qemu, extra: &[&str]) -> KdbgJson {
        // A kernel booted with shared RAM is read through the mapping.
        let mem = vm.memory_file().map(|f| f.display().to_string());
        let mut args: Vec<&str> = Vec::new();
        if let Some(m) = &mem {
            args.extend(["--memory", m.as_str()]);
        }
        args.extend_from_slice(extra);
        KdbgJson::start_on(&vm.stub_connect_arg(), &args)
    }

    /// Starts kdbg on an endpoint (`tcp:127.0.0.1:PORT`) that may outlive
    /// one QEMU (a reconnect to a rebooted kernel on the same port).
    pub fn start_on(connect: &str, extra: &[&str]) -> KdbgJson {
        KdbgJson::start_with(connect, &crate::kernel_path(), extra)
    }

    /// Starts kdbg on an endpoint with another symbol file (a Linux
    /// vmlinux under QEMU's gdbstub).
    pub fn start_with(connect: &str, symbols: &std::path::Path, extra: &[&str]) -> KdbgJson {
        let mut child = Command::new(crate::kdbg_path())
            .arg("--connect")
            .arg(connect)
            .arg("--symbols")
            .arg(symbols)
            .args(["--json", "--timeout", "20"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", crate::kdbg_path().display()));
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        KdbgJson {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The next object kdbg prints, recorded in `seen`.
    fn read(&mut self, deadline: Instant, what: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = self
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{what}: nothing from kdbg within {REPLY:?}"));
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        self.seen.push(v.clone());
        v
    }

    /// Runs one command; returns its result object (ok or error). The stop
    /// notice (`"command": "stop"`) and the summary shown at attach
    /// (`"command": "attach"`) are not results.
    pub fn run(&mut self, line: &str) -> Value {
        self.run_within(line, REPLY)
    }

    /// [`KdbgJson::run`] with its own limit (a first query that indexes
    /// a large ELF, such as a vmlinux's globals, in a debug build).
    pub fn run_within(&mut self, line: &str, limit: Duration) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to kdbg");
        stdin.flush().expect("flush");
        let deadline = Instant::now() + limit;
        loop {
            let v = self.read(deadline, &format!("no answer to `{line}`"));
            if v.get("command").is_some() && v["command"] != "stop" && v["command"] != "attach" {
                return v;
            }
        }
    }

    /// Sends `line`, then after `after` a SIGINT to kdbg (what Ctrl-C sends
    /// it), and returns the command's result.
    pub fn interrupt_during(&mut self, line: &str, after: Duration) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to kdbg");
        stdin.flush().expect("flush");
        std::thread::sleep(after);
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: a signal to our own child process (not yet reaped).
        let sent = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(sent, 0, "SIGINT to kdbg");
        let deadline = Instant::now() + REPLY;
        loop {
            let v = self.read(deadline, &format!("no answer to the interrupted `{line}`"));
            if v.get("command").is_some() && v["command"] != "stop" && v["command"] != "attach" {
                return v;
            }
        }
    }

    /// Runs a command that must succeed with a result of type `kind`.
    pub fn ok(&mut self, line: &str, kind: &str) -> Value {
        let v = self.run(line);
        assert_eq!(v["ok"], true, "`{line}` failed: {v}");
        assert_eq!(v["type"], kind, "`{line}`: {v}");
        v
    }

    /// Runs a command that must fail; its error must contain every one of
    /// `want`. Returns the error text.
    pub fn refused(&mut self, line: &str, want: &[&str]) -> String {
        let v = self.run(line);
        assert_eq!(v["ok"], false, "`{line}` was accepted: {v}");
        let e = v["error"].as_str().unwrap_or_default().to_string();
        for w in want {
            assert!(e.contains(w), "`{line}`: error `{e}` lacks `{w}`");
        }
        e
    }

    /// Reads until an object satisfying `want` arrives (a notice, an
    /// event); returns it.
    pub fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + REPLY;
        loop {
            let v = self.read(deadline, &format!("no {what}"));
            if want(&v) {
                return v;
            }
        }
    }

    /// Where the next objects will be recorded in `seen`.
    pub fn mark(&self) -> usize {
        self.seen.len()
    }

    /// `wait stop`, then the stop notice that arrived after `mark` (it may
    /// be printed just after the `wait` result).
    pub fn wait_stop(&mut self, mark: usize) -> Value {
        self.ok("wait stop timeout 30", "waited");
        let deadline = Instant::now() + REPLY;
        loop {
            if let Some(v) = self
                .seen
                .get(mark..)
                .unwrap_or_default()
                .iter()
                .find(|v| v["type"] == "stopped" && v["command"] == "stop")
            {
                return v.clone();
            }
            self.read(deadline, "`wait stop` returned but no stop notice came");
        }
    }

    /// The events of probe `probe` seen so far.
    pub fn events(&self, probe: u64) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|v| v["type"] == "event" && v["probe"] == probe)
            .collect()
    }

    /// Kills kdbg with SIGKILL (no cleanup of any kind) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Reads objects for `dur` (events, notices) into [`KdbgJson::seen`].
    pub fn collect_for(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                self.seen.push(v);
            }
        }
    }

    /// Closes kdbg's stdin (the script ends) and waits for it to exit.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kdbg did not exit after its script ended");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The id in a `probe_set` result.
pub fn probe_id(v: &Value) -> u64 {
    v["probe"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no probe id: {v}"))
}

/// What one kdbg run printed.
pub struct Output {
    /// The exit status (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The lines of stderr that are errors, in order.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains("error:"))
            .collect()
    }
}

/// Runs kdbg with `args`, `script` on its stdin (a batch), to the end.
pub fn run_batch(args: &[String], script: &str) -> Output {
    let mut child = Command::new(crate::kdbg_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", crate::kdbg_path().display()));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .expect("write the script");
    }
    let out = child.wait_with_output().expect("kdbg output");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `script` to `name` in `vm`'s work directory and runs `kdbg
/// --connect VM --symbols KERNEL --batch FILE` to the end; returns the file
/// (error lines name it) and what kdbg printed.
pub fn run_batch_file(vm: &Qemu, name: &str, script: &str) -> (std::path::PathBuf, Output) {
    let file = vm.workdir().expect("workdir").join(name);
    std::fs::write(&file, script).expect("write the script");
    let out = Command::new(crate::kdbg_path())
        .arg("--connect")
        .arg(vm.stub_connect_arg())
        .arg("--symbols")
        .arg(crate::kernel_path())
        .arg("--batch")
        .arg(&file)
        .output()
        .expect("run kdbg");
    let out = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (file, out)
}

/// The value of argument `name` of an event object; panics naming the event
/// when it has none.
pub fn arg<'a>(ev: &'a Value, name: &str) -> &'a Value {
    ev["args"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .map(|x| &x["value"])
        .unwrap_or_else(|| panic!("event has no argument `{name}`: {ev}"))
}

/// The array under `key` of a result (`frames` of a backtrace, `probes`,
/// `lines` of a disassembly); panics naming the result when it is not one.
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no `{key}` array in {v}"))
}

/// True if a backtrace result has a frame whose function contains `name`.
pub fn bt_has(bt: &Value, name: &str) -> bool {
    items(bt, "frames")
        .iter()
        .any(|f| f["function"].as_str().is_some_and(|n| n.contains(name)))
}
