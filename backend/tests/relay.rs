//! The directory's relay (issue 13), over raw TCP as a node's directory
//! client would speak it: `RELAY`, `RELAYQUERY`, and `HELLO`/`SEC` frames
//! forwarded between two logged-in users' sessions, with the refusals
//! (`RELAYNAK`) a sender sees. Every test starts its own directory on
//! port 0; the frames are of valid shape but need not decrypt (the
//! directory cannot tell).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, logged_addr, Directory};
use roundtable::directory::relay::RelayConfig;
use roundtable_shared::directory::MAX_RELAY_PAYLOAD;
use roundtable_shared::frame::{decode, Decoded, Frame, Limits};
use roundtable_shared::secure::{Cipher, Hello, Sealed, SecureFrame, MAX_SEC_PAYLOAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Reads frames as large as a relayed `SEC`.
const LIMITS: Limits = Limits {
    max_header: roundtable_shared::frame::DEFAULT_MAX_HEADER,
    max_payload: MAX_RELAY_PAYLOAD,
};

/// A raw client: writes bytes, reads whole frames and their exact bytes.
struct Raw(TcpStream, Vec<u8>);

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw(TcpStream::connect(addr).await.unwrap(), Vec::new())
    }

    /// Connects with a small receive buffer, so that a client that does
    /// not read fills up after a few frames rather than megabytes.
    async fn connect_small_window(addr: SocketAddr) -> Raw {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        Raw(socket.connect(addr).await.unwrap(), Vec::new())
    }

    /// Logs in as `user` (open registration: any password creates it).
    async fn login(addr: SocketAddr, user: &str) -> Raw {
        Raw::connect(addr).await.logged_in(user).await
    }

    async fn logged_in(mut self, user: &str) -> Raw {
        self.ask(
            &format!("USER 0 {user}\n"),
            &format!(
                "ACK {}\nhi {user}, authentication required",
                28 + user.len()
            ),
        )
        .await;
        self.ask("PASS 0 pw\n", "ACK 26\nsuccessfully authenticated")
            .await;
        self
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut chunk))
            .await
            .expect("the directory answers in time")
            .unwrap_or(0);
        self.1.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next frame and the exact bytes it came in.
    async fn raw_frame(&mut self) -> (Frame, Vec<u8>) {
        loop {
            if let Decoded::Frame(f, n) = decode(&self.1, &LIMITS).unwrap() {
                return (f, self.1.drain(..n).collect());
            }
            assert!(self.fill().await, "a frame, not EOF");
        }
    }

    async fn frame(&mut self) -> Frame {
        self.raw_frame().await.0
    }

    /// Expects the next frame to be exactly `expected`.
    async fn expect(&mut self, expected: &[u8]) {
        let (_, raw) = self.raw_frame().await;
        assert_eq!(
            String::from_utf8_lossy(&raw),
            String::from_utf8_lossy(expected)
        );
    }

    /// Sends `line`, expects exactly `reply` as the next frame.
    async fn ask(&mut self, line: &str, reply: &str) {
        self.send(line.as_bytes()).await;
        self.expect(reply.as_bytes()).await;
    }

    /// Sends `QUERY 0 nobody` and expects its empty `RESULT` as the very
    /// next frame: nothing (no relayed frame, no `RELAYNAK`) came before.
    async fn nothing_before_query(&mut self) {
        self.ask("QUERY 0 nobody\n", "RESULT 0\n").await;
    }

    /// Asks `RELAYQUERY 0` until its payload is `expected` (10 s at most).
    async fn relay_query_until(&mut self, expected: &[u8], what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            self.send(b"RELAYQUERY 0\n").await;
            if self.frame().await.payload == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Reads the replies up to the `RESULT` of a `QUERY` sent after a
    /// batch, returning the `RELAYNAK`s' reasons.
    async fn naks_until_result(&mut self) -> Vec<String> {
        let mut naks = Vec::new();
        loop {
            let f = self.frame().await;
            match f.kind.as_str() {
                "RESULT" => return naks,
                "RELAYNAK" => naks.push(f.text().unwrap().to_owned()),
                other => panic!("unexpected {other} {:?}", f.text()),
            }
        }
    }
}

