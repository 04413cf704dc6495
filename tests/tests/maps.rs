//! Maps and aggregations computed in the kernel (`kretprobe sys_open count
//! by path:string`, `kprobe fib hist n`, ...), against the kernel's ground
//! truth (`kdbg.truth` on debugcon): the real kernel in QEMU, the real
//! `kdbg` binary in `--json` mode.
//!
//! Windows are exact: the kernel is stopped only where the workers that
//! call the probed functions are asleep (between calls, after their truth
//! line), so every call in the window is whole in both the map and the log.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tests::Qemu;

type Kdbg = tests::kdbg::KdbgJson;

fn boot() -> Qemu {
    Qemu::boot_serving("kdbg.truth")
}

/// Stops the kernel where none of `workers` is inside a call (all of them
/// sleep between calls): retries a few times.
fn stop_quiet(k: &mut Kdbg, workers: &[&str]) {
    for _ in 0..40 {
        k.ok("interrupt", "stopped");
        let tasks = k.ok("monitor tasks", "monitor");
        let text = tasks["text"].as_str().unwrap_or_default().to_string();
        let quiet = workers.iter().all(|w| {
            text.lines()
                .any(|l| l.contains(&format!(" name={w} ")) && l.contains(" state=sleeping"))
        });
        if quiet {
            return;
        }
        k.ok("continue", "running");
        std::thread::sleep(Duration::from_millis(37));
    }
    panic!("the kernel never stopped with {workers:?} asleep");
}

fn map(k: &mut Kdbg, id: u64) -> Value {
    let v = k.ok(&format!("print @{id}"), "map");
    v["map"].clone()
}

fn rows(m: &Value) -> &[Value] {
    m["rows"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Calls of fib(k) made by one call of fib(n), per k.
fn fib_calls(n: u64, out: &mut BTreeMap<u64, u64>) {
    *out.entry(n).or_default() += 1;
    if n >= 2 {
        fib_calls(n - 1, out);
        fib_calls(n - 2, out);
    }
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).expect("hex")
}

fn probe_row(k: &mut Kdbg, id: u64) -> Value {
    let probes = k.ok("probes", "probes");
    probes["probes"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == id))
        .cloned()
        .expect("probe listed")
}

