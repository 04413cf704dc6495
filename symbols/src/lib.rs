//! ELF and DWARF for the kdbg shell.
