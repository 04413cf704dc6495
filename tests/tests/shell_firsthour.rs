//! What a newcomer met in the first hour with the shell, each checked end to
//! end against the reference kernel in QEMU through `--json` on a pipe:
//! one precise error per bad input, `delete` saying what it did and did
//! not do, `info args` refusing a running kernel and giving JSON numbers,
//! `wait stop` on a stopped kernel, unique event sequence numbers, and
//! probes set by someone else (gdb's `monitor`, an earlier session)
//! adopted with their captures and removed by `quit --remove-probes`.

use std::time::Duration;

use serde_json::Value;
use tests::Qemu;
use tests::kdbg::items;

use tests::kdbg::probe_id as id;

type Kdbg = tests::kdbg::KdbgJson;

fn boot() -> Qemu {
    Qemu::boot_serving("")
}

#[test]
fn bad_input_delete_info_args_wait_and_sequence_numbers() {
    let vm = boot();
    let mut k = Kdbg::start(&vm, &["--keep-going"]);
    // The examples `help` gives are accepted by the real kernel.
    for cmd in ["kprobe", "jprobe", "kretprobe"] {
        let h = k.ok(&format!("help {cmd}"), "help");
        let text = h["text"].as_str().unwrap().to_string();
        let mut examples = 0;
        for line in text.lines() {
            let line = line.trim();
            let line = line
                .strip_prefix("Examples:")
                .or_else(|| line.strip_prefix("Example:"))
                .unwrap_or(line)
                .trim();
            if line.starts_with(&format!("{cmd} ")) {
                let set = k.ok(line, "probe_set");
                k.ok(&format!("delete {}", id(&set)), "probes_changed");
                examples += 1;
            }
        }
        assert!(examples > 0, "no example in `help {cmd}`: {text}");
    }
    let j = id(&k.ok("jprobe spawn_task", "probe_set"));
    // Capture jprobes may share a function (README says so).
    let j2 = id(&k.ok("jprobe spawn_task stack_size", "probe_set"));
    assert_ne!(j, j2);
    k.ok(&format!("delete {j2}"), "probes_changed");
    let r = id(&k.ok("kretprobe sys_open path:string", "probe_set"));
    k.ok("wait events 6 timeout 60", "waited");

    // One precise message per bad input.
    let (jt, rt) = (j.to_string(), r.to_string());
    let cases: &[(String, &[&str])] = &[
        ("hist 99".into(), &["no probe #99"]),
        ("hist 99 lat".into(), &["no probe #99"]),
        (format!("hist {r} path"), &["`path`", "not a number"]),
        (format!("hist {j} lat"), &["is a jprobe", "only kretprobes"]),
        ("events -1".into(), &["`-1` is not a count"]),
        ("disas sum8 0".into(), &["count of 0"]),
        (
            "watch -x foo".into(),
            &["`watch` has no flag `-x`", "-r, -a"],
        ),
        ("info args".into(), &["needs the kernel stopped"]),
        ("monitor stream off".into(), &["would stop every event"]),
        (
            format!("delete {rt} 999"),
            &[&format!("deleted #{rt}"), "not #999"],
        ),
    ];
    for (line, want) in cases {
        k.refused(line, want);
    }
    let _ = jt;
    // `p` is not `kprobe` (it may be a command of its own).
    let p = k.run("p");
    if p["ok"] == false {
        let e = p["error"].as_str().unwrap_or_default();
        assert!(!e.contains("kprobe"), "`p` suggests kprobe: {e}");
    }
    // The partially failed delete did delete #r: it is gone everywhere.
    let probes = k.ok("probes", "probes");
    let ids: Vec<u64> = items(&probes, "probes")
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![j], "{probes}");
    // `delete J J` deletes once and says so.
    let d = k.ok(&format!("delete {j} {j}"), "probes_changed");
    assert_eq!(d["ids"], serde_json::json!([j]), "{d}");
    // Events keep flowing: the stream was not turned off.
    k.ok("jprobe fib", "probe_set");
    k.ok("wait events 20 timeout 60", "waited");

    // info args at a stop: values are JSON numbers (strings for strings).
    k.ok("tbreak sys_open", "breakpoint");
    let m = k.mark();
    k.wait_stop(m);
    let a = k.ok("info args", "args");
    let args = a["args"].as_array().expect("args");
    let by = |n: &str| {
        args.iter()
            .find(|x| x["name"] == n)
            .unwrap_or_else(|| panic!("{a}"))
    };
    assert!(by("flags")["value"].is_u64(), "{a}");
    assert!(by("mode")["value"].is_u64(), "{a}");
    assert!(by("path")["value"].is_string(), "{a}");
    assert!(by("path")["text"].as_str().unwrap().contains('"'), "{a}");
    // Already stopped: `wait stop` says so as a `waited` result.
    let w = k.ok("wait stop timeout 1", "waited");
    assert_eq!(w["for"], "stop", "{w}");
    assert_eq!(w["already_stopped"], true, "{w}");
    k.ok("continue", "running");
    k.ok("wait events 20 timeout 60", "waited");

    // Every event has its own sequence number.
    let mut seqs: Vec<u64> = k
        .seen
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "duplicate seq among {n} events");
    assert_eq!(k.finish().code(), Some(1), "the bad inputs fail the batch");
}

