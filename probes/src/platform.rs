//! What the probe core needs from the kernel that hosts it and from the
//! machine, behind plain function pointers installed once at boot.
//!
//! The probe core must not depend on the kernel (the arrows are
//! `kernel -> stub -> probes -> arch`), so the kernel fills a [`Platform`]
//! and calls [`crate::init`]. Host tests install a fake platform over fake
//! memory and drive the trap hooks with fake [`arch::TrapFrame`]s.

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

/// The kernel's side of the boundary. Every function must be callable from
/// a trap handler with interrupts off (no locks another CPU may hold while it
/// is interrupted, no allocation) unless its doc says otherwise.
#[derive(Clone, Copy)]
pub struct Platform {
    /// Index of the current CPU, `0..MAX_CPUS`.
    pub cpu_id: fn() -> usize,
    /// Number of CPUs online (for the kretprobe `maxactive` default).
    pub cpu_count: fn() -> usize,
    /// Id of the task running on this CPU (0 = boot/idle context).
    pub task_id: fn() -> u32,
    /// A monotonic timestamp (the TSC).
    pub timestamp: fn() -> u64,
    /// kallsyms: the function containing `addr`. Registration only.
    pub symbol_at: fn(u64) -> Option<Symbol>,
    /// kallsyms: a function by name. Registration only.
    pub symbol_named: fn(&str) -> Option<Symbol>,
    /// `addr` is in kernel text.
    pub is_text: fn(u64) -> bool,
    /// `addr` is in code that must never be probed (trap entry, the probe
    /// core, the stub, the UART driver, the allocator, the switch path).
    pub is_blacklisted: fn(u64) -> bool,
    /// Fault-safe read of kernel memory: `false` if any byte is unmapped.
    pub read: fn(u64, &mut [u8]) -> bool,
    /// Fault-safe write of kernel data (the stack, for emulated pushes and
    /// kretprobe return-address hijacking): `false` if unmapped.
    pub write: fn(u64, &[u8]) -> bool,
    /// The interrupted context's stack is always mapped kernel memory: the
    /// hit path may read and write the words at `rsp` that the probed
    /// instruction itself would (emulated push/pop/call/ret, the kretprobe
    /// return address) directly instead of through `read`/`write`.
    pub direct_stack: bool,
    /// Writes kernel text (int3 bytes, slot code), serialised for this CPU.
    pub write_text: fn(u64, &[u8]),
    /// Executable memory within +-2 GB of kernel text for out-of-line slots.
    pub slot_area: fn() -> (u64, usize),
    /// Address of the kretprobe trampoline (an `int3` the core owns).
    pub trampoline: fn() -> u64,
    /// Address of a one-byte no-op followed by an int3 (the single-step pad).
    pub step_pad: fn() -> u64,
    /// Calls a C-ABI function at `entry` with six register arguments and a
    /// copy of `stack` words as its stack-passed arguments (jprobe call-out).
    pub call_with_args: fn(u64, &[u64; 6], &[u64]) -> u64,
    /// Reports an unrecoverable probe state and stops the machine.
    pub fatal: fn(&'static str) -> !,
}
