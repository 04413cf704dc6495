//! This kernel as kdbg's host ([`stub::Host`]): CPU and task ids, the
//! tasks and their saved registers, kallsyms, what is text and what must
//! never be probed, the timer, and what gdb's `kill` does. Machine access
//! (fault-safe memory, text writes, slots, the trampoline, call-outs) is
//! the trait's default, from `arch`.
//!
//! The methods of this impl are unprobeable whatever their attributes (the
//! linker script puts every `<_ as probes::..>` instance in the noprobe
//! range); what they call is marked `#[noprobe]`.

use arch::TrapFrame;
use stub::{Host, Symbol, TaskInfo};

/// The reference kernel.
pub struct RefKernel;

/// The one instance, installed at boot.
pub static HOST: RefKernel = RefKernel;

impl Host for RefKernel {
    fn is_text(&self, addr: u64) -> bool {
        crate::blacklist::is_text(addr)
    }
    fn is_blacklisted(&self, addr: u64) -> bool {
        crate::blacklist::is_blacklisted(addr)
    }
    fn cpu_id(&self) -> usize {
        // Inline (one `str`): the probe hit path asks for it.
        arch::percpu::cpu_id()
    }
    fn cpu_count(&self) -> usize {
        crate::sched::cpu_count()
    }
    fn task_id(&self) -> u32 {
        crate::death::stub_crash_hook();
        crate::sched::current_id()
    }
    fn for_each_task(&self, f: &mut dyn FnMut(TaskInfo<'_>)) {
        crate::sched::try_for_each_task(&mut |t| {
            f(TaskInfo {
                id: t.id,
                name: t.name,
                state: t.state.name(),
                cpu: t.cpu,
            })
        });
    }
    fn ram_end(&self) -> Option<u64> {
        let end = crate::death::KDBG_RAM_END.load(core::sync::atomic::Ordering::Relaxed);
        (end != 0).then_some(end)
    }
    fn saved_frame(&self, task: u32) -> Option<TrapFrame> {
        crate::sched::saved_frame(task)
    }
    fn set_saved_frame(&self, task: u32, frame: &TrapFrame) -> bool {
        crate::sched::set_saved_frame(task, frame)
    }
    fn timer(&self) -> (u64, u64) {
        (crate::timer::ticks(), crate::timer::HZ)
    }
    fn symbol_at(&self, addr: u64) -> Option<Symbol> {
        crate::kallsyms::lookup(addr).map(crate::kallsyms::Symbol::host)
    }
    fn symbol_named(&self, name: &str) -> Option<Symbol> {
        crate::kallsyms::find(name).map(crate::kallsyms::Symbol::host)
    }
    fn fatal(&self, msg: &'static str) -> ! {
        arch::cpu::disable_interrupts();
        crate::println!("\nKERNEL FATAL (probe core): {msg}");
        crate::exit::qemu_exit(crate::exit::ExitCode::Fatal)
    }
    /// QEMU exits with the "success" status after a console line saying so
    /// (the kernel cannot be restarted in place).
    fn kill(&self) -> ! {
        // The stopped context may hold the console lock: bypass it.
        crate::console::emergency_write("kdbg: killed by the debugger\n");
        crate::exit::qemu_exit(crate::exit::ExitCode::Success)
    }
}

/// Installs the host into the probe core only (selftests and benches that
/// run without the stub).
pub fn init_probes() {
    probes::init(&HOST);
}

/// Starts the stub on COM2 and the probe core (the kernel's trap dispatcher
/// and COM2 interrupt must be set up; interrupts may still be off). Prints
/// why when there is no COM2 (the probe core runs anyway).
pub fn init() {
    probes::init(&HOST);
    if let Err(e) = stub::init(&HOST) {
        crate::println!("kdbg stub: not started ({e:?}): the machine has no COM2 (use -M pc)");
    }
    // The heap holds the probe tables and event rings the stub and the
    // probe core use while they serve: gdb may not watch it.
    stub::protect::protect_data(
        crate::heap::range(),
        "the kernel heap (probe tables, event rings)",
    );
}

/// Declares `pub static SUITE` of a probe-core selftest module whose cases
/// are `fn() -> Result<(), &'static str>`; each case makes sure the probe
/// core is initialised first.
#[macro_export]
macro_rules! probe_suite {
    ($suite:literal, $($case:ident),* $(,)?) => {
        pub static SUITE: $crate::selftest::Suite = $crate::selftest::Suite {
            name: $suite,
            cases: &[$($crate::selftest::Case {
                name: stringify!($case),
                run: || {
                    $crate::host::init_probes();
                    $case().map_err(alloc::string::String::from)
                },
            }),*],
        };
    };
}
