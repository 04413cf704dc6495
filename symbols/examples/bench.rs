//! Runs the xtask symbols benchmark without xtask:
//! `cargo run --release -p symbols --example bench -- --elf PATH`.

#[path = "../../xtask/src/bench_symbols.rs"]
mod bench_symbols;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bench_symbols::run(&args)
}
