//! The loader: memory-maps the file, checks it, and keeps lazily built indexes.

use std::cell::{Cell, OnceCell, RefCell};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use object::{Object, ObjectSection};

use crate::dwarf::DwarfIndex;
use crate::error::{Error, Result};
use crate::slide::Slide;
use crate::symtab::SymbolTable;

/// The gimli reader used everywhere: slices of the mapped file (or of a
/// decompressed copy), little-endian (x86_64 only), with the image's slide
/// added to every address read (see `slide.rs`).
pub(crate) type Reader =
    gimli::RelocateReader<gimli::EndianSlice<'static, gimli::LittleEndian>, Slide>;

/// An opened ELF file. Nothing is parsed until a query needs it; each index is
/// built once and kept.
///
/// `Elf` is `Send` but not `Sync` (its caches use cells): share it across
/// threads behind a `Mutex`.
pub struct Elf {
    // Field order matters: everything borrowing the mapping drops first.
    pub(crate) state: State,
    _map: Mmap,
}

pub(crate) struct State {
    pub(crate) path: PathBuf,
    pub(crate) object: object::read::elf::ElfFile64<'static, object::LittleEndian>,
    /// Decompressed sections. Boxed slices never move, so `&'static [u8]`
    /// handed out from them stay valid until `State` drops.
    arena: RefCell<Vec<Box<[u8]>>>,
    /// The slide in force (`Elf::set_slide`).
    pub(crate) slide: Cell<Slide>,
    /// The indexes built for each slide used so far (usually one or two:
    /// the link addresses, then a KASLR kernel's). Entries are boxed and
    /// never removed, so references into them live as long as `State`.
    // The boxes are the point: a push may move the vector's storage, never
    // a box's contents.
    #[allow(clippy::vec_box)]
    slid: RefCell<Vec<Box<Slid>>>,
    notice_given: Cell<bool>,
    /// `set substitute-path` rules (FROM, TO), first match wins.
    pub(crate) paths: RefCell<Vec<(String, String)>>,
    /// The rules found for a Linux vmlinux (see `Elf::auto_substitute_paths`).
    pub(crate) auto_path: OnceCell<Vec<(String, String)>>,
}

/// What depends on the slide: built lazily, per slide.
struct Slid {
    slide: Slide,
    symtab: OnceCell<SymbolTable>,
    dwarf: OnceCell<Option<std::result::Result<DwarfIndex, gimli::Error>>>,
    cfi: OnceCell<crate::cfi::Cfi>,
}

// SAFETY-relevant note: `State` holds references into `_map` with a `'static`
// lifetime that is never handed out beyond `&self` borrows of `Elf`.

impl Elf {
    /// Maps `path` and checks that it is a 64-bit x86_64 ELF file.
    ///
    /// Errors: [`Error::Io`] (missing/unreadable), [`Error::NotElf`],
    /// [`Error::NotX86_64`]. A file without DWARF opens fine; DWARF queries
    /// then return [`Error::NoDwarf`] and [`Elf::take_notice`] says so once.
    pub fn open(path: impl AsRef<Path>) -> Result<Elf> {
        let path = path.as_ref().to_path_buf();
        let io = |error| Error::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the mapping is private and read-only. If another process
        // truncates the file while we run, reads fault; that is the usual
        // contract of every mmap-based ELF reader (gdb, addr2line).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        // SAFETY: the slice points into `map`, which `Elf` owns and drops after
        // `state` (field order), and a mapping's address never changes when
        // the `Mmap` value moves.
        let data: &'static [u8] = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        check_header(&path, data)?;
        let object =
            object::read::elf::ElfFile64::<object::LittleEndian>::parse(data).map_err(|e| {
                Error::NotElf {
                    path: path.clone(),
                    detail: e.to_string(),
                }
            })?;
        Ok(Elf {
            state: State {
                path,
                object,
                arena: RefCell::new(Vec::new()),
                slide: Cell::new(Slide::default()),
                slid: RefCell::new(Vec::new()),
                notice_given: Cell::new(false),
                paths: RefCell::new(Vec::new()),
                auto_path: OnceCell::new(),
            },
            _map: map,
        })
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.state.path
    }

    /// True if the file has `.debug_info` (lines, inlines, parameters, types).
    pub fn has_dwarf(&self) -> bool {
        self.state
            .object
            .section_by_name(".debug_info")
            .is_some_and(|s| s.size() > 0)
    }

    /// Once per file: a message for the user if queries are degraded (no
    /// DWARF: only the symbol table answers). `None` afterwards, and always
    /// `None` for a file with DWARF.
    pub fn take_notice(&self) -> Option<String> {
        if self.has_dwarf() || self.state.notice_given.replace(true) {
            return None;
        }
        Some(format!(
            "note: {} has no DWARF debug info; using the symbol table only (no lines, inlines, parameters or types)",
            self.state.path.display()
        ))
    }

    /// The start address and end (exclusive) of the section named `name`
    /// (runtime addresses: the slide applied).
    pub fn section_range(&self, name: &str) -> Option<std::ops::Range<u64>> {
        let s = self.state.object.section_by_name(name)?;
        let slide = self.state.slide.get();
        Some(slide.to_runtime(s.address())..slide.to_runtime(s.address() + s.size()))
    }

