//! The client against a real peer on a local TCP socket: a scripted stub
//! thread that reads what the client sends and answers as a stub would
//! (including badly).

use super::*;
use crate::rsp::packet::{Decoder, encode};
use std::io::Write;
use std::net::{TcpListener, TcpStream};

/// The stub side of a test: reads frames, writes raw bytes.
struct Peer {
    s: TcpStream,
    dec: Decoder,
    queue: VecDeque<Frame>,
    /// Raw bytes seen that were not frames (0x03 shows up here).
    raw: Vec<u8>,
}

impl Peer {
    fn next(&mut self) -> Frame {
        loop {
            if let Some(f) = self.queue.pop_front() {
                if let Frame::Garbage(g) = &f {
                    self.raw.extend_from_slice(g);
                    if g.contains(&0x03) {
                        return f;
                    }
                    continue;
                }
                return f;
            }
            let mut buf = [0u8; 4096];
            let n = self.s.read(&mut buf).unwrap();
            assert!(n > 0, "client closed");
            let mut out = Vec::new();
            self.dec.feed(&buf[..n], &mut out);
            self.queue.extend(out);
        }
    }
    /// Next packet, skipping acks.
    fn packet(&mut self) -> Vec<u8> {
        loop {
            match self.next() {
                Frame::Packet(p) => return p,
                Frame::Ack | Frame::Nak => continue,
                f => panic!("peer got {f:?}"),
            }
        }
    }
    fn expect(&mut self, want: &str) {
        let p = self.packet();
        assert_eq!(String::from_utf8_lossy(&p), want);
    }
    /// Expects `want`, acknowledges it and replies `reply` (ack mode).
    fn answer(&mut self, want: &str, reply: &str) {
        self.expect(want);
        self.raw(b"+");
        self.send(reply);
    }
    fn send(&mut self, payload: &str) {
        self.s.write_all(&encode(payload.as_bytes())).unwrap();
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }
    /// qSupported, then optionally no-ack mode.
    fn handshake(&mut self, no_ack: bool) {
        let p = self.packet();
        assert!(
            p.starts_with(b"qSupported"),
            "{}",
            String::from_utf8_lossy(&p)
        );
        self.raw(b"+");
        if no_ack {
            self.send("PacketSize=1000;QStartNoAckMode+;vContSupported+");
            self.answer("QStartNoAckMode", "OK");
        } else {
            self.send("PacketSize=1000");
        }
        // The client asks for the current thread (multiprocess ids).
        self.expect("qC");
        if !no_ack {
            self.raw(b"+");
        }
        self.send("");
    }
}

fn no_events(_: &[u8]) -> bool {
    false
}

fn is_event(t: &[u8]) -> bool {
    t.starts_with(b"EV")
}

/// Start a peer running `script`, connect a client to it.
fn setup(
    script: impl FnOnce(Peer) + Send + 'static,
    classifier: EventClassifier,
) -> (Client, Receiver<Async>, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        script(Peer {
            s,
            dec: Decoder::new(),
            queue: VecDeque::new(),
            raw: Vec::new(),
        });
    });
    let (tx, rx) = mpsc::channel();
    let ep = Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    let c = Client::connect(&ep, Duration::from_secs(2), tx, classifier).unwrap();
    (c, rx, h)
}

#[test]
fn handshake_and_no_ack_mode() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("g");
            // No ack expected any more; reply directly.
            p.send("0011");
        },
        no_events,
    );
    assert!(c.features.no_ack);
    assert_eq!(c.features.packet_size, 0x1000);
    assert_eq!(c.request(b"g").unwrap(), b"0011");
    h.join().unwrap();
}

#[test]
fn retransmits_on_nak() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(false);
            p.expect("m1000,4");
            p.raw(b"-");
            p.answer("m1000,4", "deadbeef");
            // The client acks our reply.
            assert_eq!(p.next(), Frame::Ack);
        },
        no_events,
    );
    assert_eq!(c.request(b"m1000,4").unwrap(), b"deadbeef");
    h.join().unwrap();
}

#[test]
fn naks_our_bad_checksum_and_takes_the_resend() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(false);
            p.expect("?");
            p.raw(b"+$S05#00");
            assert_eq!(p.next(), Frame::Nak);
            p.send("S05");
        },
        no_events,
    );
    assert_eq!(c.request(b"?").unwrap(), b"S05");
    h.join().unwrap();
}

