//! End-to-end, a stock gdb against kdbg's stub with a jump-optimized probe
//! (issue 18): `x/8i` at the probe shows the instructions as compiled (the
//! jump is hidden as an int3 is), and `stepi` from the probe walks the
//! original instructions one by one (the probe falls back to int3 while
//! gdb steps there, runs its handler once, and is optimized again when gdb
//! continues).
//!
//! Needs the kernel (`cargo xtask build`), QEMU and gdb.

use std::time::Duration;

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(60);

fn gdb(vm: &mut Qemu, cmds: &[&str]) -> String {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    tests::gdb::batch_within(&kernel, addr, &[], cmds, Duration::from_secs(120))
}

fn boot_serving() -> Qemu {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot the reference kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm
}

/// The `probe id=...` rows of `monitor probes` output.
fn probe_rows(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("probe id=")).collect()
}

fn field<'a>(row: &'a str, key: &str) -> Option<&'a str> {
    row.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The instruction lines of an `x/Ni` listing (address and text, without
/// gdb's `=>` marker).
fn insn_lines(block: &str) -> Vec<String> {
    block
        .lines()
        .map(|l| l.trim_start_matches("=>").trim())
        .filter(|l| l.starts_with("0x"))
        .map(str::to_string)
        .collect()
}

fn between<'a>(out: &'a str, from: &str, to: &str) -> &'a str {
    let a = out
        .find(from)
        .unwrap_or_else(|| panic!("no {from:?} in:\n{out}"));
    let rest = &out[a + from.len()..];
    let b = rest
        .find(to)
        .unwrap_or_else(|| panic!("no {to:?} after {from:?} in:\n{out}"));
    &rest[..b]
}

/// Workload functions the serve mode calls all the time; the first whose
/// entry kprobe is optimized is the one the tests use.
const CANDIDATES: &[&str] = &["sys_open", "fib", "sum8", "handle_request", "spawn_task"];

/// The entry address of the first candidate whose entry kprobe is
/// optimized.
fn optimized_function(vm: &mut Qemu) -> u64 {
    let mut cmds: Vec<String> = CANDIDATES
        .iter()
        .map(|f| format!("monitor kprobe {f}"))
        .collect();
    cmds.push("monitor probes".into());
    cmds.push("monitor probe delete 1 2 3 4 5".into());
    cmds.push("detach".into());
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = gdb(vm, &refs);
    let rows = probe_rows(&out);
    assert_eq!(rows.len(), CANDIDATES.len(), "{out}");
    for row in &rows {
        if field(row, "path") == Some("optimized") {
            let a = field(row, "addr").unwrap_or("");
            return u64::from_str_radix(a.trim_start_matches("0x"), 16).expect("probe address");
        }
        assert!(
            field(row, "noopt").is_some(),
            "a probe that stays int3 says why: {row}"
        );
    }
    panic!("no candidate's entry probe was optimized:\n{out}");
}

#[test]
fn x8i_at_an_optimized_probe_shows_the_original_instructions() {
    let mut vm = boot_serving();
    let f = optimized_function(&mut vm);
    let out = gdb(
        &mut vm,
        &[
            "echo BEFORE\\n",
            &format!("x/8i {f:#x}"),
            &format!("x/16xb {f:#x}"),
            "echo PROBED\\n",
            &format!("monitor kprobe {f:#x}"),
            "monitor probes",
            &format!("x/8i {f:#x}"),
            &format!("x/16xb {f:#x}"),
            // A read starting inside the jump.
            &format!("x/4xb {:#x}", f + 2),
            "echo END\\n",
            "detach",
        ],
    );
    let rows = probe_rows(&out);
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(field(rows[0], "path"), Some("optimized"), "{out}");
    let before = between(&out, "BEFORE\n", "PROBED\n");
    let after = between(&out, "PROBED\n", "END\n");
    let (bi, ai) = (insn_lines(before), insn_lines(after));
    assert_eq!(bi.len(), 8 + 2, "{out}");
    // x/8i, then the two lines of x/16xb: the same before and after; the
    // read from +2 shows bytes 2..6 of the original.
    assert_eq!(&ai[..10], &bi[..], "the jump is visible:\n{out}");
    let orig: Vec<&str> = bi[8]
        .split(">:")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let from2: Vec<&str> = ai[10]
        .split(">:")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(&from2[..], &orig[2..6], "{out}");
    vm.assert_still_running(Duration::from_millis(300));
}

/// `hbreak` does not write text, so the probe stays optimized and the stop
/// is at the jump; `stepi` then walks the original instructions (each pc
/// is the next address of the listing) and the probe's handler runs once;
/// after `continue` the probe is optimized again.
#[test]
fn stepi_through_an_optimized_region() {
    let mut vm = boot_serving();
    let f = optimized_function(&mut vm);
    let out = gdb(
        &mut vm,
        &[
            &format!("monitor kprobe {f:#x}"),
            "monitor probes",
            &format!("hbreak *{f:#x}"),
            "continue",
            "echo LISTING\\n",
            "x/5i $pc",
            "echo STEPS\\n",
            "stepi",
            "p/x $pc",
            "stepi",
            "p/x $pc",
            "stepi",
            "p/x $pc",
            "echo PROBES\\n",
            "monitor probes",
            "continue",
            "monitor probes",
            "delete",
            "detach",
        ],
    );
    let rows = probe_rows(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(field(rows[0], "path"), Some("optimized"), "{out}");
    assert_eq!(
        field(rows[2], "path"),
        Some("optimized"),
        "not optimized again after continue:\n{out}"
    );
    let listing = insn_lines(between(&out, "LISTING\n", "STEPS\n"));
    assert_eq!(listing.len(), 5, "{out}");
    let addr = |l: &str| {
        u64::from_str_radix(
            l.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches("0x"),
            16,
        )
        .unwrap_or(0)
    };
    let want: Vec<u64> = listing.iter().map(|l| addr(l)).collect();
    let pcs: Vec<u64> = between(&out, "STEPS\n", "PROBES\n")
        .lines()
        .filter_map(|l| l.split("= 0x").nth(1))
        .filter_map(|h| u64::from_str_radix(h.trim(), 16).ok())
        .collect();
    assert_eq!(pcs.len(), 3, "{out}");
    // The region's instructions (at least 5 bytes from the entry) never
    // branch: the first two steps are the next instructions of the
    // listing; the third (maybe a branch) must still be real code, not
    // kdbg's detour or slot area.
    assert_eq!(
        &pcs[..2],
        &want[1..3],
        "stepi left the original instructions:\n{out}"
    );
    let fn_end = want[0] + 0x1000;
    assert!(
        pcs[2] > want[0] && pcs[2] < fn_end,
        "the third step left the function:\n{out}"
    );
    let hits: Vec<u64> = rows
        .iter()
        .filter_map(|r| field(r, "hits").and_then(|h| h.parse().ok()))
        .collect();
    assert!(
        hits[1] > hits[0],
        "the probe did not run while stepping over it:\n{out}"
    );
    vm.assert_still_running(Duration::from_millis(300));
}
