//! The kdbg shell end to end: the real `kdbg` binary driven through a
//! batch script on a pipe against the reference kernel in QEMU; events
//! checked against the kernel's ground-truth log (debugcon).

use tests::Qemu;
use tests::kdbg::{arg, items, probe_id, run_batch_file};

type Kdbg = tests::kdbg::KdbgJson;

fn boot() -> Qemu {
    Qemu::boot_serving("kdbg.truth")
}

fn num(s: &str) -> i128 {
    let s = s.split(':').next().unwrap_or(s);
    if let Some(h) = s.strip_prefix("0x") {
        i128::from_str_radix(h, 16).unwrap()
    } else {
        s.parse().unwrap()
    }
}

#[test]
fn jprobe_and_kretprobe_events_match_the_ground_truth() {
    let vm = boot();
    let mut k = Kdbg::start(&vm, &[]);
    let jid = probe_id(&k.ok("jprobe spawn_task", "probe_set"));
    let rid = probe_id(&k.ok("kretprobe sys_open", "probe_set"));
    k.ok("wait events 12 timeout 60", "waited");
    let probes = k.ok("probes", "probes");
    let rows = items(&probes, "probes").to_vec();
    for id in [jid, rid] {
        let row = rows.iter().find(|p| p["id"] == id).expect("probe listed");
        assert!(row["hits"].as_u64().unwrap() > 0, "{row}");
        assert!(row["nmissed"].is_u64(), "{row}");
    }

    // Every spawn_task event equals some ground-truth call.
    let spawn_truth = vm.truth("spawn_task");
    let spawns = k.events(jid);
    assert!(!spawns.is_empty(), "no spawn_task events");
    for ev in &spawns {
        let found = spawn_truth.iter().any(|t| {
            [
                "clone_flags",
                "stack_start",
                "regs",
                "stack_size",
                "parent_tid",
                "child_tid",
            ]
            .iter()
            .all(|n| arg(ev, n).as_u64().map(i128::from) == Some(num(&t[*n])))
        });
        assert!(found, "spawn_task event not in the ground truth: {ev}");
    }
    // Every sys_open return: path, flags, mode and return value.
    let open_truth = vm.truth("sys_open");
    let opens = k.events(rid);
    assert!(!opens.is_empty(), "no sys_open events");
    for ev in &opens {
        let path = arg(ev, "path")
            .as_str()
            .expect("path is a string")
            .to_string();
        let ret = ev["ret"]["value"].as_i64().expect("signed ret");
        let found = open_truth.iter().any(|t| {
            t["path"].ends_with(&format!(":\"{path}\""))
                && num(&t["ret"]) == i128::from(ret)
                && arg(ev, "flags").as_u64().map(i128::from) == Some(num(&t["flags"]))
                && arg(ev, "mode").as_u64().map(i128::from) == Some(num(&t["mode"]))
        });
        assert!(found, "sys_open event not in the ground truth: {ev}");
        if ret == -2 {
            assert_eq!(ev["ret"]["errno"], "ENOENT", "{ev}");
        }
    }

    // delete stops them.
    let d = k.run(&format!("delete {jid} {rid}"));
    assert_eq!(d["ok"], true, "{d}");
    k.run("sleep 1");
    let before = k.run("events 0")["received"].as_u64().unwrap();
    k.run("sleep 2");
    let after = k.run("events 0")["received"].as_u64().unwrap();
    assert_eq!(before, after, "events kept arriving after delete");
    let probes = k.run("probes");
    assert!(
        items(&probes, "probes")
            .iter()
            .all(|p| p["id"] != jid && p["id"] != rid),
        "{probes}"
    );
    assert!(k.finish().success());
}

#[test]
fn batch_file_text_output_and_first_error_stops() {
    let vm = boot();
    let (script, out) = run_batch_file(
        &vm,
        "script.kdbg",
        "# a comment\nkretprobe sys_open\nwait events 2 timeout 60\nprobes\nkprobe no_such_function_xyz\nprobes\n",
    );
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("sys_open(path=\""), "{stdout}");
    assert!(stdout.contains("= "), "{stdout}");
    assert!(stdout.contains("NMISSED"), "{stdout}");
    let err_line = format!(
        "{}:5: error: unknown symbol `no_such_function_xyz`",
        script.display()
    );
    assert!(stderr.contains(&err_line), "{stderr}");
    // The run stopped at line 5: one `probes` table only.
    assert_eq!(stdout.matches("NMISSED").count(), 1, "{stdout}");
}
