//! `lx ...`: Linux awareness when the symbols are a Linux vmlinux, as gdb's
//! `lx-*` scripts or drgn, without Python and without hard-coded offsets:
//! every offset and size comes from the vmlinux's DWARF through the
//! expression evaluator's type machinery (`Evaluator::member` on a struct
//! placed at address 0 gives a member's offset and type).
//!
//! - `lx tasks` (`lx ps`): the task list from `init_task.tasks`.
//! - `lx dmesg`: the printk ring buffer (`prb`, 6.1's lockless
//!   `printk_ringbuffer`: descriptors, infos, text data ring).
//! - `lx lsmod`: the `modules` list.
//! - `lx current`: per-CPU `current_task` through `__per_cpu_offset`; the
//!   CPU whose per-CPU base is the live `gs_base` (or `k_gs_base` in user
//!   mode) is marked; `$lx_current` is set to that task.

use anyhow::{Result, bail};
use expr::{Error, Evaluator, Loc, Span, Ty, Value};
use serde::Serialize;

use crate::cmd::Invocation;
use crate::output::Output;
use crate::session::Session;

const SP: Span = Span { start: 0, end: 0 };

/// One task of `lx tasks`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LxTask {
    /// Address of the `task_struct`.
    pub task: u64,
    pub pid: i64,
    pub tgid: i64,
    pub comm: String,
    /// ps's letter: R S D T t X Z P I.
    pub state: String,
    pub cpu: u64,
    /// A kernel thread (no `mm`).
    pub kthread: bool,
}

/// One printk record of `lx dmesg`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LxLog {
    pub seq: u64,
    pub ts_nsec: u64,
    pub level: u8,
    pub text: String,
}

/// One module of `lx lsmod`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LxModule {
    pub module: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub state: u64,
}

/// One CPU of `lx current`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LxCpu {
    pub cpu: u64,
    /// `__per_cpu_offset[cpu]`.
    pub per_cpu_offset: u64,
    /// The CPU the stub's registers belong to (its gs base is this CPU's).
    pub this_cpu: bool,
    pub task: LxTask,
}

/// What `lx` answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum LxView {
    Tasks { tasks: Vec<LxTask> },
    Dmesg { records: Vec<LxLog> },
    Lsmod { modules: Vec<LxModule> },
    Current { cpus: Vec<LxCpu> },
    Kaslr { slide: u64 },
}

/// Alignment of the kernel's virtual KASLR slide (CONFIG_PHYSICAL_ALIGN's
/// smallest value on x86_64) and the range it is chosen in (the 1 GiB
/// kernel image area).
const SLIDE_ALIGN: u64 = 0x20_0000;
const SLIDE_MAX: u64 = 1 << 30;

/// The KASLR slide of a Linux kernel: where `linux_banner`'s bytes (as the
/// vmlinux holds them) are at runtime. Slide 0 is tried first, then the
/// slides that put `pc` inside the vmlinux's text, then every aligned slide
/// of the kernel image area (an unmapped candidate costs one refused read).
/// `None`: not a vmlinux, or the banner is nowhere (or not at slide 0 when
/// `only_zero`).
pub fn find_slide(
    elf: &symbols::Elf,
    pc: Option<u64>,
    read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
    only_zero: bool,
) -> Option<u64> {
    let banner = elf.lookup("linux_banner").into_iter().next()?.address;
    let want = elf.read_at(banner, 32)?.to_vec();
    if !want.starts_with(b"Linux version ") {
        return None;
    }
    let mut check =
        |slide: u64| read(banner.wrapping_add(slide), want.len()).is_some_and(|b| b == want);
    if check(0) {
        return Some(0);
    }
    if only_zero {
        return None;
    }
    let text = elf.lookup("_text").into_iter().next().map(|s| s.address);
    let etext = elf.lookup("_etext").into_iter().next().map(|s| s.address);
    let steps = SLIDE_MAX / SLIDE_ALIGN;
    if let (Some(pc), Some(t), Some(e)) = (pc, text, etext) {
        for k in 1..steps {
            let s = k * SLIDE_ALIGN;
            let link = pc.wrapping_sub(s);
            if link >= t && link < e && check(s) {
                return Some(s);
            }
        }
    }
    (1..steps).map(|k| k * SLIDE_ALIGN).find(|&s| check(s))
}

