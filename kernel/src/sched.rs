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
//!
//! SMP: one task list for every CPU. Each CPU has its current task
//! (`current[cpu]`) and its own idle task (task 1 "idle" on CPU 0; the
//! other CPUs' boot contexts become "idleN", ids [`AP_IDLE_BASE`] + N, so
//! the other tasks keep their ids whatever the CPU count). A task runs on
//! at most one CPU (`on_cpu`); any CPU picks any ready task (migration),
//! idle tasks stay on their CPU. CPU 0 switches on the PIT tick, the others
//! on their local APIC timer, every CPU on `int 0x81` and the reschedule IPI.

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
/// Task id of CPU n's idle task is `AP_IDLE_BASE + n` (n >= 1).
pub const AP_IDLE_BASE: TaskId = 1000;

use arch::percpu::MAX_CPUS;

/// Names of the other CPUs' idle tasks.
const IDLE_NAMES: [&str; MAX_CPUS] = [
    "idle", "idle1", "idle2", "idle3", "idle4", "idle5", "idle6", "idle7", "idle8", "idle9",
    "idle10", "idle11", "idle12", "idle13", "idle14", "idle15",
];

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
    /// The CPU running it (its registers are live there, not in `frame`).
    on_cpu: Option<usize>,
    /// Runs only on this CPU (idle tasks).
    pinned: Option<usize>,
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
    /// Each CPU's current task (id).
    current: [TaskId; MAX_CPUS],
    next_id: TaskId,
    started: bool,
}

impl Scheduler {
    /// Index of CPU `cpu`'s current task.
    #[noprobe]
    fn cur(&self, cpu: usize) -> Option<usize> {
        let id = *self.current.get(cpu)?;
        self.tasks.iter().position(|t| t.id == id)
    }

    #[noprobe]
    fn cur_task(&self) -> Option<&Task> {
        self.tasks.get(self.cur(cpu_id())?)
    }

    #[noprobe]
    fn cur_task_mut(&mut self) -> Option<&mut Task> {
        let i = self.cur(cpu_id())?;
        self.tasks.get_mut(i)
    }
}

static SCHED: IrqMutex<Scheduler> = IrqMutex::new(Scheduler {
    tasks: Vec::new(),
    current: [MAIN_TASK; MAX_CPUS],
    next_id: 0,
    started: false,
});

/// Each CPU's running task id, readable without the lock (trap paths).
static CURRENT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(MAIN_TASK) }; MAX_CPUS];
/// Lowest address of the running task's stack (where its canary lives);
/// `None` for the boot stack.
pub fn current_stack_bottom() -> Option<u64> {
    let s = SCHED.lock();
    let t = s.cur_task()?;
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
    /// The CPU it runs on (running tasks).
    pub cpu: Option<usize>,
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
        on_cpu: Some(0),
        pinned: None,
    });
    // Other CPUs have no current task until they register their idle task.
    s.current = [TaskId::MAX; MAX_CPUS];
    s.current[0] = MAIN_TASK;
    for c in CURRENT.iter().skip(1) {
        c.store(TaskId::MAX, Ordering::Relaxed);
    }
    s.next_id = 1;
    drop(s);
    if let Ok(id) = spawn("idle", idle, 0) {
        let mut s = SCHED.lock();
        if let Some(t) = s.tasks.iter_mut().find(|t| t.id == id) {
            t.pinned = Some(0);
        }
    }
}

/// Makes the running context of CPU `cpu` (an AP at the end of its
/// bring-up, on its boot stack) that CPU's idle task.
pub fn register_idle(cpu: usize) {
    let mut s = SCHED.lock();
    let id = AP_IDLE_BASE + cpu as TaskId;
    s.tasks.push(Task {
        id,
        name: IDLE_NAMES.get(cpu).copied().unwrap_or("idle?"),
        state: State::Running,
        frame: TrapFrame::default(),
        wake_at: 0,
        switches_in: 1,
        entry: nothing,
        arg: 0,
        _stack: None,
        stack_bottom: 0,
        on_cpu: Some(cpu),
        pinned: Some(cpu),
    });
    if let Some(c) = s.current.get_mut(cpu) {
        *c = id;
    }
    if let Some(c) = CURRENT.get(cpu) {
        c.store(id, Ordering::Relaxed);
    }
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
        on_cpu: None,
        pinned: None,
    });
    drop(s);
    crate::smp::kick_idle_cpu();
    Ok(id)
}

/// Frees the stacks of dead tasks (not the current one). Task context only.
pub fn reap() {
    let dead: Vec<Task> = {
        let mut s = SCHED.lock();
        let current = s.current;
        let mut dead = Vec::new();
        let mut i = 0;
        while i < s.tasks.len() {
            let is_dead = s.tasks.get(i).is_some_and(|t| {
                t.state == State::Dead && t.on_cpu.is_none() && !current.contains(&t.id)
            });
            if is_dead {
                dead.push(s.tasks.remove(i));
            } else {
                i += 1;
            }
        }
        dead
    };
    drop(dead);
}

