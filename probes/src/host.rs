//! [`Host`]: the one interface a kernel implements to host kdbg (the probe
//! core and the GDB stub). The arrows are `kernel -> stub -> probes -> arch`:
//! the kernel implements `Host` for a type of its own and hands a
//! `&'static` of it to `stub::init` (which installs it into the probe core
//! too) or, without the stub, to [`crate::init`].
//!
//! Every method may be called from a trap handler with interrupts off: no
//! lock another context may hold while it is interrupted, no allocation,
//! unless its doc says otherwise ("registration only": called while a probe
//! is registered, from a monitor command or the kernel's own code).
//!
//! Required: [`Host::is_text`] and [`Host::is_blacklisted`] (what may be
//! probed is the kernel's to say). Everything else has a default for a
//! single-CPU kernel with one context and no symbols, with machine access
//! through [`arch`]; a kernel overrides what it has (tasks, kallsyms, a
//! timer). Host tests implement all of it over fake memory.
//!
//! Whatever the kernel implements here runs on the trap path: put those
//! functions in the noprobe range (`#[noprobe]`, see docs/EMBEDDING.md).

use arch::TrapFrame;

/// A kernel symbol as kallsyms knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Address of the first byte.
    pub start: u64,
    /// Size in bytes (the function's end is `start + size`).
    pub size: u64,
    /// The (demangled, if Rust) name.
    pub name: &'static str,
}

impl Symbol {
    /// `addr` lies inside this symbol.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr - self.start < self.size
    }
}

/// One kernel task, as `tasks` and gdb's thread list show it.
#[derive(Clone, Copy, Debug)]
pub struct TaskInfo<'a> {
    pub id: u32,
    /// No spaces (shown as `name=` in rows).
    pub name: &'a str,
    /// `running`, `ready`, `blocked`, `dead`, ...
    pub state: &'a str,
    /// The CPU running it (running tasks; `None` when the kernel does not say).
    pub cpu: Option<usize>,
}

/// What kdbg needs from the kernel that hosts it.
pub trait Host: Sync {
    // --- what may be probed (required) ---

    /// `addr` is in kernel text.
    fn is_text(&self, addr: u64) -> bool;

    /// `addr` is in code that must never be probed (trap entry, the probe
    /// core, the stub, the allocator, the switch path: the noprobe range).
    fn is_blacklisted(&self, addr: u64) -> bool;

    // --- CPUs, tasks, time ---

    /// Index of the current CPU, `0..MAX_CPUS`.
    fn cpu_id(&self) -> usize {
        0
    }

    /// Number of CPUs online (for the kretprobe `maxactive` default).
    fn cpu_count(&self) -> usize {
        1
    }

    /// Id of the task running on this CPU (0 = boot/idle context).
    fn task_id(&self) -> u32 {
        0
    }

    /// Calls `f` for every live task (the current one included).
    fn for_each_task(&self, f: &mut dyn FnMut(TaskInfo<'_>)) {
        f(TaskInfo {
            id: 0,
            name: "kernel",
            state: "running",
            cpu: Some(0),
        });
    }

    /// Saved registers of a task that is not running (`None` for the
    /// running task or an unknown id).
    fn saved_frame(&self, _task: u32) -> Option<TrapFrame> {
        None
    }

    /// Replaces a switched-out task's saved registers; `false` if refused.
    fn set_saved_frame(&self, _task: u32, _frame: &TrapFrame) -> bool {
        false
    }

    /// A monotonic timestamp (the TSC).
    fn timestamp(&self) -> u64 {
        arch::cpu::rdtsc()
    }

    /// The timer: (ticks since boot, ticks per second); (0, 0) without one.
    /// The stub measures the TSC rate against it for the host's clock.
    fn timer(&self) -> (u64, u64) {
        (0, 0)
    }

    // --- symbols (registration only) ---

    /// kallsyms: the function containing `addr`.
    fn symbol_at(&self, _addr: u64) -> Option<Symbol> {
        None
    }

    /// kallsyms: a function by name.
    fn symbol_named(&self, _name: &str) -> Option<Symbol> {
        None
    }

    // --- memory and text ---

    /// End of the RAM that starts at 1 MiB (physical), when the boot
    /// loader said: the range a debugger mapping guest RAM may read.
    fn ram_end(&self) -> Option<u64> {
        None
    }

    /// Fault-safe read of kernel memory: `false` if any byte is unmapped.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        arch::mem::read(addr, buf).is_ok()
    }

