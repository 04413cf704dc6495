//! Workloads for expression evaluation (`print`, `info args`, the gdb
//! differential): a Rust enum, `Option`, a slice, a `&str`, a struct by
//! pointer, a 50-member struct (the `print` benchmark), and statics with
//! known contents (a C-like enum, arrays, a tuple, a char, a float).
//! `inspect_worker`'s calls go through [`call_inspect`] from the math worker.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

/// A data-carrying enum (DWARF variant part).
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Empty,
    Circle(u32),
    Rect { w: u32, h: u32 },
}

/// A C-like enum.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Red = 0,
    Green = 5,
    Blue = 6,
}

/// A struct with an array, a nested struct, a tuple and a pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub id: u32,
    pub color: Color,
    pub ratio: f64,
    pub letter: char,
    pub values: [u16; 4],
    pub pair: (i32, u8),
    pub next: *const Sample,
}

// SAFETY: Sample holds a raw pointer to immutable statics only.
unsafe impl Sync for Sample {}

/// Fifty members of mixed integer types: what the `print` benchmark prints.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Wide {
    pub f00: u64,
    pub f01: u32,
    pub f02: u16,
    pub f03: u8,
    pub f04: i64,
    pub f05: i32,
    pub f06: i16,
    pub f07: i8,
    pub f08: bool,
    pub f09: u64,
    pub f10: u64,
    pub f11: u32,
    pub f12: u16,
    pub f13: u8,
    pub f14: i64,
    pub f15: i32,
    pub f16: i16,
    pub f17: i8,
    pub f18: bool,
    pub f19: u64,
    pub f20: u64,
    pub f21: u32,
    pub f22: u16,
    pub f23: u8,
    pub f24: i64,
    pub f25: i32,
    pub f26: i16,
    pub f27: i8,
    pub f28: bool,
    pub f29: u64,
    pub f30: u64,
    pub f31: u32,
    pub f32: u16,
    pub f33: u8,
    pub f34: i64,
    pub f35: i32,
    pub f36: i16,
    pub f37: i8,
    pub f38: bool,
    pub f39: u64,
    pub f40: u64,
    pub f41: u32,
    pub f42: u16,
    pub f43: u8,
    pub f44: i64,
    pub f45: i32,
    pub f46: i16,
    pub f47: i8,
    pub f48: bool,
    pub f49: u64,
}

#[used]
pub static WIDE: Wide = Wide {
    f00: 5,
    f01: 42,
    f02: 79,
    f03: 116,
    f04: -13,
    f05: -16,
    f06: -19,
    f07: -22,
    f08: true,
    f09: 338,
    f10: 375,
    f11: 412,
    f12: 449,
    f13: 230,
    f14: -43,
    f15: -46,
    f16: -49,
    f17: -52,
    f18: false,
    f19: 708,
    f20: 745,
    f21: 782,
    f22: 819,
    f23: 88,
    f24: -73,
    f25: -76,
    f26: -79,
    f27: -82,
    f28: true,
    f29: 1078,
    f30: 1115,
    f31: 1152,
    f32: 1189,
    f33: 202,
    f34: -103,
    f35: -106,
    f36: -109,
    f37: -112,
    f38: false,
    f39: 1448,
    f40: 1485,
    f41: 1522,
    f42: 1559,
    f43: 60,
    f44: -133,
    f45: -136,
    f46: -139,
    f47: -42,
    f48: true,
    f49: 1818,
};

#[used]
pub static SHAPES: [Shape; 3] = [Shape::Empty, Shape::Circle(7), Shape::Rect { w: 3, h: 4 }];
#[used]
pub static MAYBE: Option<u32> = Some(42);
#[used]
pub static NOTHING: Option<u32> = None;
#[used]
pub static GREETING: &str = "hello, kdbg";
#[used]
pub static PRIMES: [u32; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
#[used]
pub static ZEROS: [u8; 16] = [0; 16];
#[used]
pub static GRID: [[i16; 3]; 2] = [[1, -2, 3], [-4, 5, -6]];
#[used]
pub static FAVORITE: Color = Color::Green;
#[used]
pub static SAMPLE_TAIL: Sample = Sample {
    id: 2,
    color: Color::Blue,
    ratio: -0.25,
    letter: 'z',
    values: [9, 8, 7, 6],
    pair: (-1, 255),
    next: core::ptr::null(),
};
#[used]
pub static SAMPLE: Sample = Sample {
    id: 1,
    color: Color::Red,
    ratio: 1.5,
    letter: 'k',
    values: [10, 20, 30, 40],
    pair: (-7, 3),
    next: &SAMPLE_TAIL,
};

/// Calls of [`call_inspect`] since boot.
pub static INSPECT_CALLS: AtomicU64 = AtomicU64::new(0);

/// Area of a shape (an enum by reference), scaled by an `Option`.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn shape_area(shape: &Shape, scale: Option<u32>) -> u64 {
    let a = match *shape {
        Shape::Empty => 0,
        Shape::Circle(r) => 3 * u64::from(r) * u64::from(r),
        Shape::Rect { w, h } => u64::from(w) * u64::from(h),
    };
    a * u64::from(scale.unwrap_or(1))
}

/// Sum of a slice.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn sum_slice(values: &[u32]) -> u64 {
    values.iter().map(|v| u64::from(*v)).sum()
}

/// Length of a `&str` plus its first byte.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn greet(name: &str, times: u32) -> usize {
    name.len() * times as usize + usize::from(name.as_bytes().first().copied().unwrap_or(0))
}

/// Reads a 50-member struct through a pointer.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn wide_checksum(w: &Wide) -> u64 {
    w.f00 ^ u64::from(w.f01) ^ u64::from(w.f02) ^ u64::from(w.f03) ^ (w.f04 as u64) ^ w.f49
}

/// Follows a `Sample` list.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn sample_walk(s: &Sample) -> u32 {
    let mut n = s.id;
    let mut p = s.next;
    // SAFETY: `next` is null or points to a static Sample.
    while let Some(next) = unsafe { p.as_ref() } {
        n += next.id;
        p = next.next;
    }
    n
}

/// One round of the inspection workloads with varying arguments.
pub fn call_inspect(i: u64) -> u64 {
    let shape = match i % 3 {
        0 => Shape::Empty,
        1 => Shape::Circle((i % 10) as u32),
        _ => Shape::Rect {
            w: (i % 5) as u32,
            h: 2,
        },
    };
    let scale = if i.is_multiple_of(2) {
        Some((i % 4) as u32)
    } else {
        None
    };
    let values = [i as u32, 1, 2, 3, 4];
    let n = (i % 5) as usize + 1;
    let mut acc = black_box(shape_area(black_box(&shape), black_box(scale)));
    acc += sum_slice(black_box(values.get(..n).unwrap_or(&[])));
    acc += black_box(greet(black_box(GREETING), black_box((i % 3) as u32))) as u64;
    acc += black_box(wide_checksum(black_box(&WIDE)));
    acc += u64::from(sample_walk(black_box(&SAMPLE)));
    acc += sum_slice(black_box(&PRIMES));
    if let Some(sh) = SHAPES.get((i % 3) as usize) {
        acc += black_box(shape_area(black_box(sh), *black_box(&MAYBE)));
    }
    acc += black_box(shape_area(
        black_box(&Shape::Circle(1)),
        *black_box(&NOTHING),
    ));
    black_box(&ZEROS);
    black_box(&GRID);
    black_box(&FAVORITE);
    INSPECT_CALLS.fetch_add(1, Ordering::Relaxed);
    black_box(acc)
}