/// The scheduler proper, called from the timer IRQs, the reschedule IPI
/// and `int 0x81` with interrupts off: saves `frame` into this CPU's
/// current task, picks the next ready task round-robin that no CPU runs
/// (this CPU's idle task only when nothing else is ready) and loads its
/// frame.
#[noprobe]
pub fn switch(frame: &mut TrapFrame) {
    let Some(mut guard) = SCHED.lock_unless_mine() else {
        return;
    };
    let s = &mut *guard;
    if !s.started || s.tasks.is_empty() {
        return;
    }
    let me = cpu_id();
    let now = crate::timer::ticks();
    let cur = s.cur(me);
    if let Some(t) = cur.and_then(|c| s.tasks.get_mut(c)) {
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
        t.on_cpu = None;
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
    let from = cur.unwrap_or(0);
    let mut next = None;
    for k in 1..=n {
        let i = (from + k) % n;
        if let Some(t) = s.tasks.get(i)
            && t.state == State::Ready
            && t.pinned.is_none()
            && t.on_cpu.is_none()
        {
            next = Some(i);
            break;
        }
    }
    let next = next.or_else(|| s.tasks.iter().position(|t| t.pinned == Some(me)));
    let Some(next) = next else {
        // No idle task for this CPU (cannot happen once it is up): keep
        // running what was interrupted.
        if let Some(t) = cur.and_then(|c| s.tasks.get_mut(c)) {
            t.on_cpu = Some(me);
            if t.state == State::Ready {
                t.state = State::Running;
            }
        }
        return;
    };
    if let Some(t) = s.tasks.get_mut(next) {
        t.state = State::Running;
        t.on_cpu = Some(me);
        if Some(next) != cur {
            t.switches_in += 1;
            SWITCHES.fetch_add(1, Ordering::Relaxed);
            *frame = t.frame;
        }
        let id = t.id;
        if let Some(c) = CURRENT.get(me) {
            c.store(id, Ordering::Relaxed);
        }
        if let Some(c) = s.current.get_mut(me) {
            *c = id;
        }
    }
}

/// Id of the task running on this CPU.
#[noprobe]
pub fn current_id() -> TaskId {
    CURRENT
        .get(cpu_id())
        .map_or(MAIN_TASK, |c| c.load(Ordering::Relaxed))
}

/// Id of the task running on CPU `cpu`.
#[noprobe]
pub fn current_on(cpu: usize) -> TaskId {
    CURRENT
        .get(cpu)
        .map_or(MAIN_TASK, |c| c.load(Ordering::Relaxed))
}

/// Index of this CPU.
#[noprobe]
pub fn cpu_id() -> usize {
    arch::percpu::cpu_id()
}

/// Number of CPUs online.
#[noprobe]
pub fn cpu_count() -> usize {
    arch::percpu::online_count()
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
        if let Some(t) = s.cur_task_mut() {
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
        if let Some(t) = s.cur_task_mut() {
            t.state = State::Dead;
        }
    }
    loop {
        yield_now();
    }
}

/// Calls `f` for every task (interrupts off meanwhile: keep `f` short, no
/// allocation). Returns `false` without calling `f` when the scheduler lock
/// is held: for trap paths and the stub (a trap inside the scheduler, or
/// another CPU parked by the debugger while it holds the lock). Task code
/// uses [`for_each_task`], which waits for the lock.
#[noprobe]
pub fn try_for_each_task(f: &mut dyn FnMut(TaskInfo)) -> bool {
    let Some(s) = SCHED.try_lock() else {
        return false;
    };
    visit_tasks(&s, f);
    true
}

/// Calls `f` for every task, waiting for the scheduler lock (task context
/// only: on SMP another CPU holds the lock often, and a snapshot that
/// skipped the tasks then would say a live task is gone).
pub fn for_each_task(f: &mut dyn FnMut(TaskInfo)) {
    let s = SCHED.lock();
    visit_tasks(&s, f);
}

#[noprobe]
fn visit_tasks(s: &Scheduler, f: &mut dyn FnMut(TaskInfo)) {
    for t in s.tasks.iter() {
        f(TaskInfo {
            id: t.id,
            name: t.name,
            state: t.state,
            switches_in: t.switches_in,
            cpu: t.on_cpu,
        });
    }
}

/// One task's snapshot (task context: waits for the scheduler lock).
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

/// Saved registers of a task that is not running on this CPU (`None` for
/// this CPU's running task: its registers are in the trap frame being
/// handled). A task running on another CPU that the debugger has parked
/// has the registers of that CPU's parked frame.
#[noprobe]
pub fn saved_frame(id: TaskId) -> Option<TrapFrame> {
    let s = SCHED.try_lock()?;
    let t = s.tasks.iter().find(|t| t.id == id)?;
    match t.on_cpu {
        None => Some(t.frame),
        Some(c) if c != cpu_id() => stub::allstop::parked_frame(c),
        Some(_) => None,
    }
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
        Some(t) if t.on_cpu.is_none() && t.state != State::Dead => {
            t.frame = *frame;
            true
        }
        Some(t) if t.on_cpu.is_some_and(|c| c != cpu_id()) => t
            .on_cpu
            .is_some_and(|c| stub::allstop::set_parked_frame(c, frame)),
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
        match s.cur_task() {
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
