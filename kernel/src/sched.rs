//! Kernel tasks and a preemptive round-robin scheduler.
//!
//! A task switch is a trap-frame swap: the timer interrupt (or `int 0x81`
//! for a voluntary yield) saves the interrupted task's complete
//! [`TrapFrame`] (GPRs, rip, rflags, rsp and the FXSAVE area) into its task
//! and loads the next task's saved frame into the trap frame, so `iretq`
//! resumes the next task. A task that is not running is therefore fully
//! described by its saved frame ([`saved_frame`]), which is what the GDB
//! stub shows for other threads.
//!
//! Task 0 is "main" (the boot context, on the boot stack), task 1 "idle"
//! (runs only when nothing else is ready). Every other task has its own
//! heap stack, an id and a name; when its entry function returns it exits:
//! the probe core reclaims its kretprobe instances
//! (`probes::hooks::task_exit`) and its stack is freed by the next
//! [`reap`] (from task context).
//!
//! Everything taking the scheduler lock keeps interrupts off, so a trap
//! handler never finds it held by the context it interrupted.

use alloc::vec::Vec;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use arch::TrapFrame;
use arch::gdt::{KERNEL_CS, KERNEL_DS};

use crate::sync::IrqMutex;
use noprobe::noprobe;

/// A task id (0 = main, 1 = idle).
pub type TaskId = u32;

/// Id of the boot context.
pub const MAIN_TASK: TaskId = 0;
/// Id of the idle task.
pub const IDLE_TASK: TaskId = 1;
/// Stack size of spawned tasks.
pub const STACK_SIZE: usize = 64 * 1024;
/// Most tasks alive at once.
pub const MAX_TASKS: usize = 64;

/// Scheduling state of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Ready,
    Sleeping,
    Dead,
}

impl State {
    /// Lower-case name (`tasks` listings, gdb's thread info).
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Ready => "ready",
            State::Sleeping => "sleeping",
            State::Dead => "dead",
        }
    }
}

/// Why a task could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// [`MAX_TASKS`] tasks exist.
    TooManyTasks,
    /// No memory for the stack.
    NoMemory,
}

struct Task {
    id: TaskId,
    name: &'static str,
    state: State,
    /// Saved registers while not running.
    frame: TrapFrame,
    wake_at: u64,
    switches_in: u64,
    entry: fn(u64),
    arg: u64,
    /// Owned here; freed when the task is reaped.
    _stack: Option<crate::guard::Stack>,
    /// Lowest address of the stack, holding [`STACK_CANARY`] (0: the boot stack, unchecked).
    stack_bottom: u64,
}

/// Written at the bottom of every spawned task's stack and checked at each
/// switch away from the task: a task that overflowed its stack is stopped
/// with a fatal error instead of silently corrupting the heap.
pub const STACK_CANARY: u64 = 0x6b64_6267_5354_4b21;

/// The canary of a task is intact (tasks without one always are).
#[noprobe]
fn canary_intact(stack_bottom: u64) -> bool {
    if stack_bottom == 0 {
        return true;
    }
    // SAFETY: stack_bottom is the start of the task's own stack allocation,
    // which lives as long as the task (it is freed only by `reap`).
    unsafe { core::ptr::read_volatile(stack_bottom as *const u64) == STACK_CANARY }
}

struct Scheduler {
    tasks: Vec<Task>,
    current: usize,
    next_id: TaskId,
    started: bool,
}

static SCHED: IrqMutex<Scheduler> = IrqMutex::new(Scheduler {
    tasks: Vec::new(),
    current: 0,
    next_id: 0,
    started: false,
});

/// The running task's id, readable without the lock (trap paths).
static CURRENT: AtomicU32 = AtomicU32::new(MAIN_TASK);
/// Lowest address of the running task's stack (where its canary lives);
/// `None` for the boot stack.
pub fn current_stack_bottom() -> Option<u64> {
    let s = SCHED.lock();
    let t = s.tasks.get(s.current)?;
    (t.stack_bottom != 0).then_some(t.stack_bottom)
}

/// The task whose stack guard page holds `addr` (a page fault there is a
/// stack overflow): its id and name. Never waits for the lock.
#[noprobe]
pub fn guard_owner(addr: u64) -> Option<(TaskId, &'static str)> {
    let s = SCHED.try_lock()?;
    s.tasks.iter().find_map(|t| {
        let (lo, hi) = t._stack.as_ref()?.guard()?;
        (addr >= lo && addr < hi).then_some((t.id, t.name))
    })
}

/// Task switches since boot.
static SWITCHES: AtomicU64 = AtomicU64::new(0);

/// A snapshot of one task, for listings.
#[derive(Clone, Copy, Debug)]
pub struct TaskInfo {
    pub id: TaskId,
    pub name: &'static str,
    pub state: State,
    /// How often the task was switched in.
    pub switches_in: u64,
}

fn nothing(_: u64) {}

fn idle(_: u64) {
    loop {
        arch::cpu::enable_interrupts_and_halt();
    }
}