#[test]
fn gives_up_after_repeated_naks() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(false);
            for _ in 0..SEND_ATTEMPTS {
                p.expect("g");
                p.raw(b"-");
            }
        },
        no_events,
    );
    let e = c.request(b"g").unwrap_err();
    assert!(matches!(e, RspError::TooManyNaks(_)), "{e}");
    h.join().unwrap();
}

#[test]
fn silent_peer_in_ack_mode_times_out() {
    let (tx, _rx) = mpsc::channel();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let ep = Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port,
    };
    let e = Client::connect(&ep, Duration::from_millis(400), tx, no_events)
        .err()
        .unwrap();
    assert!(matches!(e, RspError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("did not answer `qSupported"), "{e}");
    h.join().unwrap();
}

#[test]
fn garbage_goes_to_the_sink_and_the_reply_still_arrives() {
    let (mut c, rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("g");
            p.raw(b"\x00\xffnoise\r\n");
            p.send("1234");
        },
        no_events,
    );
    assert_eq!(c.request(b"g").unwrap(), b"1234");
    let got = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(got, Async::Garbage(b"\x00\xffnoise\r\n".to_vec()));
    h.join().unwrap();
}

#[test]
fn peer_that_disappears() {
    let (mut c, rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("g");
            // drop the socket without answering
        },
        no_events,
    );
    let e = c.request(b"g").unwrap_err();
    assert!(matches!(e, RspError::Lost(_)), "{e}");
    assert!(e.to_string().contains("reconnect"));
    h.join().unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(1)).unwrap(),
        Async::Lost(_)
    ));
    assert!(c.is_closed());
    // Further requests fail at once with the same advice.
    let e = c.request(b"g").unwrap_err();
    assert!(e.to_string().contains("reconnect"), "{e}");
}

#[test]
fn peer_that_stops_answering_times_out() {
    let (sent_tx, sent_rx) = mpsc::channel();
    let (mut c, _rx, h) = setup(
        move |mut p| {
            p.handshake(true);
            p.expect("g");
            std::thread::sleep(Duration::from_millis(800));
            // A late reply must not be taken for the next request's.
            p.send("late");
            sent_tx.send(()).unwrap();
            p.expect("m0,1");
            p.send("00");
        },
        no_events,
    );
    c.timeout = Duration::from_millis(300);
    let e = c.request(b"g").unwrap_err();
    assert!(matches!(e, RspError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("did not answer `g`"), "{e}");
    // Once the late reply is on the wire (give the reader a moment to
    // queue it), the next request must still get its own.
    sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.timeout = Duration::from_secs(5);
    assert_eq!(c.request(b"m0,1").unwrap(), b"00");
    h.join().unwrap();
}

#[test]
fn monitor_collects_console_output() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect(&format!("qRcmd,{}", packet::to_hex(b"probes")));
            p.send(&format!("O{}", packet::to_hex(b"id type\n")));
            p.send(&format!("O{}", packet::to_hex(b"1 kprobe\n")));
            p.send("OK");
            p.expect(&format!("qRcmd,{}", packet::to_hex(b"bogus")));
            p.send("E01");
            p.expect(&format!("qRcmd,{}", packet::to_hex(b"hex")));
            p.send(&packet::to_hex(b"all at once"));
        },
        no_events,
    );
    assert_eq!(c.monitor("probes").unwrap(), "id type\n1 kprobe\n");
    let e = c.monitor("bogus").unwrap_err().to_string();
    assert!(e.contains("monitor bogus") && e.contains("E01"), "{e}");
    assert_eq!(c.monitor("hex").unwrap(), "all at once");
    h.join().unwrap();
}

#[test]
fn async_output_and_stop_while_running() {
    let (mut c, rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("c");
            p.send(&format!("O{}", packet::to_hex(b"EV1")));
            p.send(&format!("O{}", packet::to_hex(b"console\n")));
            p.send("T05thread:01;");
            p.expect("g");
            p.send("00");
        },
        is_event,
    );
    c.resume("c").unwrap();
    let t = Duration::from_secs(2);
    assert_eq!(rx.recv_timeout(t).unwrap(), Async::Output(b"EV1".to_vec()));
    assert_eq!(
        rx.recv_timeout(t).unwrap(),
        Async::Output(b"console\n".to_vec())
    );
    assert_eq!(
        rx.recv_timeout(t).unwrap(),
        Async::Stop("T05thread:01;".into())
    );
    assert!(!c.is_running());
    assert_eq!(c.request(b"g").unwrap(), b"00");
    h.join().unwrap();
}

