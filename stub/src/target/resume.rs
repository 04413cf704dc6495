//! Resuming (`vCont`): continue, single-step of the stopped CPU, and
//! scheduler locking (accepted; see below).

use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::multithread::{
    MultiThreadResume, MultiThreadSchedulerLocking, MultiThreadSchedulerLockingOps,
    MultiThreadSingleStep, MultiThreadSingleStepOps,
};

use super::{KdbgTarget, Resume};

impl MultiThreadResume for KdbgTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.resume = Resume::Continue;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    #[inline(always)]
    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for KdbgTarget {
    /// gdb sends a step for one thread without "continue the others"
    /// (`vCont;s:TID`). The stopped CPU steps that one instruction; other
    /// tasks only run if a timer interrupt lands in between (the step still
    /// completes in the stepped task when it is switched back in).
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl MultiThreadSingleStep for KdbgTarget {
    fn set_resume_action_step(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // Only the stopped CPU can step; a step of another thread steps it.
        self.resume = Resume::Step;
        Ok(())
    }
}
