//! The RSP client: one connection to a stub, with a reader thread that acks
//! packets and routes what the stub sends on its own (console output,
//! events, stop replies while the kernel runs) to an asynchronous sink,
//! and everything else to the request that is waiting for it.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::packet::{self, Frame};
use super::transport::{Endpoint, TransportError, Wire};

/// How many times a packet is sent before giving up on acks.
const SEND_ATTEMPTS: usize = 4;

/// Something the stub sent that no request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Async {
    /// An `O` packet while the kernel runs (console text or an event
    /// record), hex-decoded.
    Output(Vec<u8>),
    /// The kernel stopped on its own (breakpoint, watchpoint, fault).
    Stop(String),
    /// Bytes outside any packet.
    Garbage(Vec<u8>),
    /// The connection is gone.
    Lost(String),
    /// Events read from the rings in guest RAM (the direct consumer,
    /// [`crate::ringconsumer`]).
    Events(Vec<proto::event::Event>),
}

/// Errors of the RSP client. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RspError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the connection to the stub is lost ({0}); use `reconnect`")]
    Lost(String),
    #[error(
        "the stub did not answer `{request}` within {secs:.1}s; the kernel may be hung; try `interrupt` or `reconnect`"
    )]
    Timeout { request: String, secs: f64 },
    #[error(
        "the stub kept rejecting `{0}` (bad checksum each time); the line is noisy; try `reconnect`"
    )]
    TooManyNaks(String),
    #[error("the stub answered `{request}` with error {code}")]
    Remote { request: String, code: String },
    #[error("the stub sent an unexpected reply to `{request}`: `{reply}`")]
    Unexpected { request: String, reply: String },
    #[error("the kernel is running; stop it first with `interrupt` (or Ctrl-C)")]
    Running,
    #[error("write to the stub failed: {0}; use `reconnect`")]
    Write(std::io::Error),
}

/// What the client and the reader thread share.
struct Shared {
    no_ack: AtomicBool,
    route: Mutex<Route>,
    closed: AtomicBool,
    /// Stop replies handed to the sink so far.
    async_stops: std::sync::atomic::AtomicU64,
    /// Packets sent so far (each one a round trip to the stub).
    sent: std::sync::atomic::AtomicU64,
    /// The process id of a multiprocess stub (thread ids `pP.T`), 0 if the
    /// stub uses plain thread ids. Learnt from `qC` and stop replies.
    pid: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Route {
    /// The kernel runs: stop replies are asynchronous.
    running: bool,
    /// A request waits for its reply: `O` packets belong to it.
    in_flight: bool,
}

#[derive(Debug)]
enum Incoming {
    Ack,
    Nak,
    Packet(Vec<u8>),
    Closed(String),
}

/// Decides whether a hex-decoded `O` payload is an event record, which
/// always goes to the asynchronous sink.
pub type EventClassifier = fn(&[u8]) -> bool;

/// Features the stub announced in `qSupported`.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub packet_size: usize,
    pub no_ack: bool,
    pub raw: HashMap<String, String>,
}

impl Features {
    fn parse(reply: &str) -> Features {
        let mut raw = HashMap::new();
        for item in reply.split(';').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = item.split_once('=') {
                raw.insert(k.to_string(), v.to_string());
            } else if let Some(k) = item.strip_suffix('+') {
                raw.insert(k.to_string(), "+".to_string());
            } else if let Some(k) = item.strip_suffix('-') {
                raw.insert(k.to_string(), "-".to_string());
            } else {
                raw.insert(item.to_string(), "+".to_string());
            }
        }
        let packet_size = raw
            .get("PacketSize")
            .and_then(|v| usize::from_str_radix(v, 16).ok())
            .unwrap_or(400)
            .max(64);
        Features {
            packet_size,
            no_ack: false,
            raw,
        }
    }

    pub fn supports(&self, name: &str) -> bool {
        self.raw.get(name).is_some_and(|v| v == "+")
    }
}