/// A `SEC` of valid shape whose payload depends on `counter`.
fn sec(from: &str, to: &str, counter: u64, len: usize) -> SecureFrame {
    let s = Sealed {
        from: from.into(),
        to: to.into(),
        epoch: 0,
        counter,
        payload: (0..len).map(|i| (i as u64 * 7 + counter) as u8).collect(),
    };
    s.validate().expect("a valid shape");
    SecureFrame::Sealed(s)
}

fn hello(from: &str, to: &str, step: u8, len: usize) -> SecureFrame {
    SecureFrame::Hello(Hello {
        from: from.into(),
        to: to.into(),
        step,
        cipher: Cipher::ChaChaPoly,
        payload: vec![step; len],
    })
}

fn wire(f: &SecureFrame) -> Vec<u8> {
    f.to_frame().encode().unwrap()
}

fn relaynak(to: &str, reason: &str) -> String {
    format!("RELAYNAK {} {to}\n{reason}", reason.len())
}

/// A chat port answering `PING` with `PONG`, so a classic client can BIND.
async fn pong_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut c = roundtable::framing::Connection::new(s, Limits::default());
                while let Ok(Some(f)) = c.read_frame().await {
                    if f.kind == "PING" && c.write_frame(&Frame::bare("PONG", "")).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_frames_arrive_byte_for_byte_and_in_order() {
    let dir = Directory::start().await;
    // alice only logs in and relays: no BIND.
    let mut alice = Raw::login(dir.addr, "alice").await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut bob = Raw::login(dir.addr, "bob").await;
    bob.ask("RELAY 0\n", "ACK 8\nrelay on").await;

    // A SEC, the largest SEC (beyond the 64 KiB a session reads before
    // log-in), a HELLO: alice receives the very bytes bob sent.
    for f in [
        sec("bob", "alice", 0, 200),
        sec("bob", "alice", 1, MAX_SEC_PAYLOAD),
        hello("bob", "alice", 1, 32),
    ] {
        bob.send(&wire(&f)).await;
        let (got, raw) = alice.raw_frame().await;
        assert_eq!(raw, wire(&f), "{got}");
    }
    // And the other way round.
    let back = sec("alice", "bob", 0, 100);
    alice.send(&wire(&back)).await;
    assert_eq!(bob.raw_frame().await.1, wire(&back));
    // A forwarded frame gets no answer of its own.
    bob.nothing_before_query().await;
    alice.nothing_before_query().await;

    // 1,000 frames, in windows of 100 that each end with a QUERY: bob's
    // RESULT right after the window says none was refused.
    for window in 0..10u64 {
        let mut batch = Vec::new();
        for i in 0..100 {
            batch.extend(wire(&sec("bob", "alice", 1000 + window * 100 + i, 200)));
        }
        batch.extend_from_slice(b"QUERY 0 nobody\n");
        bob.send(&batch).await;
        assert_eq!(bob.naks_until_result().await, Vec::<String>::new());
        for i in 0..100 {
            let expected = wire(&sec("bob", "alice", 1000 + window * 100 + i, 200));
            assert_eq!(
                alice.raw_frame().await.1,
                expected,
                "frame {i} of window {window}"
            );
        }
    }
    alice.nothing_before_query().await;
    dir.stop().await;
}

#[tokio::test]
async fn relay_only_users_stay_out_of_query_and_leave_relayquery_when_gone() {
    let dir = Directory::start().await;
    let p = pong_port().await;
    let mut carol = Raw::login(dir.addr, "carol").await;
    let bound = format!("bound successfully to 127.0.0.1:{p}");
    carol
        .ask(
            &format!("BIND 0 127.0.0.1 {p}\n"),
            &format!("ACK {}\n{bound}", bound.len()),
        )
        .await;
    let line = format!("carol,127.0.0.1,{p}");
    let all = format!("RESULT {}\n{line}", line.len());
    let mut classic = Raw::login(dir.addr, "dave").await;
    classic.ask("QUERY 0\n", &all).await;
    classic.ask("RELAYQUERY 0\n", "RELAYRESULT 0\n").await;

    let mut alice = Raw::login(dir.addr, "alice").await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    // A classic client's answers are the bytes they were before alice relayed.
    classic.ask("QUERY 0\n", &all).await;
    classic.ask("QUERY 0 alice\n", "RESULT 0\n").await;
    classic.ask("RELAYQUERY 0\n", "RELAYRESULT 5\nalice").await;
    classic
        .ask("RELAYQUERY 0 alice\n", "RELAYRESULT 5\nalice")
        .await;
    classic.ask("RELAYQUERY 0 carol\n", "RELAYRESULT 0\n").await;
    let mut bob = Raw::login(dir.addr, "bob").await;
    bob.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    classic
        .ask("RELAYQUERY 0\n", "RELAYRESULT 9\nalice\nbob")
        .await;

    // alice goes: she leaves RELAYQUERY, and frames to her are refused.
    drop(alice);
    classic
        .relay_query_until(b"bob", "alice to leave RELAYQUERY")
        .await;
    bob.send(&wire(&sec("bob", "alice", 0, 100))).await;
    bob.expect(relaynak("alice", "alice is not reachable through the relay").as_bytes())
        .await;
    bob.nothing_before_query().await;
    classic.ask("QUERY 0\n", &all).await;
    dir.stop().await;
}

#[tokio::test]
async fn frames_claiming_another_sender_are_refused_and_not_delivered() {
    let dir = Directory::start().await;
    let mut alice = Raw::login(dir.addr, "alice").await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    // bob sends without registering for relay himself.
    let mut bob = Raw::login(dir.addr, "bob").await;
    bob.send(&wire(&sec("carol", "alice", 0, 100))).await;
    bob.expect(relaynak("alice", "relayed frames must come from you (bob)").as_bytes())
        .await;
    bob.send(&wire(&hello("carol", "alice", 1, 32))).await;
    bob.expect(relaynak("alice", "relayed frames must come from you (bob)").as_bytes())
        .await;
    bob.send(&wire(&sec("bob", "bob", 0, 100))).await;
    bob.expect(relaynak("bob", "bob: cannot relay to yourself").as_bytes())
        .await;
    // The first frame alice ever receives is bob's genuine one.
    let genuine = sec("bob", "alice", 1, 100);
    bob.send(&wire(&genuine)).await;
    assert_eq!(alice.raw_frame().await.1, wire(&genuine));
    alice.nothing_before_query().await;
    bob.nothing_before_query().await;
    dir.stop().await;
}

#[tokio::test]
async fn a_later_relay_session_takes_over_and_the_earlier_one_ending_changes_nothing() {
    let dir = Directory::start().await;
    let mut first = Raw::login(dir.addr, "alice").await;
    first.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut second = Raw::login(dir.addr, "alice").await;
    second.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut bob = Raw::login(dir.addr, "bob").await;

    let f1 = sec("bob", "alice", 1, 100);
    bob.send(&wire(&f1)).await;
    assert_eq!(second.raw_frame().await.1, wire(&f1));
    first.nothing_before_query().await;

    // The earlier session ends (a protocol error: ERR, then the directory
    // closes it, its registration dropped before the ERR is written).
    first.send(b"BOGUS 0\n").await;
    assert_eq!(first.frame().await.kind, "ERR");
    assert!(!first.fill().await, "closed");

    let f2 = sec("bob", "alice", 2, 100);
    bob.send(&wire(&f2)).await;
    assert_eq!(second.raw_frame().await.1, wire(&f2));
    bob.ask("RELAYQUERY 0 alice\n", "RELAYRESULT 5\nalice")
        .await;
    second.nothing_before_query().await;
    dir.stop().await;
}

/// Payload of the frames [`flood`] sends: large, so that the sockets'
/// buffers (megabytes on loopback) fill after a few hundred frames.
const FLOOD_LEN: usize = 32 * 1024;

/// Floods `to` from `bob` with [`FLOOD_LEN`] SECs in windows of 20 (each
/// closed by a QUERY) until a whole window is refused (the destination's
/// session is then stuck in a write, its queue full), at most `max` frames.
/// Returns (frames sent, reasons of the refusals).
async fn flood(bob: &mut Raw, to: &str, max: u64) -> (u64, Vec<String>) {
    let (mut sent, mut naks) = (0u64, Vec::new());
    loop {
        assert!(sent < max, "{sent} frames and never a whole window refused");
        let mut batch = Vec::new();
        for _ in 0..20 {
            batch.extend(wire(&sec("bob", to, sent, FLOOD_LEN)));
            sent += 1;
        }
        batch.extend_from_slice(b"QUERY 0 nobody\n");
        bob.send(&batch).await;
        let window = bob.naks_until_result().await;
        let all_refused = window.len() == 20;
        naks.extend(window);
        if all_refused {
            return (sent, naks);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_does_not_read_gets_a_bounded_queue_and_the_sender_goes_on() {
    let dir = Directory::start_with(|c| {
        c.relay = RelayConfig {
            queue_frames: 8,
            queue_bytes: 64 * 1024,
            frames_per_second: 0,
            bytes_per_second: 0,
            ..RelayConfig::default()
        };
        c.write_timeout = Duration::from_secs(60);
    })
    .await;
    let mut alice = Raw::connect_small_window(dir.addr)
        .await
        .logged_in("alice")
        .await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut bob = Raw::login(dir.addr, "bob").await;

    // alice reads nothing: once the sockets' buffers are full, her queue
    // fills, and bob is refused at once rather than waiting.
    let (sent, naks) = flood(&mut bob, "alice", 2_000).await;
    let full = "the relay queue for alice is full";
    assert!(naks.iter().all(|r| r == full), "{naks:?}");
    // Steady state: nothing more is taken while she does not read.
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(wire(&sec("bob", "alice", sent + i, FLOOD_LEN)));
    }
    batch.extend_from_slice(b"QUERY 0 nobody\n");
    bob.send(&batch).await;
    assert_eq!(bob.naks_until_result().await, vec![full.to_string(); 100]);
    // bob's session is still usable.
    bob.ask("RELAYQUERY 0\n", "RELAYRESULT 5\nalice").await;

    // alice reads now: every frame not refused arrives, whole and in order,
    // and nothing else.
    let accepted = sent as usize - naks.len();
    let mut last = None;
    for _ in 0..accepted {
        let (f, raw) = alice.raw_frame().await;
        let SecureFrame::Sealed(s) = SecureFrame::parse(&f).unwrap() else {
            panic!("a SEC");
        };
        assert!(last.is_none_or(|l| s.counter > l), "in order");
        last = Some(s.counter);
        assert_eq!(raw, wire(&sec("bob", "alice", s.counter, FLOOD_LEN)));
    }
    alice.nothing_before_query().await;
    // With room again, frames pass again.
    let again = sec("bob", "alice", 1_000_000, 4096);
    bob.send(&wire(&again)).await;
    assert_eq!(alice.raw_frame().await.1, wire(&again));
    bob.nothing_before_query().await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_cannot_take_writes_is_closed_after_the_write_timeout() {
    let dir = Directory::start_with(|c| {
        c.relay = RelayConfig {
            queue_frames: 4,
            frames_per_second: 0,
            bytes_per_second: 0,
            ..RelayConfig::default()
        };
        c.write_timeout = Duration::from_millis(300);
    })
    .await;
    let mut alice = Raw::connect_small_window(dir.addr)
        .await
        .logged_in("alice")
        .await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut bob = Raw::login(dir.addr, "bob").await;
    flood(&mut bob, "alice", 2_000).await;
    // Her session is ended: she is no longer a relay destination.
    bob.relay_query_until(b"", "alice's session to be closed")
        .await;
    bob.send(&wire(&sec("bob", "alice", 9_999, 100))).await;
    bob.expect(relaynak("alice", "alice is not reachable through the relay").as_bytes())
        .await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_rate_is_refused_and_later_frames_pass() {
    let dir = Directory::start_with(|c| {
        c.relay.frames_per_second = 20; // bursts of 40
    })
    .await;
    let mut alice = Raw::login(dir.addr, "alice").await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut bob = Raw::login(dir.addr, "bob").await;
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(wire(&sec("bob", "alice", i, 100)));
    }
    batch.extend_from_slice(b"QUERY 0 nobody\n");
    bob.send(&batch).await;
    let naks = bob.naks_until_result().await;
    assert!(
        naks.iter().all(|r| r == "relay rate limit: slow down"),
        "{naks:?}"
    );
    let accepted = 100 - naks.len();
    assert!((40..=60).contains(&accepted), "{accepted} of 100 taken");
    for _ in 0..accepted {
        alice.frame().await;
    }
    alice.nothing_before_query().await;
    // A quarter of a second refills 5 frames.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.extend(wire(&sec("bob", "alice", 200 + i, 100)));
    }
    batch.extend_from_slice(b"QUERY 0 nobody\n");
    bob.send(&batch).await;
    assert_eq!(bob.naks_until_result().await, Vec::<String>::new());
    for i in 0..3 {
        assert_eq!(
            alice.raw_frame().await.1,
            wire(&sec("bob", "alice", 200 + i, 100))
        );
    }
    dir.stop().await;

    // Bytes are limited too: at 1,000 B/s a burst is one largest frame's worth.
    let dir = Directory::start_with(|c| {
        c.relay.bytes_per_second = 1000;
    })
    .await;
    let mut alice = Raw::login(dir.addr, "alice").await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut bob = Raw::login(dir.addr, "bob").await;
    let mut batch = Vec::new();
    for i in 0..30 {
        batch.extend(wire(&sec("bob", "alice", i, 4096)));
    }
    batch.extend_from_slice(b"QUERY 0 nobody\n");
    bob.send(&batch).await;
    let naks = bob.naks_until_result().await;
    let accepted = 30 - naks.len();
    assert!((14..=17).contains(&accepted), "{accepted} of 30 taken");
    dir.stop().await;
}

#[tokio::test]
async fn a_directory_without_relay_says_so() {
    let dir = Directory::start_with(|c| c.relay.enabled = false).await;
    let mut alice = Raw::login(dir.addr, "alice").await;
    let off = "relay is disabled on this directory";
    alice
        .ask("RELAY 0\n", &format!("NAK {}\n{off}", off.len()))
        .await;
    alice.ask("RELAYQUERY 0\n", "RELAYRESULT 0\n").await;
    alice.send(&wire(&sec("alice", "bob", 0, 100))).await;
    alice.expect(relaynak("bob", off).as_bytes()).await;
    alice.nothing_before_query().await;
    dir.stop().await;
}

#[tokio::test]
async fn relayed_frames_are_for_logged_in_sessions_only() {
    let dir = Directory::start().await;
    let mut anon = Raw::connect(dir.addr).await;
    anon.send(&wire(&sec("alice", "bob", 0, 100))).await;
    let f = anon.frame().await;
    assert_eq!(f.kind, "ERR");
    assert!(!anon.fill().await, "closed");
    // Before log-in the frame limit stays at 64 KiB.
    let mut anon = Raw::connect(dir.addr).await;
    anon.send(&wire(&sec("alice", "bob", 0, MAX_SEC_PAYLOAD)))
        .await;
    let f = anon.frame().await;
    assert_eq!(f.kind, "ERR");
    assert!(f.text().unwrap().contains("exceeds the limit"), "{f}");
    dir.stop().await;
}

/// The directory binary, logging everything (`RUST_LOG=trace`), relays
/// and refuses frames whose payloads carry a marker: its log output never
/// contains the marker, in any spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_log_never_holds_relayed_payloads() {
    const MARKER: &[u8] = b"PLAINTEXT-MARKER-5e1f";
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .args([
            "directory",
            "--listen",
            "127.0.0.1:0",
            "--open-registration",
        ])
        .args([
            "--relay-frames-per-second",
            "25",
            "--relay-queue-frames",
            "4",
        ])
        .arg("--db")
        .arg(tmp.path().join("d.db"))
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn({
        let (log, stderr) = (log.clone(), child.stderr.take().unwrap());
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = logged_addr(&line) {
                    let _ = tx.send(a);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .parse()
        .unwrap();

    let marked = |from: &str, to: &str, counter: u64| {
        let mut payload = MARKER.repeat(4);
        payload.extend_from_slice(&counter.to_be_bytes());
        SecureFrame::Sealed(Sealed {
            from: from.into(),
            to: to.into(),
            epoch: 0,
            counter,
            payload,
        })
    };
    let mut alice = Raw::login(addr, "alice").await;
    alice.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    let mut bob = Raw::login(addr, "bob").await;
    bob.ask("RELAY 0\n", "ACK 8\nrelay on").await;
    // Delivered, both kinds.
    let f = marked("bob", "alice", 0);
    bob.send(&wire(&f)).await;
    assert_eq!(alice.raw_frame().await.1, wire(&f));
    let h = SecureFrame::Hello(Hello {
        from: "bob".into(),
        to: "alice".into(),
        step: 1,
        // Forwarded as it came, cipher and all.
        cipher: Cipher::AesGcm,
        payload: MARKER.to_vec(),
    });
    bob.send(&wire(&h)).await;
    assert_eq!(alice.raw_frame().await.1, wire(&h));
    // Refused: spoofed, to nobody, to oneself, over the rate.
    let mut batch = Vec::new();
    batch.extend(wire(&marked("carol", "alice", 1)));
    batch.extend(wire(&marked("bob", "nobody", 2)));
    batch.extend(wire(&marked("bob", "bob", 3)));
    for i in 0..60 {
        batch.extend(wire(&marked("bob", "alice", 10 + i)));
    }
    batch.extend_from_slice(b"QUERY 0 nobody\n");
    bob.send(&batch).await;
    let naks = bob.naks_until_result().await;
    assert!(naks.iter().any(|r| r == "relay rate limit: slow down"));
    assert!(naks.len() >= 3 && naks.len() < 63, "{naks:?}");
    // A malformed SEC (too short) closes with ERR.
    bob.send(b"SEC 5 bob alice 0 0\nPLAIN").await;
    assert_eq!(bob.frame().await.kind, "ERR");
    drop((alice, bob));

    // Stop the directory we started (by its own id) and read the rest.
    eventually(10, "the log to show the refusals", || {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .contains("relayed frame refused")
                .then_some(())
        }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    // The log did see the relay at work, at every level...
    for expected in [
        "relay registered",
        "relaying",
        "relayed frame refused",
        "len=",
    ] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    // ...and never its payloads: as text, as hex, or as a byte list.
    let text = String::from_utf8_lossy(MARKER).into_owned();
    let hex: String = MARKER.iter().map(|b| format!("{b:02x}")).collect();
    let list = format!("{:?}", &MARKER[..6]);
    let list = list.trim_matches(|c| c == '[' || c == ']');
    for spelling in [text.as_str(), "PLAINTEXT", "PLAIN", &hex, list] {
        assert!(!log.contains(spelling), "log holds {spelling:?}");
    }
}
