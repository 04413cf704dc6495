//! x86_64 registers by their DWARF numbers, and register sets for unwinding.

/// An x86_64 register, numbered as in the SysV psABI DWARF mapping
/// (0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15,
/// 16 return address / rip, 17-32 xmm0-xmm15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Register(pub u16);

#[allow(missing_docs)]
impl Register {
    pub const RAX: Register = Register(0);
    pub const RDX: Register = Register(1);
    pub const RCX: Register = Register(2);
    pub const RBX: Register = Register(3);
    pub const RSI: Register = Register(4);
    pub const RDI: Register = Register(5);
    pub const RBP: Register = Register(6);
    pub const RSP: Register = Register(7);
    pub const R8: Register = Register(8);
    pub const R9: Register = Register(9);
    pub const R10: Register = Register(10);
    pub const R11: Register = Register(11);
    pub const R12: Register = Register(12);
    pub const R13: Register = Register(13);
    pub const R14: Register = Register(14);
    pub const R15: Register = Register(15);
    /// The return address column; also used for rip.
    pub const RIP: Register = Register(16);
}

const NAMES: [&str; 17] = [
    "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip",
];

impl Register {
    /// The SysV integer argument registers in order.
    pub const ARGS: [Register; 6] = [
        Register::RDI,
        Register::RSI,
        Register::RDX,
        Register::RCX,
        Register::R8,
        Register::R9,
    ];

    /// `xmmN` for N in 0..16.
    pub fn xmm(n: u16) -> Register {
        Register(17 + n)
    }

    /// The lower-case name (`rdi`, `xmm0`); `dwarfN` for others.
    pub fn name(self) -> String {
        match self.0 {
            n @ 0..=16 => NAMES[n as usize].to_string(),
            n @ 17..=32 => format!("xmm{}", n - 17),
            n => format!("dwarf{n}"),
        }
    }

    /// Parses `rdi`, `%rdi`, `rip`, `xmm3`.
    pub fn from_name(name: &str) -> Option<Register> {
        let name = name.trim_start_matches('%');
        if let Some(i) = NAMES.iter().position(|n| *n == name) {
            return Some(Register(i as u16));
        }
        let n: u16 = name.strip_prefix("xmm")?.parse().ok()?;
        (n < 16).then(|| Register::xmm(n))
    }
}

impl std::fmt::Display for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// General-purpose registers plus rip, any of which may be unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    values: [Option<u64>; 17],
}

impl Registers {
    /// All unknown.
    pub fn new() -> Registers {
        Registers::default()
    }

    /// The value of `reg`, if known (always `None` for xmm registers).
    pub fn get(&self, reg: Register) -> Option<u64> {
        self.values.get(reg.0 as usize).copied().flatten()
    }

    /// Sets `reg` (ignored for registers outside rax..rip).
    pub fn set(&mut self, reg: Register, value: Option<u64>) {
        if let Some(slot) = self.values.get_mut(reg.0 as usize) {
            *slot = value;
        }
    }

    /// rip.
    pub fn pc(&self) -> Option<u64> {
        self.get(Register::RIP)
    }

    /// rsp.
    pub fn sp(&self) -> Option<u64> {
        self.get(Register::RSP)
    }
}
