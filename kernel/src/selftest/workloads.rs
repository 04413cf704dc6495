//! `workloads`: every workload computes what its documentation says.

use super::{Case, Suite, TestResult};
use crate::check;
use crate::workloads::{
    self as w, CLONE_CHILD_SETTID, CLONE_FORBIDDEN, CLONE_PARENT_SETTID, TaskRegs,
};

pub static SUITE: Suite = Suite {
    name: "workloads",
    cases: &[
        Case {
            name: "spawn_task",
            run: spawn_task,
        },
        Case {
            name: "sys_open",
            run: sys_open,
        },
        Case {
            name: "sum8_fib_nest",
            run: sum8_fib_nest,
        },
        Case {
            name: "handle_request",
            run: handle_request,
        },
        Case {
            name: "insn_classes",
            run: insn_classes,
        },
    ],
};

fn spawn_task() -> TestResult {
    let regs = TaskRegs {
        ip: 1,
        sp: 2,
        flags: 3,
    };
    let (pid, ptid, ctid) = w::call_spawn_task(
        0x11 | CLONE_PARENT_SETTID | CLONE_CHILD_SETTID,
        0x1000,
        &regs,
        0x4000,
    );
    check!(pid >= 100, "pid {pid}");
    check!(
        ptid as i64 == pid && ctid as i64 == pid,
        "tids {ptid}/{ctid} for pid {pid}"
    );
    let (r, _, _) = w::call_spawn_task(0x11, 0, &regs, 0);
    check!(r == -22, "stack_size 0 gave {r}, want -22");
    let (r, _, _) = w::call_spawn_task(CLONE_FORBIDDEN, 0, &regs, 1);
    check!(r == -1, "forbidden flag gave {r}, want -1");
    Ok(())
}

fn sys_open() -> TestResult {
    let fd = w::call_sys_open("/etc/hostname\0", 0, 0);
    check!(fd >= 3, "open /etc/hostname gave {fd}");
    let r = w::call_sys_open("/etc/missing\0", 0, 0);
    check!(r == -2, "missing file gave {r}, want -2");
    let r = w::call_sys_open("/etc/passwd\0", 1, 0);
    check!(r == -13, "writing /etc/passwd gave {r}, want -13");
    // SAFETY: null is allowed and must give -14.
    let r = unsafe { w::sys_open(core::ptr::null(), 0, 0) };
    check!(r == -14, "null path gave {r}, want -14");
    Ok(())
}

fn sum8_fib_nest() -> TestResult {
    let s = w::call_sum8(1, 2, 3, 4, 5, 6, 7, 8);
    check!(s == 204, "sum8(1..8) = {s}, want 204");
    let f = w::call_fib(10);
    check!(f == 55, "fib(10) = {f}");
    let n = w::call_nest(5);
    check!(n == 5, "nest(5) = {n}");
    Ok(())
}

fn handle_request() -> TestResult {
    let r = w::call_handle_request(10, "abc\0", 2, 3);
    check!(r == 18, "handle_request = {r}, want 10 + 2 + 3 + 3");
    // SAFETY: null is allowed and must give -14.
    let r = unsafe { w::handle_request(core::ptr::null()) };
    check!(r == -14, "null request gave {r}");
    Ok(())
}

fn insn_classes() -> TestResult {
    for x in [0u64, 1, 2, 77, 1 << 40] {
        let bad = w::call_insn_all(x);
        check!(
            bad == 0,
            "{bad} instruction-class workloads returned wrong values for x = {x}"
        );
    }
    Ok(())
}
