//! Kernel tasks as gdb threads.

/// gdb thread ids are task ids + 1 (gdb's thread ids start at 1).
pub fn tid_of_task(task: u32) -> usize {
    task as usize + 1
}

/// The task of a gdb thread id.
pub fn task_of_tid(tid: usize) -> Option<u32> {
    u32::try_from(tid.checked_sub(1)?).ok()
}
