//! What the stub needs from the kernel that hosts it, behind plain function
//! pointers installed once by [`crate::init`] (the arrows are `kernel -> stub`).
//!
//! Every function may be called from a trap handler with interrupts off:
//! no allocation, no lock another context may hold while interrupted.

use arch::TrapFrame;

/// One kernel task, as `tasks` and gdb's thread list show it.
#[derive(Clone, Copy, Debug)]
pub struct TaskInfo<'a> {
    pub id: u32,
    /// No spaces (shown as `name=` in rows).
    pub name: &'a str,
    /// `running`, `ready`, `blocked`, `dead`, ...
    pub state: &'a str,
}

/// Visits tasks: `for_each_task(&mut |task| ...)`.
pub type TaskVisitor = fn(&mut dyn FnMut(TaskInfo<'_>));

/// The kernel's side of the boundary.
#[derive(Clone, Copy)]
pub struct KernelOps {
    /// Id of the task running on this CPU (0 = boot/idle context).
    pub current_task: fn() -> u32,
    /// Calls `f` for every live task (the current one included).
    pub for_each_task: TaskVisitor,
    /// Saved registers of a task that is not running (`None` for the
    /// running task or an unknown id).
    pub saved_frame: fn(u32) -> Option<TrapFrame>,
    /// Replaces a switched-out task's saved registers; `false` if refused.
    pub set_saved_frame: fn(u32, &TrapFrame) -> bool,
    /// kallsyms: address of a function by name.
    pub symbol_named: fn(&str) -> Option<u64>,
    /// kallsyms: (name, start address) of the function containing an address.
    pub symbol_at: fn(u64) -> Option<(&'static str, u64)>,
    /// Writes kernel text (read-only pages), for gdb breakpoints and memory
    /// writes into code.
    pub write_text: fn(u64, &[u8]),
    /// The timer: (ticks since boot, ticks per second). The stub measures
    /// the TSC rate against it for the host's clock.
    pub timer: fn() -> (u64, u64),
    /// gdb's `kill`: what the kernel does (the reference kernel powers off
    /// QEMU with a distinctive exit code).
    pub kill: fn() -> !,
}

fn no_task() -> u32 {
    0
}
fn no_tasks(f: &mut dyn FnMut(TaskInfo<'_>)) {
    f(TaskInfo {
        id: 0,
        name: "kernel",
        state: "running",
    });
}
fn no_frame(_: u32) -> Option<TrapFrame> {
    None
}
fn no_set_frame(_: u32, _: &TrapFrame) -> bool {
    false
}
fn no_symbol(_: &str) -> Option<u64> {
    None
}
fn no_symbol_at(_: u64) -> Option<(&'static str, u64)> {
    None
}
fn no_text(_: u64, _: &[u8]) {}
fn no_timer() -> (u64, u64) {
    (0, 0)
}
fn halt_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

impl KernelOps {
    /// A kernel with one context and no symbols (what the stub assumes
    /// before `init`).
    pub const MINIMAL: KernelOps = KernelOps {
        current_task: no_task,
        for_each_task: no_tasks,
        saved_frame: no_frame,
        set_saved_frame: no_set_frame,
        symbol_named: no_symbol,
        symbol_at: no_symbol_at,
        write_text: no_text,
        timer: no_timer,
        kill: halt_forever,
    };
}

/// gdb thread ids are task ids + 1 (gdb's thread ids start at 1).
pub fn tid_of_task(task: u32) -> usize {
    task as usize + 1
}

/// The task of a gdb thread id.
pub fn task_of_tid(tid: usize) -> Option<u32> {
    u32::try_from(tid.checked_sub(1)?).ok()
}
