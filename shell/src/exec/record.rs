//! `record FILE` / `record off` / `record`: every delivered event
//! appended to a file (`record::file`); `kdbg report FILE` reads it.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use crate::cmd::Invocation;
use crate::output::Output;
use crate::record::file::{Recorder, kernel_identity};
use crate::session::Session;

/// What `record` answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordingInfo {
    /// `recording` (started or running), `stopped`, or `off` (none).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub events: u64,
    pub drops: u64,
}

pub fn text(r: &RecordingInfo) -> String {
    let path = r.path.as_deref().unwrap_or("-");
    match r.state {
        "recording" => format!(
            "recording every event to {path} ({} so far, {} dropped by the kernel); `record off` ends it",
            r.events, r.drops
        ),
        "stopped" => format!(
            "recorded {} events ({} dropped by the kernel) to {path}; `kdbg report {path}` shows them",
            r.events, r.drops
        ),
        _ => "not recording (`record FILE` starts)".into(),
    }
}

/// Starts recording to `path` (`record FILE`, `kdbg --record FILE`).
pub fn start(s: &Session, path: &Path) -> Result<RecordingInfo> {
    if let Some((p, _, _)) = s.shared.display.recording() {
        bail!("already recording to {}: `record off` first", p.display());
    }
    let clock = s.shared.display.clock();
    let rec = Recorder::create(
        path,
        kernel_identity(s.symbols.as_deref()),
        serde_json::json!({"tsc_hz": clock.tsc_hz, "base": clock.base}),
        &s.shared.probes.live(),
    )?;
    s.shared.display.start_recording(rec)?;
    Ok(RecordingInfo {
        state: "recording",
        path: Some(path.display().to_string()),
        events: 0,
        drops: 0,
    })
}

/// Ends the recording, if one runs.
pub fn stop(s: &Session) -> Result<Option<RecordingInfo>> {
    match s.shared.display.stop_recording() {
        None => Ok(None),
        Some(Ok((path, events, drops))) => Ok(Some(RecordingInfo {
            state: "stopped",
            path: Some(path.display().to_string()),
            events,
            drops,
        })),
        Some(Err(e)) => Err(anyhow!("the recording's end could not be written: {e}")),
    }
}

pub fn record(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let info = match inv.args.as_slice() {
        [] => match s.shared.display.recording() {
            Some((p, events, drops)) => RecordingInfo {
                state: "recording",
                path: Some(p.display().to_string()),
                events,
                drops,
            },
            None => RecordingInfo {
                state: "off",
                path: None,
                events: 0,
                drops: 0,
            },
        },
        [off] if off == "off" => stop(s)?.ok_or_else(|| anyhow!("not recording"))?,
        [file] => start(s, Path::new(file))?,
        _ => bail!("usage: record FILE | record off | record"),
    };
    Ok(Output::Recording { recording: info })
}