    /// Moves the image by `delta` bytes: from now on every address this
    /// file hands out or takes is a runtime address of an image loaded
    /// `delta` above its link addresses (a KASLR kernel's slide; 0 undoes
    /// it). Only addresses inside the image move (the allocated sections
    /// at non-zero addresses): offsets such as Linux's per-CPU variables
    /// (`.data..percpu`, linked at 0) stay. The symbol table, DWARF and CFI
    /// are indexed again for a new slide, lazily (each slide's indexes are
    /// kept: going back to one is free).
    pub fn set_slide(&self, delta: u64) {
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for s in self.state.object.sections() {
            use object::read::elf::SectionHeader;
            // SHF_ALLOC: the section occupies memory at run time.
            let alloc = s.elf_section_header().sh_flags(object::LittleEndian)
                & object::elf::SHF_ALLOC
                != object::elf::SectionFlags(0);
            if alloc && s.address() != 0 {
                lo = lo.min(s.address());
                hi = hi.max(s.address() + s.size());
            }
        }
        let slide = if delta == 0 || lo > hi {
            Slide::default()
        } else {
            Slide { lo, hi, delta }
        };
        self.state.slide.set(slide);
    }

    /// The slide in force (0 unless [`Elf::set_slide`] moved the image).
    pub fn slide(&self) -> u64 {
        self.state.slide.get().delta
    }
}

impl std::fmt::Debug for Elf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elf")
            .field("path", &self.state.path)
            .finish_non_exhaustive()
    }
}

fn check_header(path: &Path, data: &[u8]) -> Result<()> {
    let not_elf = |detail: &str| Error::NotElf {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    if data.len() < 64 {
        return Err(not_elf("file is shorter than an ELF header"));
    }
    if data[..4] != *b"\x7fELF" {
        return Err(not_elf("no \\x7fELF magic"));
    }
    let machine = u16::from_le_bytes([data[18], data[19]]);
    let class = data[4];
    if class != 2 || data[5] != 1 || machine != 62 {
        let name = match (class, machine) {
            (_, 3) => "i386".to_string(),
            (_, 40) => "ARM".to_string(),
            (_, 183) => "AArch64".to_string(),
            (_, 243) => "RISC-V".to_string(),
            (1, 62) => "x86_64 with 32-bit class (x32)".to_string(),
            (_, 62) => "x86_64 but big-endian".to_string(),
            (c, m) => format!("machine {m} (ELF class {c})"),
        };
        return Err(Error::NotX86_64 {
            path: path.to_path_buf(),
            machine: name,
        });
    }
    Ok(())
}

impl State {
    /// The (decompressed) contents of a section, or an empty slice.
    pub(crate) fn section_data(&self, name: &str) -> &'static [u8] {
        let Some(section) = self.object.section_by_name(name) else {
            return &[];
        };
        match section.uncompressed_data() {
            Ok(std::borrow::Cow::Borrowed(b)) => b,
            Ok(std::borrow::Cow::Owned(v)) => {
                let boxed = v.into_boxed_slice();
                // SAFETY: the box is kept in `arena` until `State` drops and is
                // never mutated or removed; its heap address is stable.
                let slice: &'static [u8] =
                    unsafe { std::slice::from_raw_parts(boxed.as_ptr(), boxed.len()) };
                self.arena.borrow_mut().push(boxed);
                slice
            }
            Err(_) => &[],
        }
    }

    /// The indexes of the slide in force.
    fn slid(&self) -> &Slid {
        let slide = self.slide.get();
        let mut all = self.slid.borrow_mut();
        let i = match all.iter().position(|s| s.slide == slide) {
            Some(i) => i,
            None => {
                all.push(Box::new(Slid {
                    slide,
                    symtab: OnceCell::new(),
                    dwarf: OnceCell::new(),
                    cfi: OnceCell::new(),
                }));
                all.len() - 1
            }
        };
        let entry: *const Slid = &*all[i];
        // SAFETY: the entry is boxed and kept in `slid` until `State` drops:
        // it is never removed or replaced (only new boxes are pushed), so
        // its heap address is stable and valid for as long as `&self`.
        unsafe { &*entry }
    }

    pub(crate) fn symtab(&self) -> &SymbolTable {
        let slid = self.slid();
        slid.symtab
            .get_or_init(|| SymbolTable::build(&self.object, slid.slide))
    }

    pub(crate) fn cfi(&self) -> &crate::cfi::Cfi {
        let slid = self.slid();
        slid.cfi
            .get_or_init(|| crate::cfi::Cfi::build(self, slid.slide))
    }

    /// The DWARF index, or `NoDwarf`.
    pub(crate) fn dwarf(&self) -> Result<&DwarfIndex> {
        let slid = self.slid();
        let d = slid.dwarf.get_or_init(|| {
            let has = self
                .object
                .section_by_name(".debug_info")
                .is_some_and(|s| s.size() > 0);
            if has {
                Some(DwarfIndex::load(self, slid.slide))
            } else {
                None
            }
        });
        match d {
            Some(Ok(index)) => Ok(index),
            Some(Err(e)) => Err(Error::dwarf(&self.path, *e)),
            None => Err(Error::NoDwarf {
                path: self.path.clone(),
            }),
        }
    }
}
