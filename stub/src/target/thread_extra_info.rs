//! `qThreadExtraInfo`: a task's name and state, and the CPU of a running
//! task, shown by gdb's `info threads` (`fork-worker (running, cpu 1)`).

use gdbstub::common::Tid;
use gdbstub::target::ext::thread_extra_info::ThreadExtraInfo;

use super::KdbgTarget;
use crate::kernel::task_of_tid;

impl ThreadExtraInfo for KdbgTarget {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let Some(task) = task_of_tid(tid.get()) else {
            return Ok(0);
        };
        let mut len = 0;
        self.host.for_each_task(&mut |t| {
            if t.id == task {
                let mut cpu = [b' '; 8];
                let cpu_text: &[u8] = match t.cpu {
                    Some(c) if c < 100 => {
                        cpu[..6].copy_from_slice(b", cpu ");
                        let mut n = 6;
                        if c >= 10 {
                            cpu[n] = b'0' + (c / 10) as u8;
                            n += 1;
                        }
                        cpu[n] = b'0' + (c % 10) as u8;
                        &cpu[..n + 1]
                    }
                    _ => b"",
                };
                for part in [t.name.as_bytes(), b" (", t.state.as_bytes(), cpu_text, b")"] {
                    for &b in part {
                        if let Some(slot) = buf.get_mut(len) {
                            *slot = b;
                            len += 1;
                        }
                    }
                }
            }
        });
        Ok(len)
    }
}
