//! Link arguments for the example kernel's image (its own linker script).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        format!("-T{dir}/linker.ld"),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,norelro".into(),
        "-Wl,-z,max-page-size=4096".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
