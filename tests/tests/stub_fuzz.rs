//! The protocol fuzzer on the real stub (see `tests::fuzz`): a few thousand
//! inputs with a fixed seed in the suite; `cargo xtask fuzz --seed S
//! --inputs N --reconnects R` runs a longer one through this same test
//! (`KDBG_FUZZ_*`), and `cargo xtask fuzz --replay FILE` replays a saved
//! failure (`KDBG_FUZZ_REPLAY`).

use tests::fuzz;

#[test]
fn the_stub_survives_generated_hostile_input_and_reconnects() {
    if let Ok(path) = std::env::var("KDBG_FUZZ_REPLAY") {
        let inputs = fuzz::load(std::path::Path::new(&path)).expect("read the replay file");
        match fuzz::replay(&inputs) {
            Ok(()) => println!("replay of {} inputs: no failure", inputs.len()),
            Err(e) => panic!("replay of {path} fails: {e}"),
        }
        return;
    }
    let cfg = fuzz::config_from_env(3000, 12);
    match fuzz::run(&cfg, true) {
        Ok(report) => {
            println!("fuzz seed {}: {report}", cfg.seed);
            assert_eq!(report.inputs, cfg.inputs);
            assert_eq!(report.reconnects, cfg.reconnects);
            assert!(report.naks > 0 && report.packets > 0, "{report}");
        }
        Err(e) => panic!("fuzz seed {}: {e}", cfg.seed),
    }
}
