//! Why a probe operation was refused.

use core::fmt;

pub use arch::insn::Refusal;

/// A refused registration or control operation. Every variant's message
/// says what was wrong and what to do instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The core has not been initialised by the kernel yet.
    NotInitialised,
    /// No kernel symbol with that name.
    UnknownSymbol,
    /// The address is not in kernel text.
    NotText,
    /// No function (kallsyms symbol) contains the address.
    NoFunction,
    /// The offset is at or past the end of the function.
    PastEnd,
    /// The address is in code kdbg itself runs while handling a probe.
    Blacklisted,
    /// The address is inside an instruction, not at its first byte.
    NotBoundary,
    /// The instruction analysis refused the address (the reason says why).
    Refused(Refusal),
    /// A jprobe/kretprobe/capture must be placed on a function's first byte.
    NotFunctionEntry,
    /// The function already has a jprobe (one per function, as in the seed).
    JprobeExists,
    /// The function's bytes could not be read.
    Unreadable,
    /// All out-of-line slots are in use.
    NoSlot,
    /// The probe table is full.
    TableFull,
    /// No probe with that id.
    NoSuchProbe,
    /// Called from inside a probe handler, which must not (un)register.
    InHandler,
    /// Another CPU is (un)registering right now; retry.
    Busy,
    /// kretprobe per-instance data larger than 4 KiB.
    DataTooLarge,
    /// maxactive above the supported maximum.
    TooManyInstances,
    /// The kretprobe instance pools would exceed their memory budget.
    NoMemory,
    /// A map's budget does not hold one entry.
    MapBudget,
    /// The aggregation spec is invalid (the wire parser checks it first).
    MapSpec,
    /// All maps together would exceed their memory (or the heap is full).
    MapMemory,
    /// `map ...` on a probe that has no map.
    NoMap,
    /// A kretprobe on a function that returns with `retf` or `iret`.
    FarReturn,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProbeError::NotInitialised => {
                "the probe core is not initialised: the kernel must call probes::init at boot"
            }
            ProbeError::UnknownSymbol => {
                "no kernel function by that name: check the spelling (kallsyms names)"
            }
            ProbeError::NotText => "address is not in kernel text: probe a code address",
            ProbeError::NoFunction => {
                "no function contains that address: probe inside a known function"
            }
            ProbeError::PastEnd => {
                "offset is past the end of the function: use an offset below its size"
            }
            ProbeError::Blacklisted => {
                "address is in code kdbg runs itself (trap entry, probe core, stub, UART, allocator, scheduler switch): probe elsewhere"
            }
            ProbeError::NotBoundary => {
                "address is not an instruction boundary: use the address of an instruction's first byte"
            }
            ProbeError::Refused(r) => {
                return write!(
                    f,
                    "cannot probe here: {r}; probe a neighbouring instruction"
                );
            }
            ProbeError::NotFunctionEntry => {
                "jprobes, kretprobes and captures go on a function's first byte: use offset 0"
            }
            ProbeError::JprobeExists => "that function already has a jprobe: remove it first",
            ProbeError::Unreadable => "the function's code could not be read: check the address",
            ProbeError::NoSlot => "all out-of-line slots are in use: remove some probes",
            ProbeError::TableFull => "the probe table is full: remove some probes",
            ProbeError::NoSuchProbe => "no probe with that id: list probes to see the ids",
            ProbeError::InHandler => {
                "probes cannot be (un)registered from a probe handler: do it outside"
            }
            ProbeError::Busy => "another CPU is changing probes right now: retry",
            ProbeError::DataTooLarge => {
                "kretprobe entry data is limited to 4096 bytes: ask for less"
            }
            ProbeError::TooManyInstances => "maxactive is limited to 4096: ask for fewer instances",
            ProbeError::NoMemory => {
                "kretprobe instances would exceed their 4 MiB memory budget (`monitor events` shows it): use a smaller maxactive or delete kretprobes"
            }
            ProbeError::MapBudget => {
                "the map's budget does not hold one entry: give a larger budget"
            }
            ProbeError::MapSpec => "the aggregation is invalid: see `monitor help kprobe`",
            ProbeError::MapMemory => {
                "maps would exceed their 16 MiB of kernel memory: use a smaller budget or delete aggregating probes"
            }
            ProbeError::NoMap => "that probe has no map: `maps` lists the aggregating probes",
            ProbeError::FarReturn => {
                "the function returns with retf or iret: a kretprobe cannot take that return; probe its callers or use a kprobe"
            }
        };
        f.write_str(s)
    }
}

impl From<Refusal> for ProbeError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotBoundary => ProbeError::NotBoundary,
            Refusal::PastEnd => ProbeError::PastEnd,
            Refusal::OutsideText => ProbeError::NotText,
            Refusal::Blacklisted => ProbeError::Blacklisted,
            other => ProbeError::Refused(other),
        }
    }
}
