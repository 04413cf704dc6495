//! `qRcmd`: gdb's `monitor TEXT`, answered by [`crate::monitor`].

use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};

use super::KdbgTarget;
use crate::monitor::LineBuf;

impl MonitorCmd for KdbgTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let mut sink = |b: &[u8]| out.write_raw(b);
        let mut lines = LineBuf::new(&mut sink);
        let host = self.host;
        let _ = match core::str::from_utf8(cmd) {
            Ok(text) => crate::monitor::run(text, host, &mut self.monitor, &mut lines),
            Err(_) => crate::monitor::error(
                &mut lines,
                proto::reply::ErrorCode::BadArguments,
                &"command is not UTF-8 text",
            ),
        };
        lines.flush();
        Ok(())
    }
}