/// At connect to a foreign stub (the guest stopped): finds the KASLR slide
/// of a Linux kernel and moves the symbols by it (`Elf::set_slide`: from
/// then on every symbolic address, `break`, `print`, `bt`, `list`, `x/i`,
/// is the running kernel's).
pub fn on_connect(s: &mut Session) {
    let pc = {
        let Ok(elf) = s.shared.elf() else {
            return;
        };
        // Detection compares link addresses with the guest's memory.
        elf.set_slide(0);
        if elf.lookup("linux_banner").is_empty() {
            return;
        }
        let Ok(mut c) = s.client() else {
            return;
        };
        let mut read = |a: u64, n: usize| c.read_memory(a, n).ok();
        // Slide 0 (nokaslr, or not relocated): one read, no registers.
        if find_slide(&elf, None, &mut |a, n| read(a, n), true) == Some(0) {
            return;
        }
        None::<u64>
    };
    let pc = pc.or_else(|| s.registers().ok().map(|r| r.rip));
    let Ok(elf) = s.shared.elf() else {
        return;
    };
    let Ok(mut c) = s.client() else {
        return;
    };
    let mut read = |a: u64, n: usize| c.read_memory(a, n).ok();
    match find_slide(&elf, pc, &mut read, false) {
        Some(0) => {}
        Some(slide) => {
            elf.set_slide(slide);
            eprintln!(
                "kdbg: KASLR: this kernel runs {slide:#x} above the vmlinux's addresses \
                 (linux_banner found there); symbols are relocated by it"
            );
        }
        None => eprintln!(
            "kdbg: warning: linux_banner is not where the vmlinux puts it, nor at any KASLR \
             slide: are these the running kernel's symbols?"
        ),
    }
}

/// `lx tasks|ps|dmesg|lsmod|current`.
pub fn lx(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let what = inv.args.first().map(String::as_str).unwrap_or("");
    if inv.args.len() > 1 {
        bail!("usage: lx tasks|dmesg|lsmod|current|kaslr");
    }
    let elf = s.shared.elf()?;
    if elf.lookup("linux_banner").is_empty() || elf.lookup("init_task").is_empty() {
        bail!("lx: the symbols are not a Linux vmlinux (no linux_banner/init_task)");
    }
    drop(elf);
    let lx = match what {
        "tasks" | "ps" => LxView::Tasks {
            tasks: eval(s, "lx tasks", tasks)?,
        },
        "dmesg" => LxView::Dmesg {
            records: eval(s, "lx dmesg", dmesg)?,
        },
        "lsmod" => LxView::Lsmod {
            modules: eval(s, "lx lsmod", lsmod)?,
        },
        "current" => {
            let regs = s.registers()?;
            let k_gs = regs
                .system
                .iter()
                .find(|(n, _)| n == "k_gs_base")
                .map(|(_, v)| *v);
            let gs = [regs.gs_base, k_gs];
            let cpus = eval(s, "lx current", |ev| current(ev, &gs))?;
            LxView::Current { cpus }
        }
        "kaslr" => LxView::Kaslr {
            slide: s.shared.elf()?.slide(),
        },
        other => bail!("lx: unknown '{other}': lx tasks|ps|dmesg|lsmod|current|kaslr"),
    };
    Ok(Output::Linux { lx })
}