fn initial_frame(stack_top: u64) -> TrapFrame {
    let mut f = TrapFrame::default();
    // FCW = 0x37F (x87 defaults), MXCSR = 0x1F80 (all SIMD exceptions masked).
    if let Some(b) = f.fxsave.0.get_mut(0..2) {
        b.copy_from_slice(&0x037Fu16.to_le_bytes());
    }
    if let Some(b) = f.fxsave.0.get_mut(24..28) {
        b.copy_from_slice(&0x1F80u32.to_le_bytes());
    }
    f.rip = kdbg_task_start as *const () as u64;
    f.cs = u64::from(KERNEL_CS);
    f.ss = u64::from(KERNEL_DS);
    f.rflags = arch::frame::rflags::IF | 0x2;
    f.rsp = stack_top;
    f
}

/// Makes the boot context task 0 ("main") and creates the idle task.
pub fn init() {
    let mut s = SCHED.lock();
    s.tasks.reserve(MAX_TASKS);
    s.tasks.push(Task {
        id: MAIN_TASK,
        name: "main",
        state: State::Running,
        frame: TrapFrame::default(),
        wake_at: 0,
        switches_in: 1,
        entry: nothing,
        arg: 0,
        _stack: None,
        stack_bottom: 0,
    });
    s.current = 0;
    s.next_id = 1;
    drop(s);
    let _ = spawn("idle", idle, 0);
}

/// Lets the timer switch tasks from now on.
pub fn start() {
    SCHED.lock().started = true;
}

/// Creates a ready task running `entry(arg)` on its own stack.
pub fn spawn(name: &'static str, entry: fn(u64), arg: u64) -> Result<TaskId, SpawnError> {
    reap();
    // Allocate outside the lock's critical section would be nicer; the heap
    // lock nests fine (both keep interrupts off).
    let stack = crate::guard::Stack::new(STACK_SIZE).ok_or(SpawnError::NoMemory)?;
    let stack_bottom = stack.bottom();
    // SAFETY: the lowest word of the stack just allocated (mapped, owned).
    unsafe { core::ptr::write_volatile(stack_bottom as *mut u64, STACK_CANARY) };
    let top = (stack_bottom + STACK_SIZE as u64) & !0xF;
    let mut s = SCHED.lock();
    if s.tasks.len() >= MAX_TASKS {
        return Err(SpawnError::TooManyTasks);
    }
    let id = s.next_id;
    s.next_id += 1;
    s.tasks.push(Task {
        id,
        name,
        state: State::Ready,
        frame: initial_frame(top),
        wake_at: 0,
        switches_in: 0,
        entry,
        arg,
        _stack: Some(stack),
        stack_bottom,
    });
    Ok(id)
}

/// Frees the stacks of dead tasks (not the current one). Task context only.
pub fn reap() {
    let dead: Vec<Task> = {
        let mut s = SCHED.lock();
        let current_id = s.tasks.get(s.current).map(|t| t.id);
        let mut dead = Vec::new();
        let mut i = 0;
        while i < s.tasks.len() {
            let is_dead = s
                .tasks
                .get(i)
                .is_some_and(|t| t.state == State::Dead && Some(t.id) != current_id);
            if is_dead {
                dead.push(s.tasks.remove(i));
            } else {
                i += 1;
            }
        }
        if let Some(id) = current_id
            && let Some(pos) = s.tasks.iter().position(|t| t.id == id)
        {
            s.current = pos;
        }
        dead
    };
    drop(dead);
}

/// The scheduler proper, called from the timer IRQ and `int 0x81` with
/// interrupts off: saves `frame` into the current task, picks the next
/// ready task round-robin (idle only when nothing else is ready) and loads
/// its frame.
#[noprobe]
pub fn switch(frame: &mut TrapFrame) {
    let Some(mut guard) = SCHED.try_lock() else {
        return;
    };
    let s = &mut *guard;
    if !s.started || s.tasks.is_empty() {
        return;
    }
    let now = crate::timer::ticks();
    let cur = s.current;
    if let Some(t) = s.tasks.get_mut(cur) {
        if !canary_intact(t.stack_bottom) {
            let (id, name) = (t.id, t.name);
            drop(guard);
            crate::println!("\nkdbg: task {id} ({name}) overflowed its {STACK_SIZE}-byte stack");
            crate::dispatch::fatal_kind(
                frame,
                stub::death::Kind::StackOverflow,
                "task stack overflow (canary overwritten)",
            );
        }
        t.frame = *frame;
        if t.state == State::Running {
            t.state = State::Ready;
        }
    }
    for t in s.tasks.iter_mut() {
        if t.state == State::Sleeping && t.wake_at <= now {
            t.state = State::Ready;
        }
    }
    let n = s.tasks.len();
    let mut next = None;
    for k in 1..=n {
        let i = (cur + k) % n;
        if let Some(t) = s.tasks.get(i)
            && t.state == State::Ready
            && t.id != IDLE_TASK
        {
            next = Some(i);
            break;
        }
    }
    let next = next
        .or_else(|| s.tasks.iter().position(|t| t.id == IDLE_TASK))
        .unwrap_or(cur);
    if let Some(t) = s.tasks.get_mut(next) {
        t.state = State::Running;
        if next != cur {
            t.switches_in += 1;
            SWITCHES.fetch_add(1, Ordering::Relaxed);
        }
        *frame = t.frame;
        CURRENT.store(t.id, Ordering::Relaxed);
    }
    s.current = next;
}