pub struct Client {
    endpoint: Endpoint,
    writer: Arc<Mutex<Box<dyn Wire>>>,
    replies: Receiver<Incoming>,
    pending: VecDeque<Vec<u8>>,
    shared: Arc<Shared>,
    sink: Sender<Async>,
    reader: Option<JoinHandle<()>>,
    pub features: Features,
    pub timeout: Duration,
    /// The stub is kdbg's own (it serves memory and registers while the
    /// kernel runs, and has the probe core behind `monitor`). Decided once
    /// at connect by the session; a foreign stub (QEMU's gdbstub, ...) is
    /// never sent a request while the target runs.
    pub kdbg: bool,
    /// The register layout from the stub's target description, if it
    /// serves one.
    pub layout: Option<super::tdesc::Layout>,
    /// Why the layout could not be read (shown by `regs`).
    pub layout_error: Option<String>,
    /// A stop reply the stub sent on its own during the handshake (QEMU
    /// stops the guest when a client connects and says so unasked).
    pub initial_stop: Option<String>,
    /// A reply did not fit its request: drain the line before the next one.
    doubt: bool,
    /// Guest RAM through a shared mapping (`--memory`): reads come from it
    /// (see [`crate::guestmem`]); `None`: every read goes to the stub.
    pub guest: Option<Arc<crate::guestmem::GuestMem>>,
    /// The stub answers gdb's binary read `x`: `None` to try it at the
    /// next read (the session sets it for kdbg's stub), then learnt.
    /// Starts `Some(false)`: a plain client reads with `m`.
    pub binary_reads: Option<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn printable(payload: &[u8]) -> String {
    let s = String::from_utf8_lossy(payload);
    if s.len() > 60 {
        format!("{}...", &s[..s.floor_char_boundary(60)])
    } else {
        s.into_owned()
    }
}

/// Is this reply a stop reply (`T05...`, `S05`, `W00`, `X09`)?
pub fn is_stop_reply(p: &[u8]) -> bool {
    matches!(p.first(), Some(b'T' | b'S' | b'W' | b'X'))
        && p.len() >= 3
        && p[1].is_ascii_hexdigit()
        && p[2].is_ascii_hexdigit()
}

/// Requests whose reply is a stop reply.
fn expects_stop(request: &[u8]) -> bool {
    matches!(
        request.first(),
        Some(b'?' | b's' | b'c' | b'S' | b'C' | b'i' | b'I')
    ) || request.starts_with(b"vCont;")
        || request.starts_with(b"vAttach")
        || request.starts_with(b"vRun")
        || request.starts_with(b"vStopped")
        || request.starts_with(b"interrupt")
}

/// Does `reply` have the shape of an answer to `request`? Errors and the
/// empty "not supported" reply fit any request. Used to recognise a late
/// reply to an earlier request instead of taking it for this one's.
pub fn plausible(request: &[u8], reply: &[u8]) -> bool {
    let is_hex = |b: &[u8]| b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'x');
    if reply.is_empty() || (reply.len() == 3 && reply[0] == b'E' && is_hex(&reply[1..])) {
        return true;
    }
    if expects_stop(request) {
        return is_stop_reply(reply) || reply.first() == Some(&b'O');
    }
    let starts = |p: &[u8]| request.starts_with(p);
    if starts(b"qSupported") {
        return reply != b"OK"
            && (reply.contains(&b'=') || reply.contains(&b'+') || reply.contains(&b'-'));
    }
    if starts(b"qC") {
        return reply.starts_with(b"QC");
    }
    if starts(b"qfThreadInfo") || starts(b"qsThreadInfo") || starts(b"qXfer:") {
        return matches!(reply.first(), Some(b'm' | b'l'));
    }
    if starts(b"qThreadExtraInfo") || starts(b"qRcmd") {
        return reply == b"OK" || is_hex(reply) || reply.first() == Some(&b'O');
    }
    if starts(b"qAttached") {
        return reply == b"0" || reply == b"1";
    }
    match request.first() {
        Some(b'g' | b'p') => is_hex(reply),
        Some(b'm') => {
            let asked = std::str::from_utf8(&request[1..])
                .ok()
                .and_then(|t| t.split_once(','))
                .and_then(|(_, n)| usize::from_str_radix(n, 16).ok());
            is_hex(reply)
                && reply.len().is_multiple_of(2)
                && asked.is_none_or(|n| reply.len() <= 2 * n)
        }
        // A binary read: `b` and the bytes (escaped).
        Some(b'x') => reply.first() == Some(&b'b'),
        Some(b'M' | b'X' | b'Z' | b'z' | b'H' | b'D' | b'G' | b'P' | b'T' | b'Q') => reply == b"OK",
        _ => true,
    }
}

