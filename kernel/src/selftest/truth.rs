//! `truth`: the ground-truth line format, and calls are logged as made.

use alloc::format;

use super::{Case, Suite, TestResult};
use crate::check;
use crate::workloads::{self as w, truth};

pub static SUITE: Suite = Suite {
    name: "truth",
    cases: &[
        Case {
            name: "line_format",
            run: line_format,
        },
        Case {
            name: "calls_are_logged",
            run: calls_are_logged,
        },
    ],
};

fn line_format() -> TestResult {
    let mut line = truth::Line::new();
    truth::format_line(
        &mut line,
        7,
        3,
        "sys_open",
        format_args!("path={:#x}:\"{}\" flags={:#x} ret={}", 0x1000, "/x", 0, -2),
    );
    let want = "truth seq=7 task=3 fn=sys_open path=0x1000:\"/x\" flags=0x0 ret=-2";
    check!(line.as_str() == want, "got `{}`", line.as_str());
    Ok(())
}

fn calls_are_logged() -> TestResult {
    let was = truth::enabled();
    truth::set_enabled(true);
    let n0 = truth::count();
    w::call_sum8(1, 2, 3, 4, 5, 6, 7, 8);
    let mut line = truth::Line::new();
    truth::last_line(&mut line);
    let r = w::call_sys_open("/etc/missing\0", 0, 0o644);
    let mut line2 = truth::Line::new();
    truth::last_line(&mut line2);
    let n1 = truth::count();
    truth::set_enabled(was);
    let task = crate::sched::current_id();
    let want = format!(
        "truth seq={} task={task} fn=sum8 a=0x1 b=0x2 c=0x3 d=0x4 e=0x5 f=0x6 g=0x7 h=0x8 ret=0xcc",
        n0 + 1
    );
    check!(
        line.as_str() == want,
        "logged `{}`, want `{want}`",
        line.as_str()
    );
    check!(r == -2, "sys_open returned {r}");
    check!(
        line2.as_str().contains("fn=sys_open path=0x")
            && line2
                .as_str()
                .ends_with(":\"/etc/missing\" flags=0x0 mode=0x1a4 ret=-2"),
        "logged `{}`",
        line2.as_str()
    );
    check!(n1 == n0 + 2, "{} lines for 2 calls", n1 - n0);
    Ok(())
}
