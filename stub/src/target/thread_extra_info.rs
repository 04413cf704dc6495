//! `qThreadExtraInfo`: a task's name and state, shown by gdb's `info threads`.

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
                for part in [t.name.as_bytes(), b" (", t.state.as_bytes(), b")"] {
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