/// The pid of a `pP.T` thread id in a reply (`QCp1.1`, `T05thread:p01.01;`,
/// `mp01.01`), if any.
pub fn multiprocess_pid(text: &str) -> Option<u64> {
    let i = text.find("thread:p").map(|i| i + 8).or_else(|| {
        text.strip_prefix("QCp")
            .or_else(|| text.strip_prefix("mp"))
            .map(|_| if text.starts_with("QCp") { 3 } else { 2 })
    })?;
    let rest = &text[i..];
    let end = rest.find(['.', ';', ',']).unwrap_or(rest.len());
    u64::from_str_radix(&rest[..end], 16)
        .ok()
        .filter(|p| *p != 0 && *p != u64::MAX)
}

/// A thread id `T`, `pP.T`, `pP` (all threads of P: tid 0), `-1` (all:
/// u64::MAX): (pid, tid).
pub fn parse_thread_id(text: &str) -> Option<(Option<u64>, u64)> {
    let hex = |t: &str| -> Option<u64> {
        if t == "-1" {
            Some(u64::MAX)
        } else {
            u64::from_str_radix(t, 16).ok()
        }
    };
    match text.strip_prefix('p') {
        Some(rest) => match rest.split_once('.') {
            Some((p, t)) => Some((Some(hex(p)?), hex(t)?)),
            None => Some((Some(hex(rest)?), 0)),
        },
        None => Some((None, hex(text)?)),
    }
}

fn decode_o(p: &[u8]) -> Option<Vec<u8>> {
    if p.first() == Some(&b'O') && p.len() > 1 {
        packet::from_hex(&p[1..])
    } else {
        None
    }
}

