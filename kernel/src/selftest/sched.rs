//! `sched`: timer ticks advance, busy tasks that never yield are all
//! preempted and all make progress, tasks are listed with names and saved
//! registers, exited tasks are reaped.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Case, Suite, TestResult};
use crate::check;
use crate::sched::{self, State};
use crate::timer;

pub static SUITE: Suite = Suite {
    name: "sched",
    cases: &[
        Case {
            name: "ticks_advance",
            run: ticks_advance,
        },
        Case {
            name: "busy_tasks_all_progress",
            run: busy_tasks_all_progress,
        },
        Case {
            name: "task_list_and_saved_frames",
            run: task_list,
        },
        Case {
            name: "exited_task_is_reaped",
            run: exit_reaped,
        },
    ],
};

fn ticks_advance() -> TestResult {
    let t0 = timer::ticks();
    sched::sleep_ticks(5);
    let t1 = timer::ticks();
    check!(t1 >= t0 + 5, "slept 5 ticks but ticks went {t0} -> {t1}");
    check!(t1 < t0 + 500, "a 5-tick sleep took {} ticks", t1 - t0);
    Ok(())
}

const BUSY: usize = 4;
static COUNTERS: [AtomicU64; BUSY] = [const { AtomicU64::new(0) }; BUSY];
static STOP: AtomicBool = AtomicBool::new(false);

fn busy(i: u64) {
    let Some(c) = COUNTERS.get(i as usize) else {
        return;
    };
    while !STOP.load(Ordering::Relaxed) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn busy_tasks_all_progress() -> TestResult {
    STOP.store(false, Ordering::SeqCst);
    for c in &COUNTERS {
        c.store(0, Ordering::SeqCst);
    }
    let names = ["busy-0", "busy-1", "busy-2", "busy-3"];
    let mut ids = [0u32; BUSY];
    let switches0 = sched::switches();
    for (i, id) in ids.iter_mut().enumerate() {
        *id = sched::spawn(names.get(i).copied().unwrap_or("busy"), busy, i as u64)
            .map_err(|e| alloc::format!("spawn failed: {e:?}"))?;
    }
    sched::sleep_ticks(20);
    for id in ids {
        let t = sched::task_info(id).ok_or(alloc::format!("busy task {id} not listed"))?;
        check!(t.switches_in > 0, "busy task {id} was never switched in");
    }
    let snapshot: [u64; BUSY] =
        core::array::from_fn(|i| COUNTERS.get(i).map_or(0, |c| c.load(Ordering::SeqCst)));
    STOP.store(true, Ordering::SeqCst);
    for id in ids {
        check!(
            sched::join(id, crate::selftest::JOIN_TICKS),
            "task {id} did not exit after STOP"
        );
    }
    sched::reap();
    for (i, n) in snapshot.iter().enumerate() {
        check!(*n > 0, "busy task {i} never ran (counters {snapshot:?})");
    }
    let switched = sched::switches() - switches0;
    check!(switched >= 5, "only {switched} task switches in 20 ticks");
    Ok(())
}

static SLEEPER_GO: AtomicBool = AtomicBool::new(false);

fn sleeper(_: u64) {
    while !SLEEPER_GO.load(Ordering::SeqCst) {
        sched::sleep_ticks(1);
    }
}

fn task_list() -> TestResult {
    SLEEPER_GO.store(false, Ordering::SeqCst);
    let id =
        sched::spawn("selftest-sleeper", sleeper, 0).map_err(|e| alloc::format!("spawn: {e:?}"))?;
    sched::sleep_ticks(3);
    let info = sched::task_info(id).ok_or("spawned task not listed")?;
    check!(info.name == "selftest-sleeper", "listed as `{}`", info.name);
    check!(
        matches!(info.state, State::Sleeping | State::Ready),
        "state {:?}",
        info.state
    );
    let mut names = 0;
    let mut saw_main = false;
    sched::for_each_task(&mut |t| {
        names += 1;
        saw_main |= t.id == sched::MAIN_TASK && t.state == State::Running;
    });
    check!(
        saw_main,
        "task 0 (main, running this test) not listed as running"
    );
    check!(names >= 3, "only {names} tasks listed");
    let frame = sched::saved_frame(id).ok_or("no saved frame for a sleeping task")?;
    check!(
        crate::blacklist::is_text(frame.rip),
        "saved rip {:#x} is not kernel text",
        frame.rip
    );
    check!(
        frame.interrupts_enabled(),
        "saved rflags {:#x} has IF clear",
        frame.rflags
    );
    check!(
        sched::saved_frame(sched::current_id()).is_none(),
        "the running task must have no saved frame"
    );
    SLEEPER_GO.store(true, Ordering::SeqCst);
    check!(
        sched::join(id, crate::selftest::JOIN_TICKS),
        "sleeper did not exit"
    );
    Ok(())
}

fn quick(_: u64) {}

fn exit_reaped() -> TestResult {
    let id =
        sched::spawn("selftest-quick", quick, 0).map_err(|e| alloc::format!("spawn: {e:?}"))?;
    check!(
        sched::join(id, crate::selftest::JOIN_TICKS),
        "task did not exit"
    );
    sched::reap();
    check!(
        sched::task_info(id).is_none(),
        "exited task {id} still listed after reap"
    );
    Ok(())
}
