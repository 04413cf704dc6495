//! Kernel tasks as gdb threads.

/// The gdb thread id of a task (`proto::thread`: task id + 1).
pub fn tid_of_task(task: u32) -> usize {
    proto::thread::tid_of_task(task) as usize
}

/// The task of a gdb thread id (`proto::thread`).
pub fn task_of_tid(tid: usize) -> Option<u32> {
    proto::thread::task_of_tid(tid as u64)
}
