//! The event thread: turns the stub's asynchronous output (event records,
//! console text, stops, a lost connection) into stored events and printed
//! lines. It never blocks on the terminal ([`super::Display::print_async`]).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::Shared;
use crate::events;
use crate::rsp::{Async, StopReply};

impl Shared {
    fn handle_record(&self, rec: proto::event::Record) {
        match rec {
            proto::event::Record::Event(ev) => {
                self.display.update_clock(|c| {
                    if c.base.is_none() {
                        c.base = Some(ev.tsc);
                    }
                });
                if let Some(ev) = self.probes.hold(ev) {
                    self.show_event(&ev);
                }
            }
            proto::event::Record::Drops { probe_id, dropped } => {
                if let Some(e) = self.display.record_drops(probe_id, dropped) {
                    self.recording_failed(&e);
                }
                let store = self.display.store();
                store.record_drops(probe_id, dropped);
                if let Some(s) =
                    self.display
                        .drops()
                        .report(probe_id, dropped, store.total(), Instant::now())
                {
                    self.show_drops(&s);
                }
            }
        }
    }

    /// A drop notice: shown with the live display off too (it says what
    /// the stored events lack), and always in `--json`.
    fn show_drops(&self, s: &crate::record::drops::Summary) {
        self.print_async(self.display.render().notice("drops", &s.text(), s.json()));
    }

    /// The recording's buffered lines to its file.
    fn flush_recording(&self) {
        if let Some(e) = self.display.flush_recording() {
            self.recording_failed(&e);
        }
    }

    /// Drop summaries whose interval is over.
    fn show_due_drops(&self) {
        for s in self.display.drops().due(Instant::now()) {
            self.show_drops(&s);
        }
    }

    /// A recording stopped on a write error (shown once, always).
    pub fn recording_failed(&self, text: &str) {
        self.print_async(
            self.display
                .render()
                .notice("record_error", text, serde_json::json!({})),
        );
    }

    /// Render, store (and record) and (live) print one event.
    pub fn show_event(&self, ev: &proto::event::Event) {
        let d = &self.display;
        let clock = d.clock();
        let def = self.probes.get_any(ev.probe_id);
        let (view, err) = d.store_event(events::view(0, ev, def.as_deref(), self, clock));
        if let Some(e) = err {
            self.recording_failed(&e);
        }
        if d.live() && d.filter().matches(&view) {
            self.print_async(d.render().event(&view));
        }
    }

    /// A probe command finished: show the events that waited for it.
    pub fn flush_orphans(&self) {
        for ev in &self.probes.end_registering() {
            self.show_event(ev);
        }
    }

    fn handle_line(&self, line: &str) {
        let r = self.display.render();
        match events::classify(line) {
            events::Line::Record(rec) => self.handle_record(*rec),
            events::Line::BadRecord(e) => {
                self.display.store().record_bad();
                self.print_async(r.notice(
                    "bad_record",
                    &format!("an event record was unreadable: {e}"),
                    serde_json::json!({}),
                ));
            }
            events::Line::Text(t) => {
                if !t.trim().is_empty() {
                    self.print_async(r.notice(
                        "console",
                        &format!("stub: {}", t.trim_end()),
                        serde_json::json!({}),
                    ));
                }
            }
        }
    }

    /// The event thread: runs until the channel closes.
    pub fn pump(self: Arc<Self>, rx: Receiver<Async>) {
        let mut partial = String::new();
        let mut flushed = Instant::now();
        loop {
            // Wake up at least twice a second for drop summaries.
            let a = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => {
                    self.show_due_drops();
                    self.flush_recording();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.show_due_drops();
            match a {
                Async::Output(bytes) => {
                    partial.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(pos) = partial.find('\n') {
                        let line: String = partial.drain(..=pos).collect();
                        self.handle_line(line.trim_end());
                    }
                    // Record lines always end in '\n'; anything else is
                    // console text that may continue.
                    if partial.len() > 4096 {
                        let line = std::mem::take(&mut partial);
                        self.handle_line(&line);
                    }
                }
                Async::Stop(s) => {
                    let stop = StopReply::parse(&s).unwrap_or_default();
                    let rip = self.current_rip();
                    let mut info = self.stop_info(&stop, rip);
                    if let Some((_, a)) = &stop.watch
                        && let Some(change) = self.watch_change(*a)
                    {
                        info.reason = format!("{}: {change}", info.reason);
                    }
                    let r = self.display.render();
                    let text = if r.json {
                        r.output("stop", &crate::output::Output::Stopped { stop: info })
                    } else {
                        crate::render::stop_text(&r, &info)
                    };
                    self.print_async(text);
                    if let Some(d) = crate::exec::inspect::displays_text(&self) {
                        self.print_async(if r.json {
                            r.notice("display", &d, serde_json::json!({}))
                        } else {
                            d
                        });
                    }
                    self.stops.shown(stop);
                }
                Async::Garbage(_) => {}
                Async::Events(evs) => {
                    for ev in evs {
                        self.handle_record(proto::event::Record::Event(ev));
                    }
                }
                Async::Lost(why) => self.print_async(self.display.render().notice(
                    "connection_lost",
                    &format!("connection to the stub lost ({why}); use `reconnect`"),
                    serde_json::json!({}),
                )),
            }
            // The recording reaches its file every 100 ms while events
            // flow (and at the 500 ms wake-up when they stop).
            if flushed.elapsed() >= Duration::from_millis(100) {
                self.flush_recording();
                flushed = Instant::now();
            }
        }
    }
}
