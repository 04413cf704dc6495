//! Name forms: mangled, demangled with and without the Rust hash.

use std::borrow::Cow;

/// Demangles Rust (legacy and v0) names without the hash, like binutils
/// `-C` does; other names come back unchanged.
pub fn demangle(name: &str) -> Cow<'_, str> {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => Cow::Owned(format!("{d:#}")),
        Err(_) => Cow::Borrowed(name),
    }
}

/// The other names a symbol answers to: the demangled path without hash and
/// with hash (Rust); nothing for C names.
pub(crate) fn alternate_keys(name: &str) -> Vec<String> {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => {
            let short = format!("{d:#}");
            let long = format!("{d}");
            if short == long {
                vec![short]
            } else {
                vec![short, long]
            }
        }
        Err(_) => Vec::new(),
    }
}