#[test]
fn probes_set_elsewhere_are_adopted_with_their_captures_and_removed() {
    let vm = boot();
    // Session 1 sets a probe the way a gdb user would (a raw monitor
    // command with a string fetch), and one of its own; it leaves them.
    let mut k = Kdbg::start(&vm, &[]);
    let m = k.ok("monitor kretprobe sys_open fetch=str64@arg0", "monitor");
    assert!(m["text"].as_str().unwrap().contains("ok id="), "{m}");
    k.ok("jprobe spawn_task", "probe_set");
    k.ok("wait events 6 timeout 60", "waited");
    let opens: Vec<&Value> = k
        .seen
        .iter()
        .filter(|v| v["type"] == "event" && v["function"] == "sys_open")
        .collect();
    assert!(!opens.is_empty());
    for ev in &opens {
        assert!(
            ev["args"][0]["value"].is_string(),
            "string fetch not rendered: {ev}"
        );
        assert_eq!(ev["args"][0]["name"], "path", "{ev}");
    }
    assert!(k.finish().success());

    // Session 2 finds both, with their captures, and renders their events.
    let mut k = Kdbg::start(&vm, &[]);
    let p = k.ok("probes", "probes");
    let list = items(&p, "probes");
    assert_eq!(list.len(), 2, "{p}");
    for probe in list {
        let caps = items(probe, "captures");
        assert!(!caps.is_empty(), "adopted probe lost its captures: {probe}");
    }
    let before = k.mark();
    k.ok("wait events 6 timeout 60", "waited");
    let ev = k.seen[before..]
        .iter()
        .find(|v| v["type"] == "event" && v["function"] == "sys_open")
        .cloned();
    if let Some(ev) = ev {
        assert_eq!(ev["args"][0]["name"], "path", "{ev}");
        assert!(ev["args"][0]["value"].is_string(), "{ev}");
    }
    let spawn = k.seen[before..]
        .iter()
        .find(|v| v["type"] == "event" && v["function"] == "spawn_task")
        .cloned()
        .expect("spawn_task events");
    assert_eq!(spawn["args"][0]["name"], "clone_flags", "{spawn}");
    k.ok("quit --remove-probes", "quit");
    assert!(k.finish().success());

    // Session 3: nothing left.
    let mut k = Kdbg::start(&vm, &[]);
    let p = k.ok("probes", "probes");
    assert_eq!(p["probes"], serde_json::json!([]), "{p}");
    assert!(k.finish().success());
}