fn eval<T>(
    s: &Session,
    input: &str,
    f: impl FnOnce(&mut Evaluator<'_>) -> Result<T, Error>,
) -> Result<T> {
    crate::exec::inspect::with_eval(s, f, input)
}

/// The runtime address of a symbol of the vmlinux (the symbols carry the
/// KASLR slide; per-CPU symbols are offsets and never slid).
fn sym(ev: &Evaluator<'_>, name: &str) -> Result<u64, Error> {
    ev.elf
        .lookup(name)
        .into_iter()
        .next()
        .map(|s| s.address)
        .ok_or_else(|| Error::msg(format!("no symbol {name} in the vmlinux")))
}

/// A struct type by name. First through a parameter `struct NAME *` of a
/// known function (its unit alone is read: milliseconds), then the
/// name index of every type (seconds on a vmlinux).
fn ty(ev: &Evaluator<'_>, name: &str) -> Result<Ty, Error> {
    let via: &[(&str, &str)] = match name {
        "struct task_struct" => &[("wake_up_process", "p"), ("sched_fork", "p")],
        "struct module" => &[("module_put", "module"), ("__module_get", "module")],
        "struct printk_ringbuffer" => &[("prb_read_valid", "rb"), ("prb_first_valid_seq", "rb")],
        _ => &[],
    };
    for (func, param) in via {
        let Some(s) = ev.elf.lookup(func).into_iter().next() else {
            continue;
        };
        let Ok(f) = ev.elf.function_at(s.address) else {
            continue;
        };
        let Some(p) = f.params.iter().find(|p| p.name == *param) else {
            continue;
        };
        if let Ty::Ptr { pointee, .. } = Ty::from_dwarf(ev.elf, p.ty)
            && let Ty::Agg { size, name: n, .. } = pointee.as_ref()
            && *size > 0
            && n == name
        {
            return Ok(*pointee);
        }
    }
    Ty::from_name(ev.elf, name)
}

/// The pointee type of member `path` of `t` (a pointer).
fn pointee(ev: &mut Evaluator<'_>, t: &Ty, path: &str, name: &str) -> Result<Ty, Error> {
    match field(ev, t, path) {
        Ok((_, Ty::Ptr { pointee, .. })) if pointee.size() > 0 => Ok(*pointee),
        _ => ty(ev, name),
    }
}

/// Offset and type of `path` (`a.b.c`) in `t`.
fn field(ev: &mut Evaluator<'_>, t: &Ty, path: &str) -> Result<(u64, Ty), Error> {
    let mut v = Value {
        ty: t.clone(),
        loc: Loc::Mem(0),
    };
    for part in path.split('.') {
        v = ev.member(v, part, SP)?;
    }
    match v.loc {
        Loc::Mem(a) => Ok((a, v.ty)),
        _ => Err(Error::msg(format!("{path} is a bit field"))),
    }
}

/// The first of `paths` that exists.
fn field_any(ev: &mut Evaluator<'_>, t: &Ty, paths: &[&str]) -> Result<(u64, Ty), Error> {
    let mut last = None;
    for p in paths {
        match field(ev, t, p) {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::msg("no field")))
}

fn le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

fn sext(v: u64, size: u64) -> i64 {
    if size == 0 || size >= 8 {
        return v as i64;
    }
    let sh = 64 - size * 8;
    ((v << sh) as i64) >> sh
}

fn read_u64(ev: &mut Evaluator<'_>, addr: u64) -> Result<u64, Error> {
    Ok(le(&ev.read(addr, 8, SP)?))
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A field's place in a struct read as one span of bytes.
#[derive(Clone, Copy)]
struct F {
    off: u64,
    size: u64,
}

impl F {
    fn of(ev: &mut Evaluator<'_>, t: &Ty, paths: &[&str]) -> Result<F, Error> {
        let (off, ty) = field_any(ev, t, paths)?;
        Ok(F {
            off,
            size: ty.size(),
        })
    }
    fn bytes<'b>(&self, span: &'b [u8], base: u64) -> &'b [u8] {
        let s = (self.off - base) as usize;
        let e = (s + self.size as usize).min(span.len());
        span.get(s..e).unwrap_or(&[])
    }
    fn u(&self, span: &[u8], base: u64) -> u64 {
        le(self.bytes(span, base))
    }
}

/// `task_struct`'s fields `lx` reads, from DWARF.
struct TaskLayout {
    tasks: F,
    pid: F,
    tgid: F,
    comm: F,
    state: F,
    exit_state: F,
    cpu: Option<F>,
    mm: F,
    lo: u64,
    hi: u64,
}

impl TaskLayout {
    fn new(ev: &mut Evaluator<'_>) -> Result<TaskLayout, Error> {
        let t = ty(ev, "struct task_struct")?;
        let tasks = F::of(ev, &t, &["tasks"])?;
        let pid = F::of(ev, &t, &["pid"])?;
        let tgid = F::of(ev, &t, &["tgid"])?;
        let comm = F::of(ev, &t, &["comm"])?;
        let state = F::of(ev, &t, &["__state", "state"])?;
        let exit_state = F::of(ev, &t, &["exit_state"])?;
        let cpu = F::of(ev, &t, &["cpu", "thread_info.cpu"]).ok();
        let mm = F::of(ev, &t, &["mm"])?;
        let all = [Some(tasks), Some(pid), Some(tgid), Some(comm), Some(state)]
            .into_iter()
            .chain([Some(exit_state), cpu, Some(mm)])
            .flatten()
            .collect::<Vec<_>>();
        let lo = all.iter().map(|f| f.off).min().unwrap_or(0);
        let hi = all.iter().map(|f| f.off + f.size).max().unwrap_or(0);
        Ok(TaskLayout {
            tasks,
            pid,
            tgid,
            comm,
            state,
            exit_state,
            cpu,
            mm,
            lo,
            hi,
        })
    }

