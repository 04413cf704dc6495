//! `cargo run -p symbols --example addr2line -- -e ELF -f -i ADDR...`: the
//! same code as `kdbg addr2line`, runnable without the shell.

#[path = "../../shell/src/addr2line.rs"]
mod addr2line;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(addr2line::run(&args)?)
}