#[test]
fn events_during_a_monitor_command_go_to_the_sink() {
    let (mut c, rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect(&format!("qRcmd,{}", packet::to_hex(b"probes")));
            p.send(&format!("O{}", packet::to_hex(b"EV2")));
            p.send(&format!("O{}", packet::to_hex(b"row\n")));
            p.send("OK");
        },
        is_event,
    );
    assert_eq!(c.monitor("probes").unwrap(), "row\n");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)).unwrap(),
        Async::Output(b"EV2".to_vec())
    );
    h.join().unwrap();
}

#[test]
fn interrupt_sends_0x03_and_waits_for_the_stop() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("c");
            match p.next() {
                Frame::Garbage(g) => assert_eq!(g, vec![0x03]),
                f => panic!("expected 0x03, got {f:?}"),
            }
            p.send("T02thread:02;");
            p.expect("s");
            p.send("T05thread:02;");
        },
        no_events,
    );
    c.resume("c").unwrap();
    assert!(c.is_running());
    assert_eq!(
        c.interrupt(Duration::from_secs(2)).unwrap(),
        "T02thread:02;"
    );
    assert!(!c.is_running());
    assert_eq!(
        c.request_stop("s", Duration::from_secs(2)).unwrap(),
        "T05thread:02;"
    );
    h.join().unwrap();
}

#[test]
fn console_output_during_a_request_is_not_its_reply() {
    let (mut c, rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("m1000,2");
            p.send(&format!("O{}", packet::to_hex(b"hello\n")));
            p.send("abcd");
            std::thread::sleep(Duration::from_millis(500));
        },
        no_events,
    );
    assert_eq!(c.request(b"m1000,2").unwrap(), b"abcd");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)).unwrap(),
        Async::Output(b"hello\n".to_vec())
    );
    h.join().unwrap();
}

#[test]
fn run_length_encoded_reply() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("g");
            // As gdbstub compresses runs: '0' then ('"' - 29) = 5 more.
            p.send("0*\"1");
        },
        no_events,
    );
    assert_eq!(c.request(b"g").unwrap(), b"0000001");
    h.join().unwrap();
}

#[test]
fn unix_socket_transport() {
    use std::os::unix::net::UnixListener;
    let dir = std::env::temp_dir().join(format!("kdbg-unix-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let l = UnixListener::bind(&dir).unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got
            .iter()
            .any(|f| matches!(f, Frame::Packet(p) if p.starts_with(b"qSupported")))
        {
            let n = s.read(&mut buf).unwrap();
            dec.feed(&buf[..n], &mut got);
        }
        s.write_all(b"+").unwrap();
        s.write_all(&encode(b"PacketSize=200")).unwrap();
        // The client acks, asks `qC` (not supported here), then `?`.
        got.clear();
        while !got.iter().any(|f| matches!(f, Frame::Packet(_))) {
            let n = s.read(&mut buf).unwrap();
            dec.feed(&buf[..n], &mut got);
        }
        s.write_all(b"+").unwrap();
        s.write_all(&encode(b"")).unwrap();
        got.clear();
        while !got.iter().any(|f| matches!(f, Frame::Packet(_))) {
            let n = s.read(&mut buf).unwrap();
            dec.feed(&buf[..n], &mut got);
        }
        s.write_all(b"+").unwrap();
        s.write_all(&encode(b"S05")).unwrap();
        let _ = s.read(&mut buf);
    });
    let (tx, _rx) = mpsc::channel();
    let ep = Endpoint::Unix {
        path: dir.display().to_string(),
    };
    let mut c = Client::connect(&ep, Duration::from_secs(2), tx, no_events).unwrap();
    assert_eq!(c.features.packet_size, 0x200);
    assert_eq!(c.request(b"?").unwrap(), b"S05");
    c.close();
    h.join().unwrap();
    let _ = std::fs::remove_file(&dir);
}

