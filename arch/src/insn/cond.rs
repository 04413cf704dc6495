//! Jcc conditions evaluated on RFLAGS.

use crate::frame::rflags::{CF, OF, PF, SF, ZF};

/// A jcc/setcc/cmovcc condition (the low nibble of 0x70..0x7f / 0x0f 0x80..0x8f).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cond {
    /// Overflow: OF=1.
    O = 0x0,
    /// Not overflow: OF=0.
    No = 0x1,
    /// Below (unsigned <): CF=1.
    B = 0x2,
    /// Above or equal (unsigned >=): CF=0.
    Ae = 0x3,
    /// Equal: ZF=1.
    E = 0x4,
    /// Not equal: ZF=0.
    Ne = 0x5,
    /// Below or equal: CF=1 or ZF=1.
    Be = 0x6,
    /// Above: CF=0 and ZF=0.
    A = 0x7,
    /// Sign: SF=1.
    S = 0x8,
    /// Not sign: SF=0.
    Ns = 0x9,
    /// Parity even: PF=1.
    P = 0xa,
    /// Parity odd: PF=0.
    Np = 0xb,
    /// Less (signed <): SF!=OF.
    L = 0xc,
    /// Greater or equal (signed >=): SF=OF.
    Ge = 0xd,
    /// Less or equal: ZF=1 or SF!=OF.
    Le = 0xe,
    /// Greater: ZF=0 and SF=OF.
    G = 0xf,
}

impl Cond {
    /// All sixteen conditions, in encoding order.
    pub const ALL: [Cond; 16] = [
        Cond::O,
        Cond::No,
        Cond::B,
        Cond::Ae,
        Cond::E,
        Cond::Ne,
        Cond::Be,
        Cond::A,
        Cond::S,
        Cond::Ns,
        Cond::P,
        Cond::Np,
        Cond::L,
        Cond::Ge,
        Cond::Le,
        Cond::G,
    ];

    /// The condition with encoding nibble `n & 0xf`.
    pub fn from_nibble(n: u8) -> Cond {
        match n & 0xf {
            0x0 => Cond::O,
            0x1 => Cond::No,
            0x2 => Cond::B,
            0x3 => Cond::Ae,
            0x4 => Cond::E,
            0x5 => Cond::Ne,
            0x6 => Cond::Be,
            0x7 => Cond::A,
            0x8 => Cond::S,
            0x9 => Cond::Ns,
            0xa => Cond::P,
            0xb => Cond::Np,
            0xc => Cond::L,
            0xd => Cond::Ge,
            0xe => Cond::Le,
            _ => Cond::G,
        }
    }

    /// Whether a jcc with this condition is taken with these RFLAGS.
    /// Odd encodings are the negation of the even one below them.
    #[inline]
    pub fn holds(self, rflags: u64) -> bool {
        let f = |bit: u64| rflags & bit != 0;
        let base = match (self as u8) >> 1 {
            0 => f(OF),
            1 => f(CF),
            2 => f(ZF),
            3 => f(CF) || f(ZF),
            4 => f(SF),
            5 => f(PF),
            6 => f(SF) != f(OF),
            _ => f(ZF) || (f(SF) != f(OF)),
        };
        base != ((self as u8) & 1 != 0)
    }

    /// The AT&T mnemonic suffix (`e` for `je`, ...), for tables and listings.
    pub fn suffix(self) -> &'static str {
        match self {
            Cond::O => "o",
            Cond::No => "no",
            Cond::B => "b",
            Cond::Ae => "ae",
            Cond::E => "e",
            Cond::Ne => "ne",
            Cond::Be => "be",
            Cond::A => "a",
            Cond::S => "s",
            Cond::Ns => "ns",
            Cond::P => "p",
            Cond::Np => "np",
            Cond::L => "l",
            Cond::Ge => "ge",
            Cond::Le => "le",
            Cond::G => "g",
        }
    }
}
