//! `heap`: the allocator allocates, frees, aligns and says no when full.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;

use super::{Case, Suite, TestResult};
use crate::check;

pub static SUITE: Suite = Suite {
    name: "heap",
    cases: &[
        Case {
            name: "alloc_free_balance",
            run: alloc_free_balance,
        },
        Case {
            name: "alignment",
            run: alignment,
        },
        Case {
            name: "many_small",
            run: many_small,
        },
        Case {
            name: "exhaustion_is_null",
            run: exhaustion_is_null,
        },
    ],
};

fn alloc_free_balance() -> TestResult {
    let (used0, _) = crate::heap::usage();
    {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..100_000u64 {
            v.push(i);
        }
        let b = Box::new([7u8; 4096]);
        check!(
            v.iter().sum::<u64>() == 4_999_950_000,
            "vector contents wrong"
        );
        check!(b.iter().all(|&x| x == 7), "box contents wrong");
        let (used1, _) = crate::heap::usage();
        check!(
            used1 >= used0 + 800_000,
            "usage did not grow: {used0} -> {used1}"
        );
    }
    let (used2, _) = crate::heap::usage();
    check!(
        used2 == used0,
        "usage not back after freeing: {used0} -> {used2}"
    );
    Ok(())
}

fn alignment() -> TestResult {
    for align in [16usize, 64, 4096] {
        let layout = Layout::from_size_align(100, align)
            .map_err(|_| alloc::format!("bad layout {align}"))?;
        // SAFETY: layout has non-zero size; the pointer is freed with the same layout.
        let p = unsafe { alloc::alloc::alloc(layout) };
        check!(!p.is_null(), "allocation with alignment {align} failed");
        let ok = (p as usize).is_multiple_of(align);
        // SAFETY: p came from alloc with this layout.
        unsafe { alloc::alloc::dealloc(p, layout) };
        check!(ok, "pointer {p:p} not aligned to {align}");
    }
    Ok(())
}

fn many_small() -> TestResult {
    let boxes: Vec<Box<u32>> = (0..10_000u32).map(Box::new).collect();
    let sum: u64 = boxes.iter().map(|b| u64::from(**b)).sum();
    check!(sum == 49_995_000, "sum {sum}");
    Ok(())
}

fn exhaustion_is_null() -> TestResult {
    let layout = Layout::from_size_align(1 << 30, 16)
        .map_err(|_| alloc::string::String::from("bad layout"))?;
    // SAFETY: non-zero size; a null result is the expected outcome, a non-null one is freed.
    // black_box: otherwise the compiler may drop the unused allocation and
    // assume it succeeded.
    let p = core::hint::black_box(unsafe { alloc::alloc::alloc(layout) });
    if !p.is_null() {
        // SAFETY: p came from alloc with this layout.
        unsafe { alloc::alloc::dealloc(p, layout) };
        return Err("a 1 GiB allocation succeeded on a 32 MiB heap".into());
    }
    Ok(())
}
