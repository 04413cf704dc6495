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
        let mut child = Command::new(crate::kdbg_path())
            .arg("--connect")
            .arg(vm.stub_connect_arg())
            .arg("--symbols")
            .arg(crate::kernel_path())
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
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to kdbg");
        stdin.flush().expect("flush");
        let deadline = Instant::now() + REPLY;
        loop {
            let v = self.read(deadline, &format!("no answer to `{line}`"));
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
