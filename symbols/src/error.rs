//! Errors a user can cause (and understand).

use std::path::PathBuf;

/// Everything that can go wrong while loading or querying an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or mapped.
    #[error(
        "cannot open {path}: {error}; check the path (the kernel ELF is built by `cargo xtask build`)"
    )]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file is not an ELF file at all.
    #[error(
        "{path} is not an ELF file ({detail}); pass the kernel image with symbols (e.g. vmlinux), not a compressed bzImage or a text file"
    )]
    NotElf {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        detail: String,
    },
    /// An ELF file for another machine.
    #[error(
        "{path} is an ELF file for {machine}, but kdbg only debugs x86_64 kernels; pass an x86_64 (EM_X86_64, 64-bit) ELF"
    )]
    NotX86_64 {
        /// The file.
        path: PathBuf,
        /// The machine the file is for.
        machine: String,
    },
    /// The query needs DWARF and the file has none (the symbol table still works).
    #[error(
        "{path} has no DWARF debug info (.debug_info); only the symbol table is available: rebuild with debug info (gcc -g, Cargo `debug = true`, CONFIG_DEBUG_INFO)"
    )]
    NoDwarf {
        /// The file.
        path: PathBuf,
    },
    /// The DWARF data could not be parsed.
    #[error(
        "malformed DWARF in {path}: {error}; the file may be truncated or from an unsupported producer"
    )]
    Dwarf {
        /// The file.
        path: PathBuf,
        /// What gimli reported.
        error: gimli::Error,
    },
    /// No symbol with this name.
    #[error(
        "no symbol named `{0}`; use the completion (prefix search) to see the names that exist"
    )]
    NoSuchSymbol(String),
    /// Nothing known about code at this address.
    #[error("no function contains address {0:#x}; is it in the kernel's text?")]
    NoFunction(u64),
    /// No line table rows for a `file:line`.
    #[error(
        "no code for {file}:{line}: no line at or after it has code (the last line with code is {last})"
    )]
    NoSuchLine {
        /// The file name (suffix) asked for.
        file: String,
        /// The line asked for.
        line: u32,
        /// The last line of the file that has code.
        last: u32,
    },
    /// No unit's line table names a file matching the suffix.
    #[error(
        "no source file `{0}` in the line tables (give a path suffix, e.g. `workloads/mod.rs`)"
    )]
    NoSuchFile(String),
    /// A type handle that does not point at a type.
    #[error("no type at .debug_info offset {0:#x}")]
    NoSuchType(u64),
}

impl Error {
    pub(crate) fn dwarf(path: &std::path::Path, source: gimli::Error) -> Self {
        Error::Dwarf {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
