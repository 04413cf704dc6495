//! The kdbg shell as a front-end to a real Linux kernel under QEMU's own
//! gdbstub (Debian's current cloud kernel, its -dbg vmlinux, a busybox
//! initramfs whose workload opens files and forks: see `tests::linux`).
//! One boot serves every check, in order:
//! - 50 connect/disconnect cycles, each reading `linux_banner` from the
//!   guest and comparing it with the vmlinux's bytes (a reply paired with
//!   the wrong request shows up as a mismatch); the guest runs after each;
//! - `regs -v` against QEMU's HMP `info registers` (gs_base, cr3, efer:
//!   the register layout comes from QEMU's target description);
//! - a breakpoint on `do_sys_openat2`: `info args` shows the filename
//!   string, `bt` reaches `do_syscall_64` and `entry_SYSCALL_64`, its
//!   paths are `fs/open.c` (build directory stripped; `set substitute-path`);
//! - kdbg-only features are refused plainly on this stub;
//! - `lx tasks` lists swapper/0, init (pid 1) and kthreadd (pid 2) with
//!   the comm gdb reads from the same structures, `lx current` is the
//!   process that called openat (`$lx_current` set), `lx dmesg` has the
//!   banner, `lx lsmod` is empty (no modules in this initramfs);
//! - after a stock gdb session (which turns QEMU's multiprocess thread ids
//!   on), `quit` still leaves the guest running (`D;1`, checked).
//!
//! - a second boot with KASLR: `lx kaslr` finds a 2 MiB-aligned slide,
//!   `lx tasks` starts at init_task + slide and has kthreadd; the symbols
//!   move by the slide: `info symbol`, `break do_sys_openat2` (stops there,
//!   `fs/open.c`), `info args`, `bt`, `print` of globals (a per-CPU one
//!   not slid), each checked against gdb with `symbol-file -o SLIDE`.
//!
//! The first run downloads ~310 MB of Debian packages into target/linux.

use std::process::Command;
use std::time::Duration;

use object::{Object, ObjectSection, ObjectSymbol};
use serde_json::Value;
use tests::kdbg::KdbgJson;
use tests::linux::{LinuxVm, prepare};

fn elf_bytes(vmlinux: &std::path::Path, name: &str, len: usize) -> (u64, Vec<u8>) {
    let data = std::fs::read(vmlinux).expect("read vmlinux");
    let elf = object::File::parse(&*data).expect("parse vmlinux");
    let sym = elf
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no {name} in vmlinux"));
    let sec = elf
        .section_by_index(sym.section_index().expect("section"))
        .expect("section");
    let off = (sym.address() - sec.address()) as usize;
    let bytes = sec.data().expect("data")[off..off + len].to_vec();
    (sym.address(), bytes)
}

fn hex(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().expect("u64"),
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex"),
        _ => panic!("not a number: {v}"),
    }
}

fn memory(v: &Value) -> Vec<u8> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| r["values"].as_array().expect("values").iter())
        .map(|b| hex(b) as u8)
        .collect()
}

/// A register's value from HMP `info registers` (`GS =0000 BASE ...`,
/// `CR3=...`, `EFER=...`).
fn hmp_reg(text: &str, name: &str) -> u64 {
    for l in text.lines() {
        if name == "gs_base" && l.starts_with("GS =") {
            let base = l.split_whitespace().nth(2).expect("GS base");
            return u64::from_str_radix(base, 16).expect("hex");
        }
        for kv in l.split_whitespace() {
            if let Some(v) = kv.strip_prefix(&format!("{}=", name.to_uppercase())) {
                return u64::from_str_radix(v, 16).expect("hex");
            }
        }
    }
    panic!("{name} not in HMP info registers:\n{text}")
}

/// gdb's container_of over `init_task.tasks`: the first and second task.
const FIRST: &str = "((struct task_struct *)((char *)init_task.tasks.next - (unsigned long)&((struct task_struct *)0)->tasks))";
const SECOND: &str = "((struct task_struct *)((char *)init_task.tasks.next->next - (unsigned long)&((struct task_struct *)0)->tasks))";

fn status(vm: &LinuxVm) -> String {
    vm.hmp("info status").expect("HMP info status")
}

