//! Support for the end-to-end tests: QEMU, the kdbg binary, gdb.
