//! `cargo run -p symbols --example describe -- ELF NAME...`: prints what the
//! library knows about functions (bounds, parameters with types and entry
//! locations, return type, struct fields behind pointer parameters).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, names)) = args.split_first() else {
        return Err("usage: describe ELF NAME...".into());
    };
    let elf = symbols::Elf::open(path)?;
    if let Some(n) = elf.take_notice() {
        eprintln!("{n}");
    }
    for name in names {
        for f in elf.functions_named(name)? {
            println!(
                "{} @ {:#x}..{:?} -> {} (dwarf: {})",
                f.name, f.entry, f.end, f.return_type_name, f.has_dwarf
            );
            for p in &f.params {
                println!(
                    "  {}: {} in {} ({:?})",
                    p.name, p.type_name, p.location, p.source
                );
                if let Some(t) = p.ty {
                    let t = elf.resolve(t)?;
                    if let symbols::TypeKind::Pointer { pointee: Some(pt) } = t.kind {
                        let s = elf.resolve(pt)?;
                        for fl in s.fields() {
                            println!(
                                "      +{:<3} {:?}: {}",
                                fl.offset,
                                fl.name,
                                elf.type_name(fl.ty)
                            );
                        }
                    }
                }
            }
            for fr in elf.frames(f.entry)? {
                println!(
                    "  frame {:?} at {:?}",
                    fr.demangled,
                    fr.location.map(|l| l.to_string())
                );
            }
        }
    }
    Ok(())
}