    /// Reads the task at `task`.
    fn read(&self, ev: &mut Evaluator<'_>, task: u64) -> Result<(LxTask, u64), Error> {
        let span = ev.read(task + self.lo, (self.hi - self.lo) as usize, SP)?;
        let lo = self.lo;
        let state = self.state.u(&span, lo) | self.exit_state.u(&span, lo);
        let t = LxTask {
            task,
            pid: sext(self.pid.u(&span, lo), self.pid.size),
            tgid: sext(self.tgid.u(&span, lo), self.tgid.size),
            comm: c_str(self.comm.bytes(&span, lo)),
            state: state_letter(self.state.u(&span, lo), state).to_string(),
            cpu: self.cpu.map(|c| c.u(&span, lo)).unwrap_or(0),
            kthread: self.mm.u(&span, lo) == 0,
        };
        Ok((t, self.tasks.u(&span, lo)))
    }
}

/// The kernel's `task_state_index` letter (fs/proc/array.c).
fn state_letter(raw: u64, state: u64) -> char {
    const TASK_REPORT: u64 = 0x7f;
    const TASK_IDLE: u64 = 0x402;
    if raw == TASK_IDLE {
        return 'I';
    }
    let s = state & TASK_REPORT;
    let idx = if s == 0 {
        0
    } else {
        64 - s.leading_zeros() as usize
    };
    "RSDTtXZPI".chars().nth(idx).unwrap_or('?')
}

const MAX_LIST: usize = 1 << 16;

fn tasks(ev: &mut Evaluator<'_>) -> Result<Vec<LxTask>, Error> {
    let l = TaskLayout::new(ev)?;
    let init = sym(ev, "init_task")?;
    let head = init + l.tasks.off;
    let mut out = Vec::new();
    let (t, mut next) = l.read(ev, init)?;
    out.push(t);
    while next != head {
        if out.len() > MAX_LIST || next == 0 {
            return Err(Error::msg(format!(
                "the task list does not lead back to init_task (at {next:#x} after {} tasks)",
                out.len()
            )));
        }
        let task = next.wrapping_sub(l.tasks.off);
        let (t, n) = l.read(ev, task)?;
        out.push(t);
        next = n;
    }
    Ok(out)
}

fn current(ev: &mut Evaluator<'_>, gs: &[Option<u64>; 2]) -> Result<Vec<LxCpu>, Error> {
    let l = TaskLayout::new(ev)?;
    let offsets = sym(ev, "__per_cpu_offset")?;
    let current_task = sym(ev, "current_task")?;
    let nr = match sym(ev, "nr_cpu_ids") {
        Ok(a) => le(&ev.read(a, 4, SP)?).clamp(1, 8192),
        Err(_) => 1,
    };
    let mut out = Vec::new();
    let mut this = None;
    for cpu in 0..nr {
        let off = read_u64(ev, offsets + 8 * cpu)?;
        let task = read_u64(ev, current_task.wrapping_add(off))?;
        let (t, _) = l.read(ev, task)?;
        // gs base is the per-CPU base in the kernel; in user mode the
        // kernel's is in k_gs_base.
        let this_cpu = gs.iter().flatten().any(|&g| g == off && off != 0);
        if this_cpu {
            this = Some(task);
        }
        out.push(LxCpu {
            cpu,
            per_cpu_offset: off,
            this_cpu,
            task: t,
        });
    }
    let task = this.or_else(|| (out.len() == 1).then(|| out[0].task.task));
    if let Some(task) = task {
        let t = ty(ev, "struct task_struct")?;
        ev.env
            .vars
            .insert("lx_current".into(), Value::scalar(Ty::ptr_to(t), task));
    }
    Ok(out)
}

