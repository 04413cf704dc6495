//! Differential tests: our `addr2line` output against binutils `addr2line`
//! on the same addresses, in the same order, with the same flags.
//!
//! Known, explained differences (none occur on the inputs below, but they
//! exist on a full vmlinux; see docs/design/symbols.md):
//! - binutils caches per-function decisions across queries, so a few of its
//!   answers depend on the order of the addresses (seen: 1 line in 20,000
//!   vmlinux addresses, `??:?` when asked alone, `common.c:319` after other
//!   queries). kdbg reproduces the name cache but not that line cache.

mod common;

use symbols::Elf;

const FLAG_SETS: [&[&str]; 7] = [
    &["-f", "-i"],
    &["-f", "-i", "-C"],
    &["-a", "-f"],
    &[],
    &["-p", "-f", "-i", "-s"],
    &["-i"],
    &["-a", "-p", "-i", "-C"],
];

fn compare(path: &std::path::Path, addrs: &[u64]) {
    let elf = Elf::open(path).expect("open");
    for flags in FLAG_SETS {
        let ours = common::ours(&elf, flags, addrs);
        let theirs = common::binutils(path, flags, addrs);
        let a: Vec<&str> = ours.lines().collect();
        let b: Vec<&str> = theirs.lines().collect();
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        assert!(
            a.len() == b.len() && first.is_none(),
            "{} with {flags:?}: outputs differ ({} vs {} lines); first difference at line {:?}: ours {:?} binutils {:?}",
            path.display(),
            a.len(),
            b.len(),
            first,
            first.map(|i| a[i]),
            first.map(|i| b[i]),
        );
    }
}

#[test]
fn every_address_of_the_c_fixture() {
    let path = common::fixture();
    let elf = Elf::open(path).expect("open");
    let text = common::text_range(&elf);
    // Every byte of .text, plus addresses outside any section and in data.
    let mut addrs: Vec<u64> = (text.start..text.end).collect();
    addrs.extend([0, 1, text.start - 1, text.end, text.end + 0x1000, u64::MAX]);
    compare(path, &addrs);
}

#[test]
fn sampled_addresses_of_the_reference_kernel() {
    let path = common::kernel();
    let elf = Elf::open(&path).expect("open kernel");
    let text = common::text_range(&elf);
    let addrs = common::sample(text, 4000, 7);
    compare(&path, &addrs);
}

#[test]
fn the_c_fixture_without_dwarf() {
    // binutils falls back to the symbol table and STT_FILE names.
    let path = common::objcopy("prog-nodebug", &["--strip-debug"]);
    let elf = Elf::open(&path).expect("open");
    let text = common::text_range(&elf);
    let addrs: Vec<u64> = (text.start..text.end).step_by(3).collect();
    compare(&path, &addrs);
}

/// Optional: a real vmlinux (set KDBG_VMLINUX), 3,000 sampled text addresses.
#[test]
fn sampled_addresses_of_a_vmlinux_if_given() {
    let Some(path) = std::env::var_os("KDBG_VMLINUX") else {
        eprintln!(
            "note: KDBG_VMLINUX not set; skipping the vmlinux comparison (the kernel and fixture comparisons ran)"
        );
        return;
    };
    let path = std::path::PathBuf::from(path);
    let elf = Elf::open(&path).expect("open vmlinux");
    let text = common::text_range(&elf);
    let addrs = common::sample(text, 3000, 11);
    let ours = common::ours(&elf, &["-f", "-i"], &addrs);
    let theirs = common::binutils(&path, &["-f", "-i"], &addrs);
    let diffs = ours
        .lines()
        .zip(theirs.lines())
        .filter(|(a, b)| a != b)
        .count();
    // Order-dependent binutils answers (see the module doc): allow 1 in 1,000.
    assert!(diffs <= 3, "{diffs} differing lines");
}
