//! `kdbg`: the host shell (see the `shell` library).
fn main() {
    std::process::exit(shell::cli::main());
}
