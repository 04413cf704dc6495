//! `analyze`, `slot_code` and `emulate` never panic, whatever the bytes:
//! a deterministic pseudo-random sweep (kernel-side code must not panic on
//! untrusted input).

// Test code: a failed unwrap/expect/panic is a failed test.

use arch::TrapFrame;
use arch::insn::{EmuFault, Execution, StackMem, Tail, analyze, emulate, slot_code};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Every access faults at odd addresses, succeeds otherwise.
struct Flaky;
impl StackMem for Flaky {
    fn read_u64(&mut self, addr: u64) -> Result<u64, EmuFault> {
        if addr & 1 != 0 {
            Err(EmuFault { addr, write: false })
        } else {
            Ok(addr ^ 0x5555)
        }
    }
    fn write_u64(&mut self, addr: u64, _value: u64) -> Result<(), EmuFault> {
        if addr & 1 != 0 {
            Err(EmuFault { addr, write: true })
        } else {
            Ok(())
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut counts = [0u32; 3];
    for _ in 0..200_000 {
        let len = (rng.next() % 24) as usize;
        let mut code: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Bias towards interesting prefixes/opcodes.
        if len > 0 && rng.next().is_multiple_of(4) {
            let hot = [
                0x0f, 0x66, 0x67, 0x48, 0xf3, 0xf2, 0xff, 0xc4, 0xc5, 0x62, 0x8f, 0xe8, 0xc3, 0x70,
            ];
            code[0] = hot[(rng.next() % hot.len() as u64) as usize];
        }
        let start = rng.next() | 0xffff_0000_0000_0000;
        let off = rng.next() % 26;
        let addr = start.wrapping_add(off).wrapping_sub(1);
        match analyze(&code, start, addr) {
            Err(_) => counts[0] += 1,
            Ok(a) => match a.exec {
                Execution::Emulate(e) => {
                    counts[1] += 1;
                    let mut f = TrapFrame {
                        rsp: rng.next(),
                        rcx: rng.next(),
                        rflags: rng.next(),
                        ..TrapFrame::default()
                    };
                    let before = f;
                    if emulate(&e, a.next_ip(), &mut f, &mut Flaky).is_err() {
                        assert_eq!(
                            (f.rip, f.rsp, f.rflags),
                            (before.rip, before.rsp, before.rflags)
                        );
                    }
                }
                Execution::OutOfLine { .. } => {
                    counts[2] += 1;
                    for tail in [Tail::Trap, Tail::JmpBack, Tail::StiJmpBack] {
                        let _ = slot_code(&a, rng.next(), tail);
                        let _ = slot_code(&a, a.addr.wrapping_add(rng.next() % 0x1000), tail);
                    }
                }
            },
        }
    }
    println!(
        "refused {}, emulated {}, out of line {}",
        counts[0], counts[1], counts[2]
    );
    assert!(
        counts.iter().all(|&c| c > 1000),
        "sweep did not reach every path: {counts:?}"
    );
}