#[test]
fn count_by_path_hist_and_lhist_equal_the_truth() {
    let vm = boot();
    let mut k = Kdbg::start(&vm, &["--keep-going"]);
    let quiet = ["open-worker", "math-worker", "fork-worker"];
    stop_quiet(&mut k, &quiet);
    let opens0 = vm.truth("sys_open").len();
    let fibs0 = vm.truth("fib").len();
    let spawns0 = vm.truth("spawn_task").len();
    let by_path =
        tests::kdbg::probe_id(&k.ok("kretprobe sys_open count by path:string", "probe_set"));
    let hist = tests::kdbg::probe_id(&k.ok("kprobe fib hist n", "probe_set"));
    let lhist = tests::kdbg::probe_id(&k.ok("kprobe fib lhist n 0 10 2", "probe_set"));
    let failing =
        tests::kdbg::probe_id(&k.ok("kretprobe sys_open stats ret if ret < 0", "probe_set"));
    let by_task =
        tests::kdbg::probe_id(&k.ok("jprobe spawn_task sum stack_size by $task", "probe_set"));
    let events0 = k.seen.iter().filter(|v| v["type"] == "event").count();
    k.ok("continue", "running");
    std::thread::sleep(Duration::from_secs(3));
    stop_quiet(&mut k, &quiet);

    // count by path == the truth's opens per path in the window.
    let opens = vm.truth("sys_open");
    let window = &opens[opens0..];
    assert!(window.len() > 20, "{} opens in 3 s", window.len());
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for t in window {
        let path = t["path"].split_once(':').map(|x| x.1).unwrap_or_default();
        *want.entry(path.trim_matches('"').to_string()).or_default() += 1;
    }
    let m = map(&mut k, by_path);
    assert_eq!(m["func"], "count", "{m}");
    assert_eq!(m["map_full"], 0, "{m}");
    let got: BTreeMap<String, u64> = rows(&m)
        .iter()
        .map(|r| {
            (
                r["key"][0].as_str().expect("string key").to_string(),
                r["count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(got, want, "count by path vs the truth: {m}");
    // Sorted: largest count first.
    let counts: Vec<u64> = rows(&m)
        .iter()
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

    // stats of failing opens: count, min, max, sum.
    let m = map(&mut k, failing);
    let rets: Vec<i64> = window
        .iter()
        .map(|t| t["ret"].parse::<i64>().expect("ret"))
        .filter(|r| *r < 0)
        .collect();
    let r = &rows(&m)[0];
    assert_eq!(r["count"].as_u64(), Some(rets.len() as u64), "{m}");
    assert_eq!(r["sum"].as_i64(), Some(rets.iter().sum::<i64>()), "{m}");
    assert_eq!(r["min"].as_i64(), rets.iter().min().copied(), "{m}");
    assert_eq!(r["max"].as_i64(), rets.iter().max().copied(), "{m}");

    // sum of spawn_task's stack_size by task: one task (the fork worker)
    // and the truth's sum.
    let spawns = &vm.truth("spawn_task")[spawns0..];
    let m = map(&mut k, by_task);
    let r = &rows(&m)[0];
    assert_eq!(rows(&m).len(), 1, "{m}");
    assert!(
        r["key_text"]
            .as_str()
            .unwrap_or_default()
            .contains("fork-worker"),
        "{m}"
    );
    assert_eq!(r["count"].as_u64(), Some(spawns.len() as u64), "{m}");
    assert_eq!(
        r["sum"].as_i64(),
        Some(
            spawns
                .iter()
                .map(|t| hex(&t["stack_size"]) as i64)
                .sum::<i64>()
        ),
        "{m}"
    );

    // hist of fib's n == the truth's distribution of every fib call.
    let fibs = vm.truth("fib");
    let mut calls = BTreeMap::new();
    for t in &fibs[fibs0..] {
        fib_calls(hex(&t["n"]), &mut calls);
    }
    let mut want_hist: BTreeMap<i64, u64> = BTreeMap::new();
    let mut want_lhist: BTreeMap<i64, u64> = BTreeMap::new();
    for (n, c) in &calls {
        let bits = 64 - n.leading_zeros() as i64;
        *want_hist.entry(bits).or_default() += c;
        *want_lhist
            .entry(if *n >= 10 { 99 } else { *n as i64 / 2 })
            .or_default() += c;
    }
    let m = map(&mut k, hist);
    let buckets = rows(&m)[0]["buckets"].as_array().expect("buckets").clone();
    let mut got_hist = BTreeMap::new();
    for b in &buckets {
        let low = b["low"].as_i64().expect("low");
        let bits = if low == 0 {
            0
        } else {
            64 - (low as u64).leading_zeros() as i64
        };
        if b["count"].as_u64() != Some(0) {
            got_hist.insert(bits, b["count"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(got_hist, want_hist, "hist n vs the truth: {m}");
    let m = map(&mut k, lhist);
    let mut got_lhist = BTreeMap::new();
    for b in rows(&m)[0]["buckets"].as_array().expect("buckets") {
        let low = b["low"].as_i64().expect("low");
        let key = if low >= 10 { 99 } else { low / 2 };
        if b["count"].as_u64() != Some(0) {
            got_lhist.insert(key, b["count"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(got_lhist, want_lhist, "lhist n 0 10 2 vs the truth: {m}");

    // Aggregating probes send no events.
    let events = k.seen.iter().filter(|v| v["type"] == "event").count();
    assert_eq!(events, events0, "an aggregating probe sent events");

    // maps lists all four; zero keeps keys, clear removes them.
    let maps = k.ok("maps", "maps");
    assert_eq!(maps["maps"].as_array().map(Vec::len), Some(5), "{maps}");
    k.ok(&format!("zero @{by_path}"), "message");
    let m = map(&mut k, by_path);
    assert!(
        !rows(&m).is_empty() && rows(&m).iter().all(|r| r["count"] == 0),
        "{m}"
    );
    k.ok(&format!("clear @{by_path}"), "message");
    let m = map(&mut k, by_path);
    assert!(rows(&m).is_empty(), "{m}");
    assert_eq!(m["entries"], 0, "{m}");

    // A tiny budget: one entry; every other insert is counted as map_full.
    k.ok(&format!("delete {by_path} {failing}"), "probes_changed");
    let tiny = tests::kdbg::probe_id(&k.ok(
        "kretprobe sys_open count by path:string budget=100",
        "probe_set",
    ));
    k.ok("continue", "running");
    std::thread::sleep(Duration::from_secs(1));
    stop_quiet(&mut k, &["open-worker"]);
    let m = map(&mut k, tiny);
    assert_eq!(m["capacity"], 1, "{m}");
    assert_eq!(m["entries"], 1, "{m}");
    let full = m["map_full"].as_u64().expect("map_full");
    assert!(full > 0, "no insert was refused: {m}");
    let row = probe_row(&mut k, tiny);
    let hits = row["hits"].as_u64().expect("hits");
    assert_eq!(
        rows(&m)[0]["count"].as_u64().unwrap_or(0) + full,
        hits,
        "every hit is counted or refused: {m} {row}"
    );

    // Bad input: one clear error each, nothing set.
    let before = k.ok("probes", "probes")["probes"].as_array().map(Vec::len);
    k.refused(
        "kretprobe sys_open median ret",
        &["unknown aggregation function"],
    );
    k.refused(
        "kprobe fib mean n",
        &["unknown aggregation function `mean`"],
    );
    k.refused(
        "kretprobe sys_open count by path:string, path:string",
        &["key too large"],
    );
    k.refused(
        "kretprobe sys_open count by path:string0",
        &["bound is 1..=64"],
    );
    k.refused(
        "kretprobe sys_open count budget=99999999",
        &["budget too large"],
    );
    k.refused("kretprobe sys_open sum", &["sum needs a value"]);
    k.refused("kprobe fib lhist n 10 0 1", &["MIN < MAX"]);
    k.refused("kprobe fib count by nosuch", &["no symbol 'nosuch'"]);
    k.refused("print @99", &["no probe with that id"]);
    // A string key without a bound on the wire (gdb's `monitor`).
    let v = k.ok(
        "monitor kretprobe sys_open agg=count key=str:050500",
        "monitor",
    );
    let text = v["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("error code=bad-arguments") && text.contains("string key needs a bound"),
        "{v}"
    );
    let after = k.ok("probes", "probes")["probes"].as_array().map(Vec::len);
    assert_eq!(before, after, "a refused command set a probe");
    k.ok("continue", "running");
    k.finish();
}

#[test]
fn recursive_kretprobe_fib_count_by_n_loses_nothing() {
    let vm = boot();
    let mut k = Kdbg::start(&vm, &["--keep-going"]);
    stop_quiet(&mut k, &["math-worker"]);
    let fibs0 = vm.truth("fib").len();
    let id = tests::kdbg::probe_id(&k.ok("kretprobe fib count by n", "probe_set"));
    k.ok("continue", "running");
    std::thread::sleep(Duration::from_secs(10));
    stop_quiet(&mut k, &["math-worker"]);
    let row = probe_row(&mut k, id);
    assert_eq!(row["nmissed"], 0, "{row}");
    let ring = k.ok("events 0", "events");
    assert_eq!(ring["ring"]["dropped"], 0, "{ring}");
    assert_eq!(
        ring["ring"]["produced"], 0,
        "an aggregating probe produced events: {ring}"
    );
    let fibs = vm.truth("fib");
    let mut want = BTreeMap::new();
    for t in &fibs[fibs0..] {
        fib_calls(hex(&t["n"]), &mut want);
    }
    let m = map(&mut k, id);
    let got: BTreeMap<u64, u64> = rows(&m)
        .iter()
        .map(|r| {
            (
                r["key"][0].as_u64().expect("int key"),
                r["count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(got, want, "count by n vs the truth: {m}");
    let total: u64 = got.values().sum();
    assert_eq!(total, row["hits"].as_u64().unwrap_or(0), "{row}");
    assert!(total > 10_000, "only {total} fib calls in 10 s");

    // `interval S print @ID` prints the map while the kernel runs; `quit`
    // prints every map.
    k.ok("continue", "running");
    k.ok(&format!("interval 0.5 print @{id}"), "message");
    for _ in 0..2 {
        let v = k.wait_for("an interval print", |v| {
            v["type"] == "map" && v["command"] == "interval"
        });
        assert_eq!(v["map"]["name"], format!("@{id}"), "{v}");
        assert!(!rows(&v["map"]).is_empty(), "{v}");
    }
    let v = k.run("interval off");
    if v["type"] != "message" {
        k.wait_for("interval off", |v| v["type"] == "message");
    }
    let mark = k.mark();
    // The map object comes before the quit result (run returns the first).
    let v = k.run("quit");
    if v["type"] != "map" {
        k.wait_for("the map printed at quit", |v| {
            v["type"] == "map" && v["command"] == "quit"
        });
    }
    let at_quit: Vec<&Value> = k.seen[mark..]
        .iter()
        .filter(|v| v["type"] == "map" && v["command"] == "quit")
        .collect();
    assert_eq!(at_quit.len(), 1, "{at_quit:?}");
    assert!(rows(&at_quit[0]["map"]).len() >= 10, "{}", at_quit[0]);
    k.finish();
}

/// A stock gdb sets an aggregating probe with `monitor` (the compiled form)
/// and reads its map back: the wire rows, no kdbg in between.
#[test]
fn stock_gdb_sets_and_reads_a_map() {
    let mut vm = boot();
    let addr = vm
        .wait_for_stub_port(Duration::from_secs(60))
        .expect("stub port");
    let kernel = vm.config().kernel.clone();
    // count by n at fib's entry: the key program is `reg 5 (rdi); end`.
    let out = tests::gdb::batch(
        &kernel,
        addr,
        &[],
        &["monitor kprobe fib agg=count key=050500", "detach"],
    );
    let id: u32 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("ok id="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no probe id:\n{out}"));
    std::thread::sleep(Duration::from_secs(2));
    let out = tests::gdb::batch(
        &kernel,
        addr,
        &[],
        &[
            "monitor maps",
            &format!("monitor map print {id}"),
            "monitor kprobe fib agg=median",
            "detach",
        ],
    );
    let row = out
        .lines()
        .find_map(proto::agg::MapRow::parse)
        .unwrap_or_else(|| panic!("no map row:\n{out}"));
    assert_eq!(row.id, id, "{out}");
    assert_eq!(row.keys, "int", "{out}");
    let entries: Vec<proto::agg::EntryRow<'_>> = out
        .lines()
        .filter_map(proto::agg::EntryRow::parse)
        .collect();
    assert_eq!(entries.len() as u64, row.entries, "{out}");
    assert!(entries.len() >= 10, "fib(0..12) gives a key per n:\n{out}");
    assert!(entries.iter().all(|e| e.stats.count > 0), "{out}");
    assert!(
        out.contains("error code=bad-arguments msg=unknown aggregation function"),
        "{out}"
    );
}
