//! The noprobe range is closed under the trap path: every function the
//! trap entry can reach is in `__noprobe_start..__noprobe_end`, so no probe
//! can ever be placed on code a probe hit (or a debugger stop) runs.
//!
//! Reads the built kernel ELF (`cargo xtask build`), decodes every function
//! (iced-x86) and follows what its code references: direct calls and jumps,
//! indirect calls through a memory word the image initialises (the GOT),
//! code addresses taken (rip-relative `lea`, immediates), and the code
//! addresses in a data object it references (vtables, tables of function
//! pointers). The roots are the trap entry stubs, the kretprobe trampoline
//! and the optimized probes' common entry with the probe-core callbacks
//! they call (through words set at boot), the trap handler the
//! kernel registers (`kernel::dispatch::dispatch`, reached through a
//! function pointer) and the kernel's `stub::Host` implementation (reached
//! through the `&'static dyn Host` installed at boot).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// One function of the image.
struct Func {
    start: u64,
    end: u64,
    name: String,
}

struct Image {
    /// By start address.
    funcs: BTreeMap<u64, Func>,
    /// (address, bytes) of every allocated section with contents.
    sections: Vec<(u64, Vec<u8>)>,
    text: Range<u64>,
    noprobe: Range<u64>,
}

impl Image {
    fn load() -> Image {
        Image::load_from(tests::kernel_path())
    }

