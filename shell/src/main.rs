//! `kdbg`: the host shell.
fn main() {
    eprintln!("kdbg: not built yet");
    std::process::exit(2);
}
