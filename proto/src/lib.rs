//! What the stub and the shell both speak: the monitor command grammar, the
//! fetch program of capture probes, and the event record encoding.
#![cfg_attr(not(test), no_std)]