    fn load_from(path: std::path::PathBuf) -> Image {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the kernel first with `cargo xtask build` (or run `cargo xtask test`)",
                path.display()
            )
        });
        let elf = object::File::parse(&*bytes).expect("the kernel is an ELF file");
        let addr = |name: &str| {
            elf.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .unwrap_or_else(|| panic!("kernel symbol {name} missing (see kernel/linker.ld)"))
        };
        let mut funcs = BTreeMap::new();
        for s in elf.symbols() {
            if s.kind() == SymbolKind::Text && s.size() > 0 {
                let name = s.name().unwrap_or("?");
                funcs.insert(
                    s.address(),
                    Func {
                        start: s.address(),
                        end: s.address() + s.size(),
                        name: format!("{:#}", rustc_demangle::demangle(name)),
                    },
                );
            }
        }
        let sections = elf
            .sections()
            .filter(|s| s.address() != 0 && s.kind() != SectionKind::UninitializedData)
            .filter_map(|s| Some((s.address(), s.data().ok()?.to_vec())))
            .collect();
        Image {
            funcs,
            sections,
            text: addr("__text_start")..addr("__text_end"),
            noprobe: addr("__noprobe_start")..addr("__noprobe_end"),
        }
    }

    /// The function containing `addr`.
    fn func_at(&self, addr: u64) -> Option<&Func> {
        let (_, f) = self.funcs.range(..=addr).next_back()?;
        (addr < f.end).then_some(f)
    }

    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.sections.iter().find_map(|(base, data)| {
            let off = usize::try_from(addr.checked_sub(*base)?).ok()?;
            data.get(off..off.checked_add(len)?)
        })
    }

    fn word(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(addr, 8)?.try_into().ok()?))
    }

    /// The code addresses function `f` may transfer control to.
    fn successors(&self, f: &Func) -> Vec<u64> {
        let Some(code) = self.bytes(f.start, (f.end - f.start) as usize) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut decoder = Decoder::with_ip(64, code, f.start, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut insn);
            let indirect = matches!(
                insn.flow_control(),
                FlowControl::IndirectCall | FlowControl::IndirectBranch
            );
            for i in 0..insn.op_count() {
                match insn.op_kind(i) {
                    OpKind::NearBranch64 => out.push(insn.near_branch_target()),
                    // A bit mask (`and`/`or`/`xor`/`test` with an
                    // immediate, e.g. an rflags mask) is never an address,
                    // even when its value falls inside the text.
                    OpKind::Immediate32to64 | OpKind::Immediate32 | OpKind::Immediate64
                        if !matches!(
                            insn.mnemonic(),
                            Mnemonic::And | Mnemonic::Or | Mnemonic::Xor | Mnemonic::Test
                        ) =>
                    {
                        self.referenced(insn.immediate(i), false, &mut out)
                    }
                    OpKind::Memory => {
                        let target = if insn.is_ip_rel_memory_operand() {
                            insn.ip_rel_memory_address()
                        } else if insn.memory_base() == Register::None {
                            insn.memory_displacement64()
                        } else {
                            continue;
                        };
                        self.referenced(target, indirect, &mut out)
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// `addr` is referenced by code: a code address is a successor; a word
    /// an indirect call or jump goes through is one; a data object yields
    /// the code addresses among its leading words (vtables: drop, size,
    /// align, methods; tables of function pointers).
    fn referenced(&self, addr: u64, through: bool, out: &mut Vec<u64>) {
        // The range bounds themselves (`is_blacklisted` compares against
        // them) are addresses, not references to the code there.
        if addr == self.noprobe.end || addr == self.text.end {
            return;
        }
        if self.text.contains(&addr) {
            out.push(addr);
        } else if through {
            out.extend(self.word(addr).filter(|w| self.text.contains(w)));
        } else {
            for i in 0..64 {
                match self.word(addr + 8 * i) {
                    Some(w) if self.text.contains(&w) => out.push(w),
                    Some(w) if w < 0x1_0000 => {}
                    _ => break,
                }
            }
        }
    }

    /// Every function reachable from `roots`, with the function it was
    /// first reached from.
    fn reach(&self, roots: &[u64]) -> HashMap<u64, Option<u64>> {
        let mut seen: HashMap<u64, Option<u64>> = roots.iter().map(|&r| (r, None)).collect();
        let mut queue: VecDeque<u64> = roots.iter().copied().collect();
        while let Some(at) = queue.pop_front() {
            let Some(f) = self.funcs.get(&at) else {
                continue;
            };
            for t in self.successors(f) {
                if let Some(g) = self.func_at(t)
                    && g.start != f.start
                    && !seen.contains_key(&g.start)
                {
                    seen.insert(g.start, Some(f.start));
                    queue.push_back(g.start);
                }
            }
        }
        seen
    }

    fn roots(&self, pred: impl Fn(&str) -> bool) -> Vec<u64> {
        self.funcs
            .values()
            .filter(|f| pred(&f.name))
            .map(|f| f.start)
            .collect()
    }

    /// `f <- caller <- ... <- root`, for messages.
    fn chain(&self, reached: &HashMap<u64, Option<u64>>, mut at: u64) -> String {
        let mut names = Vec::new();
        loop {
            names.push(
                self.funcs
                    .get(&at)
                    .map_or("?", |f| f.name.as_str())
                    .to_string(),
            );
            match reached.get(&at) {
                Some(Some(from)) if names.len() < 12 => at = *from,
                _ => break,
            }
        }
        names.join("\n      <- ")
    }

    /// Reached functions outside the noprobe range, as call chains.
    fn outside(&self, reached: &HashMap<u64, Option<u64>>) -> Vec<String> {
        let mut bad: Vec<u64> = reached
            .keys()
            .copied()
            .filter(|a| !self.noprobe.contains(a))
            .collect();
        bad.sort();
        bad.iter().map(|&a| self.chain(reached, a)).collect()
    }
}

/// `dispatcher`: the trap handler the kernel registers.
fn trap_path_roots(image: &Image, dispatcher: &str) -> Vec<u64> {
    let roots = image.roots(|n| {
        n == "kdbg_trap_vectors"
            || n == "kdbg_kretprobe_trampoline"
            || n == "probes::hooks::return_trampoline"
            || n == "kdbg_optprobe_common"
            || n == "probes::hooks::detour"
            || n == dispatcher
            || (n.starts_with('<') && n.contains(" as probes::host::Host>::"))
    });
    assert!(
        roots.len() >= 5,
        "trap entry, dispatcher or Host impl not found in the kernel's symbols: {roots:?}"
    );
    roots
}

/// Every function reached from `root` (the kernel's trap dispatcher) is in
/// the image's noprobe range; the `expected` functions are among them (the
/// analysis sees the path). `fix` says where to mark what is not.
fn assert_trap_path_unprobeable(image: &Image, root: &str, expected: &[&str], fix: &str) {
    let reached = image.reach(&trap_path_roots(image, root));
    let names: Vec<&str> = reached
        .keys()
        .filter_map(|a| image.funcs.get(a))
        .map(|f| f.name.as_str())
        .collect();
    for expected in expected {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "{expected} not reached from {root}: the call-graph analysis is broken ({} functions reached)",
            names.len()
        );
    }
    let bad = image.outside(&reached);
    assert!(
        bad.is_empty(),
        "{} function(s) the trap path reaches can be probed ({fix}):\n    {}",
        bad.len(),
        bad.join("\n    ")
    );
}

#[test]
fn every_function_the_trap_path_reaches_is_in_the_noprobe_range() {
    // The probe core's and the stub's hooks, the stop loop, the host's
    // methods.
    assert_trap_path_unprobeable(
        &Image::load(),
        "kernel::dispatch::dispatch",
        &[
            "probes::hit::<impl probes::Core>::on_breakpoint",
            "stub::hooks::breakpoint",
            "kernel::sched::switch",
        ],
        "mark them #[noprobe], or match them in kernel/linker.ld",
    );
}

/// docs/EMBEDDING.md's example kernel (its own linker script and
/// `#[noprobe]` marks): the same closure from its trap handler.
#[test]
fn the_example_kernels_trap_path_is_in_its_noprobe_range() {
    assert_trap_path_unprobeable(
        &Image::load_from(tests::workspace_root().join("target/kdbg/embed-kernel")),
        "embed_kernel::trap",
        &[
            "probes::hit::<impl probes::Core>::on_breakpoint",
            "stub::hooks::serial_irq",
        ],
        "examples/embed-kernel/linker.ld, #[noprobe]",
    );
}

#[test]
fn the_analysis_flags_probeable_code_when_it_is_reached() {
    // The same analysis from the kernel's main loop reaches the workloads,
    // which are probeable by design: it must report them.
    let image = Image::load();
    let roots = image.roots(|n| n == "kernel::serve::run");
    assert_eq!(roots.len(), 1, "kernel::serve::run not found");
    let reached = image.reach(&roots);
    let bad = image.outside(&reached);
    assert!(
        bad.iter().any(|c| c.starts_with("kernel::workloads::")),
        "probeable workload code reached from serve::run was not reported: {bad:?}"
    );
}
