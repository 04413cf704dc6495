//! Kernel tasks as gdb threads: gdb thread id = task id + 1 (gdb's thread
//! ids start at 1; 0 means "any thread" in the protocol). The stub and the
//! shell both convert through these two functions.

/// The gdb thread id of kernel task `task`.
pub const fn tid_of_task(task: u32) -> u64 {
    task as u64 + 1
}

/// The kernel task of gdb thread id `tid` (`None` for 0, "any", and for ids
/// past the last task id).
pub fn task_of_tid(tid: u64) -> Option<u32> {
    u32::try_from(tid.checked_sub(1)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_and_threads_map_both_ways() {
        assert_eq!(tid_of_task(0), 1);
        assert_eq!(task_of_tid(1), Some(0));
        assert_eq!(task_of_tid(0), None);
        assert_eq!(task_of_tid(u64::from(u32::MAX) + 2), None);
        for t in [0, 1, 5, u32::MAX] {
            assert_eq!(task_of_tid(tid_of_task(t)), Some(t));
        }
    }
}
