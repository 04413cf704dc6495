//! Disassembly with iced-x86: symbolized operands, instruction-boundary
//! checks for probe addresses.

use std::sync::Arc;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction, IntelFormatter,
    OpKind, Register, SymbolResolver, SymbolResult,
};
use serde::Serialize;

/// Names operand addresses: the symbol containing `addr` (or starting at
/// it) as (its address, its name). The kernel image
/// ([`crate::image::Image`], over `symbols::Elf`) is the one implementation.
pub trait Symbolizer {
    fn containing(&self, addr: u64) -> Option<(u64, String)>;
}

struct Resolver(Arc<dyn Symbolizer + Send + Sync>);

impl SymbolResolver for Resolver {
    fn symbol(
        &mut self,
        _instruction: &Instruction,
        _operand: u32,
        _instruction_operand: Option<u32>,
        address: u64,
        _address_size: u32,
    ) -> Option<SymbolResult<'_>> {
        // Small constants are not addresses.
        if address < 0x1000 {
            return None;
        }
        let (a, name) = self.0.containing(address)?;
        Some(SymbolResult::with_string(a, name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Syntax {
    #[default]
    Gas,
    Intel,
}

/// One decoded instruction.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Insn {
    pub addr: u64,
    pub len: usize,
    pub bytes: String,
    pub text: String,
    #[serde(skip)]
    pub is_call: bool,
    #[serde(skip)]
    pub invalid: bool,
    /// Argument registers (0..6 = rdi..r9) the instruction reads.
    #[serde(skip)]
    pub arg_regs: Vec<u8>,
}

pub struct Disassembler {
    fmt: Box<dyn Formatter>,
}

impl Disassembler {
    pub fn new(syntax: Syntax, symbols: Option<Arc<dyn Symbolizer + Send + Sync>>) -> Disassembler {
        let resolver = symbols.map(|s| Box::new(Resolver(s)) as Box<dyn SymbolResolver>);
        let mut fmt: Box<dyn Formatter> = match syntax {
            Syntax::Gas => Box::new(GasFormatter::with_options(resolver, None)),
            Syntax::Intel => Box::new(IntelFormatter::with_options(resolver, None)),
        };
        fmt.options_mut().set_first_operand_char_index(8);
        fmt.options_mut().set_rip_relative_addresses(false);
        fmt.options_mut().set_hex_prefix("0x");
        fmt.options_mut().set_hex_suffix("");
        fmt.options_mut().set_uppercase_hex(false);
        Disassembler { fmt }
    }

    /// Decode up to `max` instructions from `bytes` loaded at `addr`.
    pub fn decode(&mut self, bytes: &[u8], addr: u64, max: usize) -> Vec<Insn> {
        let mut dec = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
        let mut out = Vec::new();
        let mut ins = Instruction::default();
        while dec.can_decode() && out.len() < max {
            let pos = dec.position();
            dec.decode_out(&mut ins);
            let mut text = String::new();
            let invalid = ins.is_invalid();
            if invalid {
                text.push_str("(bad)");
            } else {
                self.fmt.format(&ins, &mut text);
            }
            let raw = &bytes[pos..pos + ins.len()];
            out.push(Insn {
                addr: ins.ip(),
                len: ins.len(),
                bytes: raw
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                text,
                is_call: ins.flow_control() == FlowControl::Call
                    || ins.flow_control() == FlowControl::IndirectCall,
                invalid,
                arg_regs: arg_regs(&ins),
            });
            if invalid && ins.len() == 0 {
                break;
            }
        }
        out
    }
}

fn arg_regs(ins: &Instruction) -> Vec<u8> {
    let args = [
        Register::RDI,
        Register::RSI,
        Register::RDX,
        Register::RCX,
        Register::R8,
        Register::R9,
    ];
    let mut out = Vec::new();
    let mut note = |r: Register| {
        let full = r.full_register();
        if let Some(i) = args.iter().position(|a| *a == full) {
            let i = i as u8;
            if !out.contains(&i) {
                out.push(i);
            }
        }
    };
    for op in 0..ins.op_count() {
        match ins.op_kind(op) {
            OpKind::Register => note(ins.op_register(op)),
            OpKind::Memory => {
                note(ins.memory_base());
                note(ins.memory_index());
            }
            _ => {}
        }
    }
    out
}

/// Where an address falls relative to the instructions decoded from the
/// start of its function.
#[derive(Debug, PartialEq, Eq)]
pub enum Boundary {
    Start,
    /// Inside the instruction starting at `start`.
    Inside {
        start: u64,
        text: String,
    },
    /// Decoding ran out before reaching the address.
    Unknown,
}

/// Decode from `func_start` to see whether `target` starts an instruction.
pub fn boundary(dis: &mut Disassembler, bytes: &[u8], func_start: u64, target: u64) -> Boundary {
    let mut dec = Decoder::with_ip(64, bytes, func_start, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while dec.can_decode() {
        let ip = dec.ip();
        if ip == target {
            return Boundary::Start;
        }
        dec.decode_out(&mut ins);
        if ins.is_invalid() {
            return Boundary::Unknown;
        }
        if target > ip && target < ip + ins.len() as u64 {
            let text = dis
                .decode(&bytes[(ip - func_start) as usize..], ip, 1)
                .pop()
                .map(|i| i.text)
                .unwrap_or_default();
            return Boundary::Inside { start: ip, text };
        }
    }
    if dec.ip() == target {
        Boundary::Start
    } else {
        Boundary::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // push rbp; mov rbp,rsp; call +0; mov eax,[rip+0x10]; ret
    const CODE: &[u8] = &[
        0x55, 0x48, 0x89, 0xe5, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00,
        0xc3,
    ];

    #[test]
    fn decodes_and_symbolizes() {
        struct Two;
        impl Symbolizer for Two {
            fn containing(&self, addr: u64) -> Option<(u64, String)> {
                match addr {
                    0x1000..0x1010 => Some((0x1000, "func".into())),
                    0x101f..0x1027 => Some((0x101f, "global".into())),
                    _ => None,
                }
            }
        }
        let mut d = Disassembler::new(Syntax::Intel, Some(Arc::new(Two)));
        let v = d.decode(CODE, 0x1000, 10);
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].text, "push    rbp");
        assert!(v[2].is_call);
        assert!(v[2].text.contains("func+9"), "{}", v[2].text);
        assert!(v[3].text.contains("global"), "{}", v[3].text);
        assert_eq!(v[4].text, "ret");
        assert_eq!(v[1].bytes, "48 89 e5");
    }

    #[test]
    fn gas_syntax() {
        let mut d = Disassembler::new(Syntax::Gas, None);
        let v = d.decode(CODE, 0x1000, 2);
        assert_eq!(v[1].text, "mov     %rsp,%rbp");
    }

    #[test]
    fn boundaries() {
        let mut d = Disassembler::new(Syntax::Intel, None);
        assert_eq!(boundary(&mut d, CODE, 0x1000, 0x1001), Boundary::Start);
        assert_eq!(
            boundary(&mut d, CODE, 0x1000, 0x1002),
            Boundary::Inside {
                start: 0x1001,
                text: "mov     rbp,rsp".into()
            }
        );
        assert_eq!(boundary(&mut d, CODE, 0x1000, 0x1010), Boundary::Start);
    }

    #[test]
    fn arg_registers_used() {
        // mov rax, [rdi+8]
        let mut d = Disassembler::new(Syntax::Intel, None);
        let v = d.decode(&[0x48, 0x8b, 0x47, 0x08], 0, 1);
        assert_eq!(v[0].arg_regs, vec![0]);
    }
}