impl Client {
    /// Open the endpoint and negotiate (qSupported, no-ack mode). The
    /// kernel's run state is not touched.
    pub fn connect(
        endpoint: &Endpoint,
        timeout: Duration,
        sink: Sender<Async>,
        is_event: EventClassifier,
    ) -> Result<Client, RspError> {
        let opened = endpoint.open(timeout)?;
        let shared = Arc::new(Shared {
            no_ack: AtomicBool::new(false),
            route: Mutex::new(Route::default()),
            closed: AtomicBool::new(false),
            async_stops: std::sync::atomic::AtomicU64::new(0),
            sent: std::sync::atomic::AtomicU64::new(0),
            pid: std::sync::atomic::AtomicU64::new(0),
        });
        let writer = Arc::new(Mutex::new(opened.writer));
        let (tx, rx) = mpsc::channel();
        let reader = {
            let shared = shared.clone();
            let writer = writer.clone();
            let sink = sink.clone();
            std::thread::Builder::new()
                .name("rsp-reader".into())
                .spawn(move || reader_loop(opened.reader, writer, shared, tx, sink, is_event))
                .map_err(RspError::Write)?
        };
        let mut client = Client {
            endpoint: endpoint.clone(),
            writer,
            replies: rx,
            pending: VecDeque::new(),
            shared,
            sink,
            reader: Some(reader),
            features: Features::default(),
            timeout,
            kdbg: true,
            layout: None,
            layout_error: None,
            initial_stop: None,
            doubt: false,
            guest: None,
            binary_reads: Some(false),
        };
        client.handshake()?;
        Ok(client)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn handshake(&mut self) -> Result<(), RspError> {
        // gdb starts with an ack to flush whatever the stub waits for.
        self.write_raw(b"+")?;
        let reply = self.request_str("qSupported:swbreak+;hwbreak+;vContSupported+;no-resumed+")?;
        self.features = Features::parse(&reply);
        if self.features.supports("QStartNoAckMode") {
            let ok = self.request_str("QStartNoAckMode")?;
            if ok == "OK" {
                self.shared.no_ack.store(true, Ordering::SeqCst);
                self.features.no_ack = true;
            }
        }
        // Multiprocess thread ids (`QCp1.1`): QEMU keeps using them once
        // any client (gdb) asked for them, whatever we announce.
        if let Ok(qc) = self.request_str("qC") {
            self.learn_pid(&qc);
        }
        if self.features.supports("qXfer:features:read") {
            match super::tdesc::Layout::load(&mut |annex: &str| self.read_xfer("features", annex)) {
                Ok(l) if l.find("rip").is_some() => self.layout = Some(l),
                Ok(_) => self.layout_error = Some("the target description has no rip".into()),
                Err(e) => self.layout_error = Some(e.to_string()),
            }
        }
        Ok(())
    }

    /// A whole `qXfer:OBJECT:read:ANNEX` object.
    pub fn read_xfer(&mut self, object: &str, annex: &str) -> Result<String, RspError> {
        let mut out = String::new();
        let chunk = self
            .features
            .packet_size
            .saturating_sub(16)
            .clamp(64, 0xffb);
        for _ in 0..4096 {
            let req = format!("qXfer:{object}:read:{annex}:{:x},{chunk:x}", out.len());
            let r = self.request(req.as_bytes())?;
            let (more, body) = match r.split_first() {
                Some((b'm', b)) => (true, b),
                Some((b'l', b)) => (false, b),
                _ => {
                    return Err(if r.first() == Some(&b'E') {
                        RspError::Remote {
                            request: req,
                            code: String::from_utf8_lossy(&r).into_owned(),
                        }
                    } else {
                        RspError::Unexpected {
                            request: req,
                            reply: printable(&r),
                        }
                    });
                }
            };
            out.push_str(&String::from_utf8_lossy(body));
            if !more || body.is_empty() {
                return Ok(out);
            }
        }
        Err(RspError::Unexpected {
            request: format!("qXfer:{object}:read:{annex}"),
            reply: "(more than 4096 chunks)".into(),
        })
    }

    fn learn_pid(&self, text: &str) {
        if let Some(pid) = multiprocess_pid(text) {
            self.shared.pid.store(pid, Ordering::SeqCst);
        }
    }

    /// Record the pid of a `pP.T` thread id the stub used.
    pub fn note_pid(&self, pid: u64) {
        if pid != 0 && pid != u64::MAX {
            self.shared.pid.store(pid, Ordering::SeqCst);
        }
    }

    /// The process id of a multiprocess stub (thread ids are `pPID.TID`).
    pub fn pid(&self) -> Option<u64> {
        Some(self.shared.pid.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// A thread id as this stub wants it: `pP.T` on a multiprocess stub.
    pub fn thread_arg(&self, tid: u64) -> String {
        match self.pid() {
            Some(p) => format!("p{p:x}.{tid:x}"),
            None => format!("{tid:x}"),
        }
    }

    /// Detach (`D`, or `D;PID` on a multiprocess stub), checking the
    /// answer: a stub that refuses keeps the target stopped, and the user
    /// must know. A plain `D` refused with an error is retried as `D;PID`
    /// (QEMU after a gdb session answers `E22` to `D`).
    pub fn detach(&mut self) -> Result<(), RspError> {
        let first = match self.pid() {
            Some(p) => format!("D;{p:x}"),
            None => "D".to_string(),
        };
        let r = self.request_str(&first)?;
        if r == "OK" {
            return Ok(());
        }
        if first == "D" && r.starts_with('E') {
            let pid = self.pid().unwrap_or(1);
            let again = format!("D;{pid:x}");
            let r2 = self.request_str(&again)?;
            if r2 == "OK" {
                return Ok(());
            }
            return check_ok(&again, &r2);
        }
        check_ok(&first, &r)
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// How many stops went to the asynchronous sink (the session waits
    /// until it has shown them before running the next command).
    pub fn async_stops(&self) -> u64 {
        self.shared.async_stops.load(Ordering::SeqCst)
    }

    pub fn is_running(&self) -> bool {
        lock(&self.shared.route).running
    }

    /// Record that the kernel stopped (the session saw an `Async::Stop`).
    pub fn mark_stopped(&self) {
        lock(&self.shared.route).running = false;
    }

    fn set_route(&self, running: Option<bool>, in_flight: bool) {
        let mut r = lock(&self.shared.route);
        if let Some(running) = running {
            r.running = running;
        }
        r.in_flight = in_flight;
    }

    fn write_raw(&self, bytes: &[u8]) -> Result<(), RspError> {
        if self.is_closed() {
            return Err(RspError::Lost("closed".into()));
        }
        let mut w = lock(&self.writer);
        w.write_all(bytes)
            .and_then(|_| w.flush())
            .map_err(RspError::Write)
    }

    /// Send one packet; in ack mode wait for `+`, retransmitting on `-` or
    /// silence.
    /// Packets sent on this connection so far (what a command cost in
    /// round trips, for `step`/`next` and the benchmarks).
    pub fn packets_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    pub fn send(&mut self, payload: &[u8]) -> Result<(), RspError> {
        self.shared.sent.fetch_add(1, Ordering::SeqCst);
        let frame = packet::encode(payload);
        let mut naks = 0;
        for _ in 0..SEND_ATTEMPTS {
            self.write_raw(&frame)?;
            if self.shared.no_ack.load(Ordering::SeqCst) {
                return Ok(());
            }
            let deadline = Instant::now() + self.timeout / SEND_ATTEMPTS as u32;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.replies.recv_timeout(left) {
                    Ok(Incoming::Ack) => return Ok(()),
                    Ok(Incoming::Nak) => {
                        naks += 1;
                        break;
                    }
                    Ok(Incoming::Packet(p)) => self.pending.push_back(p),
                    Ok(Incoming::Closed(why)) => return Err(RspError::Lost(why)),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(RspError::Lost("reader stopped".into()));
                    }
                }
            }
        }
        if naks == 0 {
            return Err(RspError::Timeout {
                request: printable(payload),
                secs: self.timeout.as_secs_f64(),
            });
        }
        Err(RspError::TooManyNaks(printable(payload)))
    }

    /// Wait for the reply to a request that does not resume the kernel: a
    /// stop reply that arrives meanwhile (the kernel hit a breakpoint while
    /// the request travelled) goes to the asynchronous sink.
    /// Console output (`O` packets) that arrives meanwhile goes to the sink
    /// too, unless `keep_output` (a monitor command's own output).
    fn recv_reply(
        &mut self,
        request: &[u8],
        timeout: Duration,
        keep_output: bool,
    ) -> Result<Vec<u8>, RspError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self.recv(request, left)?;
            if !keep_output && let Some(text) = decode_o(&p) {
                let _ = self.sink.send(Async::Output(text));
                continue;
            }
            if is_stop_reply(&p) && !expects_stop(request) {
                // A stop is never the reply to a request that does not
                // resume: the stub stopped on its own (QEMU says so right
                // after a client connects; a breakpoint hit while the
                // request travelled).
                self.unsolicited_stop(&p);
                continue;
            }
            if !plausible(request, &p) {
                // A reply to an earlier request (one that timed out): not
                // ours. Keep waiting for ours, and drain the line before
                // the next request.
                self.doubt = true;
                continue;
            }
            return Ok(p);
        }
    }