    /// Fault-safe write of kernel data (the stack, for emulated pushes and
    /// kretprobe return-address hijacking): `false` if unmapped.
    fn write(&self, addr: u64, buf: &[u8]) -> bool {
        arch::mem::write(addr, buf).is_ok()
    }

    /// The interrupted context's stack is always mapped kernel memory: the
    /// hit path may read and write the words at `rsp` that the probed
    /// instruction itself would (emulated push/pop/call/ret, the kretprobe
    /// return address) directly instead of through `read`/`write`.
    fn direct_stack(&self) -> bool {
        true
    }

    /// Writes kernel text (int3 bytes, slot code, gdb's writes into code),
    /// serialised for this CPU; the caller has checked the bytes are mapped.
    fn write_text(&self, addr: u64, bytes: &[u8]) {
        // SAFETY: kdbg writes int3 bytes and the original bytes back at
        // instruction boundaries, whole slots no CPU runs, and what gdb's
        // user asked for while the machine is stopped.
        unsafe { arch::text::write(addr, bytes) }
    }

    /// Makes this CPU's view of the code byte at `addr` current: it
    /// trapped on an int3 there that memory no longer holds
    /// ([`arch::text::refetch`]).
    fn refetch_text(&self, addr: u64) {
        // SAFETY: `addr` held an int3 this CPU executed: mapped text.
        unsafe { arch::text::refetch(addr) }
    }

    // --- the machine (defaults from `arch`) ---

    /// After a multi-byte change to text other CPUs may run (a probe's
    /// jump written or removed, int3 first): make every CPU see it
    /// (serialise them, `arch::text::sync_all`).
    fn sync_text(&self) {
        let _ = arch::text::sync_all();
    }

    /// Runs `f` with nothing else running on this CPU (no interrupt, no
    /// task switch): the check that no task is inside a region and the
    /// writing of the jump are one step for this CPU.
    fn without_preemption(&self, f: &mut dyn FnMut()) {
        arch::cpu::without_interrupts(f);
    }

    /// Probes may be jump-optimized (default). A kernel that cannot keep
    /// the guarantees of `probes::optimize` returns `false`.
    fn optimize_probes(&self) -> bool {
        true
    }

    /// Executable memory within +-2 GB of kernel text for out-of-line slots.
    fn slot_area(&self) -> (u64, usize) {
        arch::slots::area()
    }

    /// Address of the kretprobe trampoline (ordinary code the core owns:
    /// `arch::trampoline`).
    fn trampoline(&self) -> u64 {
        arch::trampoline::address()
    }

    /// Address of a one-byte no-op followed by an int3 (the single-step pad).
    fn step_pad(&self) -> u64 {
        arch::trampoline::step_pad()
    }

    /// Calls a C-ABI function at `entry` with six register arguments and a
    /// copy of `stack` words as its stack-passed arguments (jprobe call-out).
    fn call_with_args(&self, entry: u64, regs: &[u64; 6], stack: &[u64]) -> u64 {
        // SAFETY: jprobe handlers are registered as `extern "C"` functions
        // with the probed function's (integer) prototype.
        unsafe { arch::callout::call_with_args(entry, regs, stack) }
    }

    // --- the end ---

    /// Reports an unrecoverable probe state and stops the machine.
    fn fatal(&self, msg: &'static str) -> ! {
        let _ = msg;
        halt()
    }

    /// gdb's `kill`: what the kernel does (the reference kernel powers QEMU
    /// off). Default: stop this CPU for good.
    fn kill(&self) -> ! {
        halt()
    }
}

/// Interrupts off, halt, forever.
fn halt() -> ! {
    loop {
        arch::cpu::disable_interrupts();
        arch::cpu::halt();
    }
}

/// Before a kernel installs its own: nothing may be probed.
pub struct NoHost;

impl Host for NoHost {
    fn is_text(&self, _addr: u64) -> bool {
        false
    }
    fn is_blacklisted(&self, _addr: u64) -> bool {
        true
    }
}

/// The code addresses of the host methods the hit path calls, captured
/// where the concrete type is known ([`crate::Core::init`]): a probe there
/// would trap inside every hit, so they are refused however the kernel
/// marked them.
pub(crate) fn hit_path_of<H: Host>() -> [u64; 6] {
    [
        <H as Host>::cpu_id as *const () as usize as u64,
        <H as Host>::task_id as *const () as usize as u64,
        <H as Host>::timestamp as *const () as usize as u64,
        <H as Host>::read as *const () as usize as u64,
        <H as Host>::write as *const () as usize as u64,
        <H as Host>::call_with_args as *const () as usize as u64,
    ]
}