#[test]
fn kdbg_on_linux_under_qemus_gdbstub() {
    let t = std::time::Instant::now();
    let img = prepare().expect("prepare Linux (apt-get download; needs Debian's package lists)");
    let vm = LinuxVm::boot(&img, false).expect("boot Linux");
    vm.wait_console("kdbg-linux: init up", Duration::from_secs(240))
        .expect("init");
    eprintln!(
        "linux: prepared and booted in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    let connect = format!("tcp:127.0.0.1:{}", vm.port);
    let (_, banner) = elf_bytes(&img.vmlinux, "linux_banner", 48);
    assert!(banner.starts_with(b"Linux version "), "{banner:?}");

    // 50 attach/read/detach cycles.
    for i in 0..50 {
        let mut k = KdbgJson::start_with(&connect, &img.vmlinux, &["--stopped"]);
        let x = k.ok("x/48bx linux_banner", "memory");
        assert_eq!(memory(&x), banner, "cycle {i}: linux_banner differs: {x}");
        k.ok("quit", "quit");
        assert!(k.finish().success(), "cycle {i}");
        assert!(
            status(&vm).contains("running"),
            "cycle {i}: guest not running after quit: {}",
            status(&vm)
        );
    }

    eprintln!("linux: 50 cycles in {:.1}s", t.elapsed().as_secs_f64());

    // regs -v equals QEMU's own view.
    let mut k = KdbgJson::start_with(&connect, &img.vmlinux, &["--keep-going"]);
    k.ok("interrupt", "stopped");
    let r = k.ok("regs -v", "regs");
    let hmp = vm.hmp("info registers").expect("HMP info registers");
    let sys = |n: &str| -> u64 {
        r["regs"]["system"]
            .as_array()
            .expect("system registers")
            .iter()
            .find(|p| p[0] == n)
            .map(|p| hex(&p[1]))
            .unwrap_or_else(|| panic!("no {n} in regs -v: {r}"))
    };
    assert_eq!(
        hex(&r["regs"]["gs_base"]),
        hmp_reg(&hmp, "gs_base"),
        "{r}\n{hmp}"
    );
    assert_ne!(hex(&r["regs"]["gs_base"]), 0, "{r}");
    assert_eq!(sys("cr3"), hmp_reg(&hmp, "cr3"), "{r}\n{hmp}");
    assert_eq!(sys("efer"), hmp_reg(&hmp, "efer"), "{r}\n{hmp}");
    assert_eq!(hex(&r["regs"]["rip"]), hmp_reg(&hmp, "rip"), "{r}\n{hmp}");

    // kdbg-only features: one plain refusal.
    let p = k.run("kprobe do_sys_openat2");
    assert_eq!(p["ok"], false, "{p}");
    assert!(p["error"].as_str().unwrap().contains("not kdbg's"), "{p}");

    // A breakpoint in the open path: the filename, the syscall entry.
    k.ok("break do_sys_openat2", "breakpoint");
    let m = k.mark();
    k.ok("continue", "running");
    // Requests while QEMU's guest runs are refused, not sent.
    let x = k.run("x/8bx linux_banner");
    assert_eq!(x["ok"], false, "{x}");
    let st = k.wait_stop(m);
    assert!(
        st["stop"]["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("do_sys_openat2")),
        "{st}"
    );
    let a = k.ok("info args", "args");
    let args = a["args"].as_array().expect("args");
    let filename = args
        .iter()
        .find(|v| v["name"] == "filename")
        .unwrap_or_else(|| panic!("no filename: {a}"));
    let text = filename.to_string();
    assert!(
        text.contains("\\\"/"),
        "the filename string is not shown: {a}"
    );
    let bt = k.ok("bt", "backtrace");
    let names: Vec<&str> = bt["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(names.contains(&"do_syscall_64"), "{names:?}");
    // The assembly entry is named from its sized symbol, not hidden by the
    // size-0 label `entry_SYSCALL_64_after_hwframe` before the address.
    assert!(
        names.iter().any(|n| n.starts_with("entry_SYSCALL_64+")),
        "{names:?}"
    );
    // Linux awareness from the vmlinux's DWARF, at this stop.
    let t = k.ok("lx tasks", "linux");
    let tasks = t["lx"]["tasks"].as_array().expect("tasks").clone();
    let task = |pid: i64| -> Value {
        tasks
            .iter()
            .find(|t| t["pid"] == pid)
            .cloned()
            .unwrap_or_else(|| panic!("no pid {pid} in lx tasks: {t}"))
    };
    assert_eq!(task(0)["comm"], "swapper/0", "{t}");
    assert_eq!(task(1)["kthread"], false, "{t}");
    assert_eq!(task(2)["comm"], "kthreadd", "{t}");
    assert_eq!(task(2)["kthread"], true, "{t}");
    let init_comm = task(1)["comm"].as_str().unwrap().to_string();
    let c = k.ok("lx current", "linux");
    let cpu0 = &c["lx"]["cpus"][0];
    assert_eq!(cpu0["this_cpu"], true, "{c}");
    // The task that called openat: a user process of the list.
    let cur = &cpu0["task"];
    assert!(cur["pid"].as_i64().unwrap() > 0, "{c}");
    assert_eq!(
        task(cur["pid"].as_i64().unwrap())["comm"],
        cur["comm"],
        "{c}"
    );
    let p = k.ok("print $lx_current->pid", "value");
    assert_eq!(p["value"]["text"], cur["pid"].to_string(), "{p}");
    let d = k.ok("lx dmesg", "linux");
    let recs = d["lx"]["records"].as_array().expect("records");
    assert!(
        recs.iter().any(|r| r["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Linux version 6."))),
        "no banner in lx dmesg: {:?}",
        &recs[..recs.len().min(5)]
    );
    // The kernel's own log: a line the console printed, and one of
    // KERN_INFO that loglevel=6 kept off the console.
    let console = vm.console_text();
    let shown: Vec<&str> = recs.iter().filter_map(|r| r["text"].as_str()).collect();
    let cmdline = console
        .lines()
        .find_map(|l| {
            l.split_once("] Kernel command line: ")
                .map(|(_, c)| c.trim())
        })
        .expect("command line on the console");
    assert!(
        shown.contains(&format!("Kernel command line: {cmdline}").as_str()),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|t| t.contains("Run /init as init process")),
        "{shown:?}"
    );
    // A C global declared `extern` in a header (its definition DIE names
    // the declaration by DW_AT_specification) has its name and type.
    // (The first global lookup indexes the vmlinux: ~20 s CPU in a debug
    // build.)
    let p = k.run_within("print init_task.comm", Duration::from_secs(400));
    assert_eq!(p["ok"], true, "{p}");
    assert!(
        p["value"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("\"swapper/0")),
        "{p}"
    );
    // A cloud kernel with a busybox initramfs loads no modules.
    let m = k.ok("lx lsmod", "linux");
    assert_eq!(m["lx"]["modules"], serde_json::json!([]), "{m}");
    // Source paths read as in the source tree: the Debian build directory
    // is stripped automatically; `set substitute-path` maps them further.
    let src: Vec<&str> = bt["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["source"].as_str())
        .collect();
    assert!(src.iter().any(|s| s.starts_with("fs/open.c:")), "{bt}");
    assert!(
        !src.iter()
            .any(|s| s.contains("debian/build") || s.starts_with("/build/")),
        "{bt}"
    );
    assert!(
        src.iter()
            .any(|s| s.starts_with("arch/x86/entry/entry_64.S:")),
        "{bt}"
    );
    k.ok("set substitute-path fs /src/linux/fs", "message");
    let l = k.ok("info line do_sys_openat2", "lines");
    assert!(
        l.to_string().contains("/src/linux/fs/open.c"),
        "substitute-path not applied: {l}"
    );
    let rules = k.ok("set substitute-path fs", "message");
    assert!(
        rules["text"].as_str().unwrap().contains("(automatic"),
        "{rules}"
    );
    let l = k.ok("info line do_sys_openat2", "lines");
    assert!(l.to_string().contains("\"fs/open.c"), "{l}");
    k.ok("delete break 1", "message");
    k.ok("quit", "quit");
    // (Its exit status counts the two refusals above.)
    k.finish();
    assert!(status(&vm).contains("running"), "{}", status(&vm));

    // A stock gdb session first (QEMU then answers `pP.T` thread ids and
    // refuses a plain `D`), then kdbg: quit leaves the guest running.
    let g = Command::new("gdb")
        .args(["-batch", "-nx"])
        .arg(&img.vmlinux)
        .args(["-ex", &format!("target remote 127.0.0.1:{}", vm.port)])
        .args(["-ex", "info threads"])
        // The comm of the first two tasks after init_task, as gdb reads
        // the same structures (pid 1 init, pid 2 kthreadd).
        .args([
            "-ex",
            &format!("p {FIRST}->pid"),
            "-ex",
            &format!("p {FIRST}->comm"),
        ])
        .args([
            "-ex",
            &format!("p {SECOND}->pid"),
            "-ex",
            &format!("p {SECOND}->comm"),
        ])
        .args(["-ex", "detach"])
        .output()
        .expect("run gdb");
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let out = String::from_utf8_lossy(&g.stdout);
    let vals: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix('$').and_then(|l| l.split_once(" = ")))
        .map(|(_, v)| v)
        .collect();
    // `"init", '\\000' <repeats 11 times>` or `"kthreadd\\000\\000..."`.
    let comm = |v: &str| {
        let q = v.strip_prefix('"').unwrap_or(v);
        let q = &q[..q.find('"').unwrap_or(q.len())];
        q.split("\\000").next().unwrap().to_string()
    };
    assert_eq!(vals.len(), 4, "{out}");
    assert_eq!((vals[0], comm(vals[1])), ("1", init_comm.clone()), "{out}");
    assert_eq!(
        (vals[2], comm(vals[3])),
        ("2", "kthreadd".to_string()),
        "{out}"
    );
    let mut k = KdbgJson::start_with(&connect, &img.vmlinux, &["--stopped"]);
    let th = k.ok("threads", "threads");
    assert_eq!(th["threads"].as_array().map(Vec::len), Some(1), "{th}");
    k.ok("quit", "quit");
    assert!(k.finish().success());
    assert!(
        status(&vm).contains("running"),
        "guest frozen after quit following a gdb session: {}",
        status(&vm)
    );
    // And it really runs: the workload keeps printing.
    let before = vm.console_len();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while vm.console_len() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the console stopped growing"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(vm);

    // KASLR on (a second, short boot): the slide is found at connect from
    // linux_banner's runtime address and `lx` applies it.
    let t = std::time::Instant::now();
    let vm = LinuxVm::boot(&img, true).expect("boot Linux with KASLR");
    vm.wait_console("kdbg-linux: init up", Duration::from_secs(240))
        .expect("init (kaslr)");
    let connect = format!("tcp:127.0.0.1:{}", vm.port);
    let mut k = KdbgJson::start_with(&connect, &img.vmlinux, &["--stopped"]);
    let sl = k.ok("lx kaslr", "linux");
    let slide = sl["lx"]["slide"].as_u64().expect("slide");
    // (A slide of 0 is KASLR's own choice about once in 500 boots.)
    assert!(slide.is_multiple_of(0x20_0000) && slide < 1 << 30, "{sl}");
    if slide == 0 {
        eprintln!("linux: KASLR chose slide 0 this time");
    }
    let t0 = k.ok("lx tasks", "linux");
    let tasks = t0["lx"]["tasks"].as_array().expect("tasks");
    let (init_task, _) = elf_bytes(&img.vmlinux, "init_task", 1);
    assert_eq!(tasks[0]["task"].as_u64(), Some(init_task + slide), "{t0}");
    assert_eq!(tasks[0]["comm"], "swapper/0", "{t0}");
    assert!(
        tasks
            .iter()
            .any(|t| t["pid"] == 2 && t["comm"] == "kthreadd"),
        "{t0}"
    );
    // Every symbolic address is the running kernel's: the symbols moved
    // by the slide (names -> addresses and back, DWARF, CFI, the file's
    // bytes); per-CPU offsets did not.
    let (banner_link, _) = elf_bytes(&img.vmlinux, "linux_banner", 1);
    let sym = k.ok(&format!("info symbol {:#x}", banner_link + slide), "symbol");
    assert_eq!(sym["symbol"], "linux_banner", "{sym}");
    let (openat_link, _) = elf_bytes(&img.vmlinux, "do_sys_openat2", 1);
    let b = k.ok("break do_sys_openat2", "breakpoint");
    assert_eq!(hex(&b["breakpoint"]["addr"]), openat_link + slide, "{b}");
    let m = k.mark();
    k.ok("continue", "running");
    let st = k.wait_stop(m);
    assert_eq!(hex(&st["stop"]["rip"]), openat_link + slide, "{st}");
    assert!(
        st["stop"]["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("do_sys_openat2")),
        "{st}"
    );
    assert!(
        st["stop"]["source"]
            .as_str()
            .is_some_and(|l| l.starts_with("fs/open.c:")),
        "{st}"
    );
    let a = k.ok("info args", "args");
    assert!(a.to_string().contains("\\\"/"), "no filename string: {a}");
    let bt = k.ok("bt", "backtrace");
    let frames = bt["frames"].as_array().expect("frames").clone();
    let names: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(names.contains(&"do_syscall_64"), "{bt}");
    assert!(
        names.iter().any(|n| n.starts_with("entry_SYSCALL_64+")),
        "{bt}"
    );
    let c = k.run_within("print init_task.comm", Duration::from_secs(400));
    assert!(
        c["value"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("\"swapper/0")),
        "{c}"
    );
    let (jiffies_link, _) = elf_bytes(&img.vmlinux, "jiffies_64", 1);
    let j = k.ok("print &jiffies_64", "value");
    let jtext = j["value"]["text"].as_str().expect("text").to_string();
    assert!(
        jtext.contains(&format!("{:#x}", jiffies_link + slide)),
        "{j}"
    );
    // `jiffies` is only declared in DWARF; the linker script makes it an
    // alias of jiffies_64: the symbol table's address, the declaration's
    // type (as gdb).
    let jv = k.ok("print jiffies", "value");
    let j64 = k.ok("print jiffies_64", "value");
    assert_eq!(jv["value"]["text"], j64["value"]["text"], "{jv}\n{j64}");
    let ja = k.ok("print &jiffies", "value");
    assert!(
        ja["value"]["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("{:#x}", jiffies_link + slide))),
        "{ja}"
    );
    // A per-CPU variable is an offset into .data..percpu: not slid.
    let (cur_link, _) = elf_bytes(&img.vmlinux, "current_task", 1);
    let pc = k.ok("print &current_task", "value");
    assert!(
        pc["value"]["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("{cur_link:#x}"))),
        "{pc}"
    );
    let stop_line = st["stop"]["source"].as_str().unwrap().to_string();
    k.ok("delete break 1", "message");
    k.ok("quit", "quit");
    assert!(k.finish().success());
    // gdb with the same symbols moved by the same slide (`symbol-file -o`)
    // reads the same kernel the same way.
    let callers: Vec<(u64, String)> = frames
        .iter()
        .filter(|f| f["inlined"] == false && f["level"] != 0)
        .filter_map(|f| Some((hex(&f["pc"]), f["function"].as_str()?.to_string())))
        .collect();
    let mut gdb = Command::new("gdb");
    gdb.args(["-batch", "-nx"])
        .args([
            "-ex",
            &format!("symbol-file -o {slide:#x} {}", img.vmlinux.display()),
        ])
        .args(["-ex", &format!("target remote 127.0.0.1:{}", vm.port)])
        .args(["-ex", "p init_task.comm", "-ex", "p &jiffies_64"])
        .args(["-ex", "p &jiffies"])
        .args(["-ex", &format!("info line *{:#x}", openat_link + slide)]);
    for (pc, _) in &callers {
        gdb.args(["-ex", &format!("info symbol {pc:#x}")]);
    }
    let g = gdb.args(["-ex", "detach"]).output().expect("run gdb");
    let out = String::from_utf8_lossy(&g.stdout).to_string();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let gcomm = out
        .lines()
        .find_map(|l| l.strip_prefix("$1 = "))
        .unwrap_or_else(|| panic!("{out}"));
    let kcomm = c["value"]["text"].as_str().unwrap();
    assert_eq!(
        gcomm.split("\\000").next(),
        kcomm.split("\\000").next(),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("$2 = ") && l.contains(&format!("{:#x}", jiffies_link + slide))),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("$3 = ") && l.contains(&format!("{:#x}", jiffies_link + slide))),
        "{out}"
    );
    // `Line 1306 of "fs/open.c" starts at address ... <do_sys_openat2>`
    let line: &str = stop_line.rsplit(':').next().unwrap();
    assert!(
        out.contains(&format!("Line {line} of ")) && out.contains("<do_sys_openat2>"),
        "kdbg stopped at {stop_line}; gdb: {out}"
    );
    // `__x64_sys_openat + 26 in section .text`: the functions bt named.
    for (pc, name) in &callers {
        // (An assembly frame is named from its sized symbol by kdbg, from
        // the label before the pc by gdb: `entry_SYSCALL_64_after_hwframe`.)
        let (base, want) = match name.split_once('+') {
            Some((b, _)) => (b, b.to_string()),
            None => (name.as_str(), format!("{name} + ")),
        };
        assert!(
            !base.is_empty() && out.lines().any(|l| l.starts_with(&want)),
            "frame at {pc:#x} is {name} for kdbg; gdb: {out}"
        );
    }
    eprintln!(
        "linux: kaslr boot: gdb agrees on {} caller frames",
        callers.len()
    );
    eprintln!(
        "linux: kaslr boot and checks in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}