#[test]
fn serial_transport_over_a_pty() {
    // A pseudo-terminal pair stands in for the serial line: the client
    // opens the slave as a tty device (termios raw, 115200), the test
    // plays the stub on the master.
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes two descriptors; the other arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: slave is an open descriptor; name has room for the path.
    let rc = unsafe { libc::ttyname_r(slave, name.as_mut_ptr(), name.len()) };
    assert_eq!(rc, 0);
    // SAFETY: ttyname_r wrote a NUL-terminated string.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: master is an open descriptor we own from here on.
    let mut m: std::fs::File = unsafe { std::os::fd::FromRawFd::from_raw_fd(master) };
    let h = std::thread::spawn(move || {
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let mut answered = 0;
        while answered < 3 {
            let n = m.read(&mut buf).unwrap();
            got.clear();
            dec.feed(&buf[..n], &mut got);
            for f in &got {
                if let Frame::Packet(p) = f {
                    m.write_all(b"+").unwrap();
                    if p.starts_with(b"qSupported") {
                        m.write_all(&encode(b"PacketSize=100")).unwrap();
                    } else if p == b"qC" {
                        m.write_all(&encode(b"")).unwrap();
                    } else {
                        m.write_all(&encode(b"T05thread:01;")).unwrap();
                    }
                    answered += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    let (tx, _rx) = mpsc::channel();
    let ep: Endpoint = format!("{path},115200").parse().unwrap();
    let mut c = Client::connect(&ep, Duration::from_secs(3), tx, no_events).unwrap();
    assert_eq!(c.features.packet_size, 0x100);
    assert_eq!(c.request(b"?").unwrap(), b"T05thread:01;");
    h.join().unwrap();
    // SAFETY: slave is still open and owned by this test.
    unsafe { libc::close(slave) };
}

// Recorded exchanges with QEMU 7.2's gdbstub (`-gdb tcp::PORT`, Debian's
// 6.1 kernel): what it sends unasked and how it answers after a gdb
// session turned on multiprocess thread ids.

/// QEMU's qSupported reply.
const QEMU_SUPPORTED: &str = "PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+";
const QEMU_TARGET: &str = r#"l<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target><architecture>i386:x86-64</architecture><xi:include href="i386-64bit.xml"/></target>"#;

/// QEMU's side of the handshake: the stop reply it sends as soon as a
/// client connects, qSupported, qC, and the target description.
fn qemu_handshake(p: &mut Peer, multiprocess: bool) {
    // Sent on connect, before the client said anything.
    p.send(if multiprocess {
        "T02thread:p01.01;"
    } else {
        "T02thread:01;"
    });
    let q = p.packet();
    assert!(
        q.starts_with(b"qSupported"),
        "{}",
        String::from_utf8_lossy(&q)
    );
    p.raw(b"+");
    p.send(QEMU_SUPPORTED);
    p.answer("qC", if multiprocess { "QCp01.01" } else { "QC01" });
    p.answer("qXfer:features:read:target.xml:0,ff0", QEMU_TARGET);
    p.expect("qXfer:features:read:i386-64bit.xml:0,ff0");
    p.raw(b"+");
    p.send(&format!(
        "l{}",
        include_str!("testdata/qemu-i386-64bit.xml")
    ));
}

#[test]
fn qemu_unsolicited_stop_on_connect_is_a_stop_not_a_reply() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            qemu_handshake(&mut p, false);
            p.answer("?", "T05thread:01;");
            p.answer("m1000,2", "abcd");
        },
        no_events,
    );
    // Hex `m` reads: this test is about reply matching (binary `x` reads
    // are what every end-to-end read through kdbg's stub uses).
    c.binary_reads = Some(false);
    // qSupported got its own reply, not the stop.
    assert_eq!(c.features.packet_size, 0x1000);
    assert!(c.features.supports("multiprocess"));
    assert_eq!(c.initial_stop.as_deref(), Some("T02thread:01;"));
    assert_eq!(c.pid(), None);
    let l = c.layout.as_ref().expect("layout from target.xml");
    assert_eq!(l.find("gs_base").unwrap().offset, 17 * 8 + 4 + 6 * 4 + 8);
    assert_eq!(c.request_str("?").unwrap(), "T05thread:01;");
    assert_eq!(c.read_memory(0x1000, 2).unwrap(), [0xab, 0xcd]);
    h.join().unwrap();
}

#[test]
fn qemu_multiprocess_ids_and_detach_with_pid() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            qemu_handshake(&mut p, true);
            p.answer("qfThreadInfo", "mp01.01,p01.02");
            p.answer("qsThreadInfo", "l");
            p.answer("Hgp1.2", "OK");
            p.answer("D;1", "OK");
        },
        no_events,
    );
    assert_eq!(c.pid(), Some(1));
    assert_eq!(c.thread_ids().unwrap(), [1, 2]);
    c.select_thread(2).unwrap();
    c.detach().unwrap();
    h.join().unwrap();
}