fn lsmod(ev: &mut Evaluator<'_>) -> Result<Vec<LxModule>, Error> {
    let t = ty(ev, "struct module")?;
    let list = F::of(ev, &t, &["list"])?;
    let name = F::of(ev, &t, &["name"])?;
    let state = F::of(ev, &t, &["state"])?;
    let size = F::of(ev, &t, &["core_layout.size", "mem.size"]).ok();
    let head = sym(ev, "modules")?;
    let mut next = read_u64(ev, head)?;
    let mut out = Vec::new();
    while next != head {
        if out.len() > MAX_LIST || next == 0 {
            return Err(Error::msg(format!(
                "the module list does not lead back to `modules` (at {next:#x})"
            )));
        }
        let m = next.wrapping_sub(list.off);
        let fs = [list, name, state]
            .into_iter()
            .chain(size)
            .collect::<Vec<_>>();
        let lo = fs.iter().map(|f| f.off).min().unwrap_or(0);
        let hi = fs.iter().map(|f| f.off + f.size).max().unwrap_or(0);
        let span = ev.read(m + lo, (hi - lo) as usize, SP)?;
        out.push(LxModule {
            module: m,
            name: c_str(name.bytes(&span, lo)),
            size: size.map(|f| f.u(&span, lo)),
            state: state.u(&span, lo),
        });
        next = list.u(&span, lo);
    }
    Ok(out)
}

/// 6.1's `printk_ringbuffer` (kernel/printk/printk_ringbuffer.c).
fn dmesg(ev: &mut Evaluator<'_>) -> Result<Vec<LxLog>, Error> {
    let rb_t = ty(ev, "struct printk_ringbuffer")?;
    let desc_t = pointee(ev, &rb_t, "desc_ring.descs", "struct prb_desc")?;
    let info_t = pointee(ev, &rb_t, "desc_ring.infos", "struct printk_info")?;
    let f = |ev: &mut Evaluator<'_>, t: &Ty, p: &str| F::of(ev, t, &[p]);
    let count_bits = f(ev, &rb_t, "desc_ring.count_bits")?;
    let descs = f(ev, &rb_t, "desc_ring.descs")?;
    let infos = f(ev, &rb_t, "desc_ring.infos")?;
    let head_id = f(ev, &rb_t, "desc_ring.head_id")?;
    let tail_id = f(ev, &rb_t, "desc_ring.tail_id")?;
    let size_bits = f(ev, &rb_t, "text_data_ring.size_bits")?;
    let data = f(ev, &rb_t, "text_data_ring.data")?;
    let sv = f(ev, &desc_t, "state_var")?;
    let begin = f(ev, &desc_t, "text_blk_lpos.begin")?;
    let next = f(ev, &desc_t, "text_blk_lpos.next")?;
    let seq = f(ev, &info_t, "seq")?;
    let ts = f(ev, &info_t, "ts_nsec")?;
    let text_len = f(ev, &info_t, "text_len")?;
    let level = field(ev, &info_t, "level");
    let desc_size = desc_t.size();
    let info_size = info_t.size();

    let prb = read_u64(ev, sym(ev, "prb")?)?;
    let rb = ev.read(prb, rb_t.size() as usize, SP)?;
    let count = 1u64 << count_bits.u(&rb, 0).min(30);
    let data_size = 1u64 << size_bits.u(&rb, 0).min(30);
    let descs = descs.u(&rb, 0);
    let infos = infos.u(&rb, 0);
    let head = head_id.u(&rb, 0);
    let tail = tail_id.u(&rb, 0);
    let data_addr = data.u(&rb, 0);
    let ring = ev.read(data_addr, data_size as usize, SP)?;

    // Descriptor ids: the state in the top 2 bits of state_var, the id in
    // the rest (DESC_SV_BITS = 64, DESC_FLAGS_SHIFT = 62).
    const ID_MASK: u64 = (1 << 62) - 1;
    const COMMITTED: u64 = 1;
    const FINALIZED: u64 = 2;
    let n = (head.wrapping_sub(tail) & ID_MASK) + 1;
    if n > count {
        return Err(Error::msg(format!(
            "printk ring: head {head:#x} and tail {tail:#x} are more than {count} apart"
        )));
    }
    // The descriptors and infos of tail..=head, in at most two reads each
    // (the ring wraps once).
    let read_ring = |ev: &mut Evaluator<'_>, base: u64, size: u64| -> Result<Vec<u8>, Error> {
        let first = tail % count;
        let k1 = n.min(count - first);
        let mut v = ev.read(base + first * size, (k1 * size) as usize, SP)?;
        if k1 < n {
            v.extend(ev.read(base, ((n - k1) * size) as usize, SP)?);
        }
        Ok(v)
    };
    let dbytes = read_ring(ev, descs, desc_size)?;
    let ibytes = read_ring(ev, infos, info_size)?;
    let mut out = Vec::new();
    for i in 0..n {
        let d = &dbytes[(i * desc_size) as usize..((i + 1) * desc_size) as usize];
        let inf = &ibytes[(i * info_size) as usize..((i + 1) * info_size) as usize];
        let state = sv.u(d, 0) >> 62;
        if state != COMMITTED && state != FINALIZED {
            continue;
        }
        let b = begin.u(d, 0);
        let e = next.u(d, 0);
        // Data-less records have odd lpos values.
        if b & 1 == 1 || e & 1 == 1 {
            continue;
        }
        let mut b = b % data_size;
        let e = e % data_size;
        if b > e {
            b = 0; // wrapped: the text starts at the ring's start
        }
        // Each data block starts with its descriptor id (unsigned long).
        let start = (b + 8) as usize;
        let len = text_len.u(inf, 0) as usize;
        let end = (start + len).min(ring.len());
        let text = String::from_utf8_lossy(ring.get(start..end).unwrap_or(&[])).into_owned();
        let level = match &level {
            Ok((off, _)) => inf.get(*off as usize).map(|b| b >> 5).unwrap_or(0),
            Err(_) => 0,
        };
        out.push(LxLog {
            seq: seq.u(inf, 0),
            ts_nsec: ts.u(inf, 0),
            level,
            text,
        });
    }
    Ok(out)
}