/// The host's TSC rate, measured over 300 ms (under TCG the guest reads
/// the host's TSC).
fn host_tsc_hz() -> f64 {
    let t0 = std::time::Instant::now();
    // SAFETY: rdtsc has no memory effects; every x86_64 CPU has it.
    let c0 = unsafe { core::arch::x86_64::_rdtsc() };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    let c1 = unsafe { core::arch::x86_64::_rdtsc() };
    (c1 - c0) as f64 / t0.elapsed().as_secs_f64()
}

#[test]
fn timestamps_use_the_kernels_pit_calibrated_rate_across_reconnect() {
    let vm = boot();
    let mut k = Kdbg::start(&vm, &[]);
    let row = |k: &mut Kdbg| {
        let m = k.ok("monitor events", "monitor");
        m["text"]
            .as_str()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    let rate = |row: &str| -> f64 {
        row.split(' ')
            .find_map(|f| f.strip_prefix("tsc_hz="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no tsc_hz: {row}"))
    };
    let first = row(&mut k);
    assert!(first.contains("tsc_src=pit"), "not PIT-calibrated: {first}");
    let hz = rate(&first);
    let host = host_tsc_hz();
    // Within 15%: the kernel calibrates against the PIT over a short
    // window, and on a loaded host (TCG, vCPU threads descheduled) the
    // window stretches (a 6.7% error was seen with 6 builds running). A
    // fixed or uncalibrated rate is off by far more.
    assert!(
        (hz / host - 1.0).abs() < 0.15,
        "kernel says {hz} Hz, the host's TSC runs at {host} Hz"
    );
    // The rate is calibrated once: it does not drift while the kernel runs.
    let j = id(&k.ok("jprobe spawn_task", "probe_set"));
    k.ok("wait events 5 timeout 60", "waited");
    assert_eq!(
        rate(&row(&mut k)),
        hz,
        "the rate changed while the kernel ran"
    );
    let times = |k: &Kdbg| -> Vec<f64> {
        k.events(j)
            .iter()
            .map(|e| e["time"].as_f64().expect("time"))
            .collect()
    };
    let before = times(&k);
    let last = before.iter().cloned().fold(0.0, f64::max);
    // A reconnect keeps the epoch: later events have later times.
    k.ok("reconnect", "message");
    let n = before.len();
    k.ok("wait events 5 timeout 60", "waited");
    let after = times(&k);
    assert!(after.len() > n);
    for t in &after[n..] {
        assert!(*t >= last, "time went back after reconnect: {t} < {last}");
        assert!(
            *t < last + 120.0,
            "time jumped after reconnect: {t} vs {last}"
        );
    }
    assert!(k.finish().success());
}

/// Errors (stderr) and events (stdout) written to one terminal never share
/// a line: each error line is written at once.
#[test]
fn errors_and_events_on_one_stream_keep_their_own_lines() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let vm = boot();
    let log = vm.workdir().expect("workdir").join("mixed.log");
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let mut child = Command::new(tests::kdbg_path())
        .arg("--connect")
        .arg(vm.stub_connect_arg())
        .arg("--symbols")
        .arg(tests::kernel_path())
        .args(["--keep-going", "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("run kdbg");
    let mut script = String::from("jprobe fib\nwait events 50 timeout 60\n");
    for _ in 0..1000 {
        script.push_str("x/2gx 0xzz\n");
    }
    script.push_str("wait events 50 timeout 60\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(1), "the bad lines fail the batch");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut errors = 0;
    let mut events = 0;
    for line in text.lines() {
        if line.contains("] #") {
            assert!(
                line.starts_with('['),
                "an event glued to other text: {line:?}"
            );
            events += 1;
        }
        if line.contains("error:") {
            assert!(
                line.starts_with("<stdin>:"),
                "an error glued to other text: {line:?}"
            );
            assert!(
                !line.contains("] #"),
                "an event inside an error line: {line:?}"
            );
            errors += 1;
        }
    }
    assert_eq!(errors, 1000, "{text}");
    assert!(events >= 100, "{events} events");
}