#[test]
fn plain_detach_refused_with_e22_is_retried_with_the_pid() {
    // QEMU after a gdb session: multiprocess on, `D` answered `E22` (the
    // guest would stay frozen), `D;1` detaches.
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(false);
            p.answer("D", "E22");
            p.answer("D;1", "OK");
        },
        no_events,
    );
    c.detach().unwrap();
    h.join().unwrap();
}

#[test]
fn refused_detach_is_an_error() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(false);
            p.answer("D", "E22");
            p.answer("D;1", "E01");
        },
        no_events,
    );
    let e = c.detach().unwrap_err().to_string();
    assert!(e.contains("E01"), "{e}");
    h.join().unwrap();
}

#[test]
fn a_late_reply_of_another_shape_is_not_taken() {
    // The reply to a register read that timed out arrives after the next
    // request (a breakpoint) was sent: `Z0` must get `OK`, not the dump.
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("Z0,1000,1");
            p.send("00112233445566778899");
            p.send("OK");
            p.expect("m1000,2");
            p.send("0102030405060708");
            p.send("abcd");
        },
        no_events,
    );
    // Hex `m` reads: this test is about reply matching (binary `x` reads
    // are what every end-to-end read through kdbg's stub uses).
    c.binary_reads = Some(false);
    c.set_breakpoint(crate::rsp::BreakKind::Software, 0x1000, 1)
        .unwrap();
    // A memory reply longer than asked is someone else's.
    assert_eq!(c.read_memory(0x1000, 2).unwrap(), [0xab, 0xcd]);
    h.join().unwrap();
}

#[test]
fn foreign_stub_is_not_sent_requests_while_running() {
    let (mut c, _rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("c");
        },
        no_events,
    );
    c.kdbg = false;
    c.resume("c").unwrap();
    let e = c.request(b"g").unwrap_err();
    assert!(matches!(e, RspError::Running), "{e}");
    h.join().unwrap();
}

#[test]
fn thread_ids_and_stop_reply_pids() {
    use crate::rsp::client::{multiprocess_pid, parse_thread_id};
    assert_eq!(parse_thread_id("p1.2"), Some((Some(1), 2)));
    assert_eq!(parse_thread_id("p01.0a"), Some((Some(1), 10)));
    assert_eq!(parse_thread_id("1f"), Some((None, 0x1f)));
    assert_eq!(parse_thread_id("-1"), Some((None, u64::MAX)));
    assert_eq!(parse_thread_id("pz.1"), None);
    assert_eq!(multiprocess_pid("T05thread:p01.01;"), Some(1));
    assert_eq!(multiprocess_pid("QCp2a.01"), Some(0x2a));
    assert_eq!(multiprocess_pid("T05thread:01;"), None);
    assert_eq!(multiprocess_pid("QC01"), None);
    assert!(plausible(b"qSupported:x+", b"PacketSize=1000"));
    assert!(!plausible(b"qSupported:x+", b"T02thread:01;"));
    assert!(!plausible(b"m10,2", b"0011223344"));
    assert!(plausible(b"m10,2", b"E14"));
    assert!(!plausible(b"Z0,10,1", b"0011"));
    assert!(plausible(b"?", b"T05thread:01;"));
}

#[test]
fn a_stop_right_after_a_reply_is_never_dropped() {
    // The kernel hits a breakpoint just as a request completes: the stop
    // may land in the reply queue after the reply; the next request must
    // hand it to the sink instead of discarding it as stale.
    let (mut c, rx, h) = setup(
        |mut p| {
            p.handshake(true);
            p.expect("c");
            p.expect("g");
            p.send("00");
            p.send("T05thread:01;");
            p.expect("m1000,1");
            p.send("ab");
        },
        no_events,
    );
    // Hex `m` reads: this test is about reply matching (binary `x` reads
    // are what every end-to-end read through kdbg's stub uses).
    c.binary_reads = Some(false);
    c.resume("c").unwrap();
    assert_eq!(c.request(b"g").unwrap(), b"00");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.read_memory(0x1000, 1).unwrap(), [0xab]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(2)).unwrap(),
        Async::Stop("T05thread:01;".into())
    );
    assert!(!c.is_running());
    h.join().unwrap();
}