/// Text for `lx ...`.
pub fn render(lx: &LxView) -> String {
    match lx {
        LxView::Tasks { tasks } => {
            let mut s = format!(
                "{:>7} {:>7} {:>3} {:>1} {:<18} {}",
                "PID", "TGID", "CPU", "S", "TASK", "COMM"
            );
            for t in tasks {
                let comm = if t.kthread {
                    format!("[{}]", t.comm)
                } else {
                    t.comm.clone()
                };
                s.push_str(&format!(
                    "\n{:>7} {:>7} {:>3} {:>1} {:#018x} {}",
                    t.pid, t.tgid, t.cpu, t.state, t.task, comm
                ));
            }
            s
        }
        LxView::Dmesg { records } => records
            .iter()
            .map(|r| {
                format!(
                    "[{:>5}.{:06}] {}",
                    r.ts_nsec / 1_000_000_000,
                    (r.ts_nsec % 1_000_000_000) / 1000,
                    r.text
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        LxView::Lsmod { modules } => {
            if modules.is_empty() {
                return "no modules loaded".into();
            }
            let mut s = format!("{:<18} {:<24} {:>8}", "MODULE", "NAME", "SIZE");
            for m in modules {
                s.push_str(&format!(
                    "\n{:#018x} {:<24} {:>8}",
                    m.module,
                    m.name,
                    m.size.map(|v| v.to_string()).unwrap_or_default()
                ));
            }
            s
        }
        LxView::Kaslr { slide } => format!("KASLR slide {slide:#x}"),
        LxView::Current { cpus } => cpus
            .iter()
            .map(|c| {
                format!(
                    "{}cpu {}: (struct task_struct *) {:#x} pid {} {}",
                    if c.this_cpu { "*" } else { " " },
                    c.cpu,
                    c.task.task,
                    c.task.pid,
                    c.task.comm
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// `set substitute-path [FROM [TO]]`: with FROM and TO, file names starting
/// with FROM show (and open) as TO instead (a rule for the same FROM is
/// replaced); with FROM alone, that rule is removed; alone, the rules are
/// listed (with the automatic ones of a Linux vmlinux, which strip its build
/// directories).
pub fn substitute_path(s: &mut Session, args: &[String]) -> Result<Output> {
    let elf = s.shared.elf()?;
    let mut rules: Vec<(String, String)> = elf.substitute_paths();
    let auto = elf.auto_substitute_paths();
    rules.retain(|r| !auto.contains(r));
    match args {
        [] => {}
        [from] => {
            let n = rules.len();
            rules.retain(|(f, _)| f != from);
            if rules.len() == n {
                bail!("no substitute-path rule for '{from}'");
            }
        }
        [from, to] => {
            rules.retain(|(f, _)| f != from);
            rules.push((from.clone(), to.clone()));
        }
        _ => bail!("usage: set substitute-path [FROM [TO]]"),
    }
    elf.set_substitute_paths(rules);
    let mut text: Vec<String> = elf
        .substitute_paths()
        .iter()
        .map(|(f, t)| {
            let note = if auto.contains(&(f.clone(), t.clone())) {
                " (automatic: the vmlinux's build directory)"
            } else {
                ""
            };
            format!("'{f}' -> '{t}'{note}")
        })
        .collect();
    if text.is_empty() {
        text.push("no substitute-path rules".into());
    }
    Ok(Output::Message {
        text: text.join("\n"),
    })
}
