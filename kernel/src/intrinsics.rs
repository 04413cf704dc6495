//! memcpy and the other symbols a freestanding link needs
//! (`arch::freestanding_intrinsics!`). Not probe-able (handlers use them).

arch::freestanding_intrinsics!();