/// Id of the running task.
#[noprobe]
pub fn current_id() -> TaskId {
    CURRENT.load(Ordering::Relaxed)
}

/// Index of the CPU (one CPU).
#[noprobe]
pub fn cpu_id() -> usize {
    0
}

/// Number of CPUs.
#[noprobe]
pub fn cpu_count() -> usize {
    1
}

/// Task switches since boot.
#[noprobe]
pub fn switches() -> u64 {
    SWITCHES.load(Ordering::Relaxed)
}

/// Gives the CPU to the next ready task.
pub fn yield_now() {
    arch::trap::software_yield();
}

/// Sleeps for at least `ticks` timer ticks.
pub fn sleep_ticks(ticks: u64) {
    {
        let mut s = SCHED.lock();
        let wake = crate::timer::ticks() + ticks;
        let cur = s.current;
        if let Some(t) = s.tasks.get_mut(cur) {
            t.wake_at = wake;
            t.state = State::Sleeping;
        }
    }
    yield_now();
}

/// Ends the running task (never returns).
pub fn exit_current() -> ! {
    let id = current_id();
    probes::hooks::task_exit(id);
    {
        let mut s = SCHED.lock();
        let cur = s.current;
        if let Some(t) = s.tasks.get_mut(cur) {
            t.state = State::Dead;
        }
    }
    loop {
        yield_now();
    }
}

/// Calls `f` for every task (interrupts off meanwhile: keep `f` short, no
/// allocation). Returns `false` without calling `f` when the scheduler lock
/// is held (a trap inside the scheduler).
#[noprobe]
pub fn for_each_task(f: &mut dyn FnMut(TaskInfo)) -> bool {
    let Some(s) = SCHED.try_lock() else {
        return false;
    };
    for t in s.tasks.iter() {
        f(TaskInfo {
            id: t.id,
            name: t.name,
            state: t.state,
            switches_in: t.switches_in,
        });
    }
    true
}

/// One task's snapshot.
#[noprobe]
pub fn task_info(id: TaskId) -> Option<TaskInfo> {
    let mut found = None;
    for_each_task(&mut |t| {
        if t.id == id {
            found = Some(t);
        }
    });
    found
}

/// Saved registers of a task that is not running (`None` for the running
/// task: its registers are in the trap frame being handled).
#[noprobe]
pub fn saved_frame(id: TaskId) -> Option<TrapFrame> {
    let s = SCHED.try_lock()?;
    let t = s.tasks.iter().find(|t| t.id == id)?;
    (t.state != State::Running).then_some(t.frame)
}

/// Replaces the saved registers of a task that is not running (a debugger
/// writing another thread's registers). Returns `false` for the running
/// task or an unknown id.
#[noprobe]
pub fn set_saved_frame(id: TaskId, frame: &TrapFrame) -> bool {
    let Some(mut s) = SCHED.try_lock() else {
        return false;
    };
    match s.tasks.iter_mut().find(|t| t.id == id) {
        Some(t) if t.state != State::Running && t.state != State::Dead => {
            t.frame = *frame;
            true
        }
        _ => false,
    }
}

/// The task is still alive (not exited).
pub fn is_alive(id: TaskId) -> bool {
    task_info(id).is_some_and(|t| t.state != State::Dead)
}

/// Waits (sleeping) until task `id` has exited or `timeout_ticks` passed.
pub fn join(id: TaskId, timeout_ticks: u64) -> bool {
    let deadline = crate::timer::ticks() + timeout_ticks;
    while is_alive(id) {
        if crate::timer::ticks() >= deadline {
            return false;
        }
        sleep_ticks(1);
    }
    true
}

/// First Rust code of every spawned task (from the asm below).
extern "C" fn task_main() -> ! {
    let (entry, arg) = {
        let s = SCHED.lock();
        match s.tasks.get(s.current) {
            Some(t) => (t.entry, t.arg),
            None => (nothing as fn(u64), 0),
        }
    };
    entry(arg);
    exit_current()
}

unsafe extern "C" {
    fn kdbg_task_start();
}

// The outermost frame of every task: gdb's `bt` stops here.
global_asm!(
    ".pushsection .text.kdbg_task_start, \"ax\", @progbits",
    ".globl kdbg_task_start",
    ".type kdbg_task_start, @function",
    "kdbg_task_start:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    "xor ebp, ebp",
    "call {main}",
    "ud2",
    ".cfi_endproc",
    ".size kdbg_task_start, . - kdbg_task_start",
    ".popsection",
    main = sym task_main,
);