    /// A stop reply no request asked for: a stop of a running kernel goes
    /// to the asynchronous sink (never lost, never a reply); one while the
    /// kernel is known stopped is remembered (QEMU's stop on connect).
    fn unsolicited_stop(&mut self, p: &[u8]) {
        let text = String::from_utf8_lossy(p).into_owned();
        self.learn_pid(&text);
        if self.is_running() {
            self.mark_stopped();
            self.shared.async_stops.fetch_add(1, Ordering::SeqCst);
            let _ = self.sink.send(Async::Stop(text));
        } else {
            self.initial_stop = Some(text);
        }
    }

    /// Drop everything the stub sends until it is quiet for a moment
    /// (after a reply that did not fit its request); stops still count.
    fn resync(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            if is_stop_reply(&p) {
                self.unsolicited_stop(&p);
            }
        }
        while let Ok(i) = self.replies.recv_timeout(Duration::from_millis(100)) {
            match i {
                Incoming::Closed(_) => break,
                Incoming::Packet(p) if is_stop_reply(&p) => self.unsolicited_stop(&p),
                _ => {}
            }
        }
        self.doubt = false;
    }

    /// Wait for the next packet addressed to a request.
    pub fn recv(&mut self, request: &[u8], timeout: Duration) -> Result<Vec<u8>, RspError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(Incoming::Packet(p)) => return Ok(p),
                Ok(Incoming::Ack | Incoming::Nak) => continue,
                Ok(Incoming::Closed(why)) => return Err(RspError::Lost(why)),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(RspError::Timeout {
                        request: printable(request),
                        secs: timeout.as_secs_f64(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RspError::Lost("reader stopped".into()));
                }
            }
        }
    }

    /// Drop replies nobody waits for any more (after a timeout).
    /// A stop among them (the kernel stopped just as a request finished)
    /// is still a stop: it goes to the sink, not away.
    fn drain_stale(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            if is_stop_reply(&p) {
                self.unsolicited_stop(&p);
            }
        }
        while let Ok(i) = self.replies.try_recv() {
            match i {
                Incoming::Closed(_) => break,
                Incoming::Packet(p) if is_stop_reply(&p) => self.unsolicited_stop(&p),
                _ => {}
            }
        }
    }

    /// Send a request and return its reply (not a stop reply: one that
    /// arrives while waiting is handed to the asynchronous path).
    pub fn request(&mut self, payload: &[u8]) -> Result<Vec<u8>, RspError> {
        self.exchange(|c| {
            c.send(payload)
                .and_then(|_| c.recv_reply(payload, c.timeout, false))
        })
    }

    /// Runs one request/reply exchange `f` with replies routed to this
    /// thread: refused while a foreign stub's target runs (QEMU stops the
    /// guest on any byte and then answers slowly), after a resync when the
    /// line is in doubt and with stale replies drained.
    fn exchange<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, RspError>,
    ) -> Result<R, RspError> {
        if !self.kdbg && self.is_running() {
            return Err(RspError::Running);
        }
        if self.doubt {
            self.resync();
        }
        self.drain_stale();
        self.set_route(None, true);
        let r = f(self);
        self.set_route(None, false);
        r
    }

    pub fn request_str(&mut self, payload: &str) -> Result<String, RspError> {
        let r = self.request(payload.as_bytes())?;
        Ok(String::from_utf8_lossy(&r).into_owned())
    }

    /// A request whose reply is `OK` or `Exx`.
    pub fn request_ok(&mut self, payload: &str) -> Result<(), RspError> {
        let reply = self.request_str(payload)?;
        check_ok(payload, &reply)
    }

    /// `qRcmd`: a monitor command. Output arrives as `O` packets, then
    /// `OK`, or as one hex reply.
    pub fn monitor(&mut self, command: &str) -> Result<String, RspError> {
        let payload = format!("qRcmd,{}", packet::to_hex(command.as_bytes()));
        self.exchange(|c| c.monitor_inner(&payload, command))
    }

    fn monitor_inner(&mut self, payload: &str, command: &str) -> Result<String, RspError> {
        self.send(payload.as_bytes())?;
        let mut out = Vec::new();
        loop {
            let p = self.recv_reply(payload.as_bytes(), self.timeout, true)?;
            if p == b"OK" {
                break;
            }
            if let Some(text) = decode_o(&p) {
                out.extend_from_slice(&text);
                continue;
            }
            if p.is_empty() {
                return Err(RspError::Unexpected {
                    request: format!("monitor {command}"),
                    reply: "(empty: the stub does not know qRcmd)".into(),
                });
            }
            if p.first() == Some(&b'E') && p.len() == 3 {
                return Err(RspError::Remote {
                    request: format!("monitor {command}"),
                    code: String::from_utf8_lossy(&p).into_owned(),
                });
            }
            match packet::from_hex(&p) {
                Some(text) => {
                    out.extend_from_slice(&text);
                    break;
                }
                None => {
                    return Err(RspError::Unexpected {
                        request: format!("monitor {command}"),
                        reply: printable(&p),
                    });
                }
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Resume (`c`, `vCont;c`...) without waiting: the stop arrives later
    /// as `Async::Stop`.
    pub fn resume(&mut self, payload: &str) -> Result<(), RspError> {
        self.drain_stale();
        self.set_route(Some(true), false);
        let r = self.send(payload.as_bytes());
        if r.is_err() {
            self.set_route(Some(false), false);
        }
        r
    }

    /// Send a request that resumes and wait for its stop reply (`s`, `?`).
    pub fn request_stop(&mut self, payload: &str, timeout: Duration) -> Result<String, RspError> {
        self.drain_stale();
        self.set_route(Some(true), true);
        let r = self
            .send(payload.as_bytes())
            .and_then(|_| self.wait_stop(payload.as_bytes(), timeout));
        self.set_route(None, false);
        r
    }

    /// [`Client::request_stop`] that interrupts the kernel (0x03) when
    /// `cancel` is set while it waits (Ctrl-C during a `next` over a call):
    /// the stop reply, and whether it interrupted.
    pub fn request_stop_or_cancel(
        &mut self,
        payload: &str,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<(String, bool), RspError> {
        self.drain_stale();
        self.set_route(Some(true), true);
        let r = self
            .send(payload.as_bytes())
            .and_then(|_| self.wait_stop_or_cancel(payload.as_bytes(), timeout, cancel));
        self.set_route(None, false);
        r
    }

    fn wait_stop_or_cancel(
        &mut self,
        request: &[u8],
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<(String, bool), RspError> {
        const POLL: Duration = Duration::from_millis(50);
        let mut deadline = Instant::now() + timeout;
        let mut interrupted = false;
        loop {
            if !interrupted && cancel.swap(false, Ordering::SeqCst) {
                self.write_raw(&[0x03])?;
                interrupted = true;
                deadline = Instant::now() + timeout.min(Duration::from_secs(10));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RspError::Timeout {
                    request: printable(request),
                    secs: timeout.as_secs_f64(),
                });
            }
            let p = match self.recv(request, left.min(POLL)) {
                Ok(p) => p,
                Err(RspError::Timeout { .. }) => continue,
                Err(e) => return Err(e),
            };
            if is_stop_reply(&p) {
                self.set_route(Some(false), true);
                return Ok((String::from_utf8_lossy(&p).into_owned(), interrupted));
            }
            if p.first() == Some(&b'E') {
                self.set_route(Some(false), true);
                return Err(RspError::Remote {
                    request: printable(request),
                    code: String::from_utf8_lossy(&p).into_owned(),
                });
            }
        }
    }

    fn wait_stop(&mut self, request: &[u8], timeout: Duration) -> Result<String, RspError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self.recv(request, left)?;
            if is_stop_reply(&p) {
                self.set_route(Some(false), true);
                return Ok(String::from_utf8_lossy(&p).into_owned());
            }
            if decode_o(&p).is_some() {
                continue;
            }
            if p.first() == Some(&b'E') {
                self.set_route(Some(false), true);
                return Err(RspError::Remote {
                    request: printable(request),
                    code: String::from_utf8_lossy(&p).into_owned(),
                });
            }
        }
    }

    /// Stop the running kernel with 0x03 and wait for its stop reply.
    pub fn interrupt(&mut self, timeout: Duration) -> Result<String, RspError> {
        self.drain_stale();
        self.set_route(Some(true), true);
        let r = self
            .write_raw(&[0x03])
            .and_then(|_| self.wait_stop(b"interrupt (0x03)", timeout));
        self.set_route(None, false);
        r
    }

    /// Send 0x03 without waiting (Ctrl-C from another thread uses
    /// [`Client::interrupter`]).
    pub fn interrupter(&self) -> Interrupter {
        Interrupter {
            writer: self.writer.clone(),
        }
    }

    /// Close the connection; the reader thread ends.
    pub fn close(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        lock(&self.writer).shutdown();
        if let Some(h) = self.reader.take() {
            // A serial reader may stay blocked; never wait for it there.
            if matches!(self.endpoint, Endpoint::Serial { .. }) {
                drop(h);
            } else {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// A handle that can send the interrupt byte from any thread.
#[derive(Clone)]
pub struct Interrupter {
    writer: Arc<Mutex<Box<dyn Wire>>>,
}

impl Interrupter {
    pub fn interrupt(&self) {
        let mut w = lock(&self.writer);
        let _ = w.write_all(&[0x03]).and_then(|_| w.flush());
    }
}

/// `OK` is success; `Exx` is the stub's error; anything else is unexpected.
pub fn check_ok(request: &str, reply: &str) -> Result<(), RspError> {
    if reply == "OK" {
        Ok(())
    } else if reply.starts_with('E') {
        Err(RspError::Remote {
            request: request.to_string(),
            code: reply.to_string(),
        })
    } else if reply.is_empty() {
        Err(RspError::Unexpected {
            request: request.to_string(),
            reply: "(empty: the stub does not support this)".into(),
        })
    } else {
        Err(RspError::Unexpected {
            request: request.to_string(),
            reply: reply.to_string(),
        })
    }
}

fn reader_loop(
    mut reader: Box<dyn Read + Send>,
    writer: Arc<Mutex<Box<dyn Wire>>>,
    shared: Arc<Shared>,
    replies: Sender<Incoming>,
    sink: Sender<Async>,
    is_event: EventClassifier,
) {
    let mut decoder = packet::Decoder::new();
    let mut buf = [0u8; 4096];
    let mut frames = Vec::new();
    let why = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break "the stub closed the connection".to_string(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break format!("read failed: {e}"),
        };
        frames.clear();
        decoder.feed(&buf[..n], &mut frames);
        for frame in frames.drain(..) {
            let ack_mode = !shared.no_ack.load(Ordering::SeqCst);
            match frame {
                Frame::Ack => {
                    let _ = replies.send(Incoming::Ack);
                }
                Frame::Nak => {
                    let _ = replies.send(Incoming::Nak);
                }
                Frame::BadChecksum { .. } => {
                    if ack_mode {
                        let mut w = lock(&writer);
                        let _ = w.write_all(b"-").and_then(|_| w.flush());
                    }
                }
                Frame::Garbage(g) => {
                    let _ = sink.send(Async::Garbage(g));
                }
                Frame::Packet(p) | Frame::Notification(p) => {
                    if ack_mode {
                        let mut w = lock(&writer);
                        let _ = w.write_all(b"+").and_then(|_| w.flush());
                    }
                    route(p, &shared, &replies, &sink, is_event);
                }
            }
        }
    };
    if !shared.closed.swap(true, Ordering::SeqCst) {
        let _ = sink.send(Async::Lost(why.clone()));
    }
    let _ = replies.send(Incoming::Closed(why));
}

fn route(
    p: Vec<u8>,
    shared: &Shared,
    replies: &Sender<Incoming>,
    sink: &Sender<Async>,
    is_event: EventClassifier,
) {
    let mut r = lock(&shared.route);
    if let Some(text) = decode_o(&p) {
        if is_event(&text) || !r.in_flight {
            let _ = sink.send(Async::Output(text));
            return;
        }
    } else if is_stop_reply(&p)
        && let Some(pid) = multiprocess_pid(&String::from_utf8_lossy(&p))
    {
        shared.pid.store(pid, Ordering::SeqCst);
    }
    if is_stop_reply(&p) && r.running && !r.in_flight {
        r.running = false;
        shared.async_stops.fetch_add(1, Ordering::SeqCst);
        let _ = sink.send(Async::Stop(String::from_utf8_lossy(&p).into_owned()));
        return;
    }
    let _ = replies.send(Incoming::Packet(p));
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
