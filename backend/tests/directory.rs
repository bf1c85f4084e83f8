//! The directory server over raw TCP, as a classic eurechat client or `nc`
//! would talk to it. Every test starts its own server on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use roundtable::directory::accounts::{provision, HashCost, ThrottlePolicy};
use roundtable::directory::checker::CheckerConfig;
use roundtable::directory::{serve, DirectoryConfig};
use roundtable::events::Events;
use roundtable::framing::Connection;
use roundtable::node::directory_client::{self, DirectoryClientConfig};
use roundtable::node::peers::Peers;
use roundtable::store::directory::DirectoryStore;
use roundtable_shared::directory::{Reply, Request};
use roundtable_shared::frame::{decode, Decoded, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Cheap hashes keep a thousand logins fast; the server reads each hash's
/// own parameters, so this changes nothing else.
const CHEAP: HashCost = HashCost {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn config() -> DirectoryConfig {
    DirectoryConfig {
        hash_cost: CHEAP,
        port_test_timeout: Duration::from_millis(500),
        checker: CheckerConfig {
            interval: Duration::from_secs(3600),
            timeout: Duration::from_millis(500),
            parallelism: 64,
        },
        ..DirectoryConfig::default()
    }
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    db: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    async fn start(config: DirectoryConfig, users: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("directory.db");
        let mut s = Server::start_on(db, config, users).await;
        s._dir = Some(dir);
        s
    }

    async fn start_on(db: PathBuf, config: DirectoryConfig, users: &[(&str, &str)]) -> Server {
        let store = DirectoryStore::open(&db).unwrap();
        for (n, p) in users {
            provision(&store, n, p, CHEAP).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { serve(listener, store, config, stop).await.unwrap() }
        });
        Server {
            addr,
            stop,
            task,
            db,
            _dir: None,
        }
    }

    async fn stop(self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops promptly")
            .unwrap();
        (self.db, self._dir)
    }
}

/// A chat port that answers PING with PONG, like any eurechat peer.
struct Peer {
    port: u16,
    task: JoinHandle<()>,
}

impl Peer {
    async fn start() -> Peer {
        Peer::start_on("127.0.0.1").await
    }

    /// A peer listening on another loopback address (another host, as far
    /// as the directory can tell).
    async fn start_on(ip: &str) -> Peer {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let mut c = Connection::new(s, Limits::default());
                    while let Ok(Some(f)) = c.read_frame().await {
                        if f.kind == "PING"
                            && c.write_frame(&Frame::bare("PONG", "")).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Peer { port, task }
    }

    /// Kills the peer: its port refuses connections from now on.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A raw client: writes bytes, reads exact bytes, as `nc` would.
struct Raw(TcpStream, Vec<u8>);

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw(TcpStream::connect(addr).await.unwrap(), Vec::new())
    }

    /// Connects from the loopback address `source` (another client host,
    /// as far as the server can tell).
    async fn connect_from(addr: SocketAddr, source: &str) -> Raw {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(source.parse().unwrap(), 0))
            .unwrap();
        Raw(socket.connect(addr).await.unwrap(), Vec::new())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes into the buffer; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut chunk))
            .await
            .expect("the server answers in time")
            .unwrap_or(0);
        self.1.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads exactly `expected.len()` bytes and compares.
    async fn expect(&mut self, expected: &[u8]) {
        while self.1.len() < expected.len() {
            if !self.fill().await {
                break;
            }
        }
        let n = expected.len().min(self.1.len());
        let got: Vec<u8> = self.1.drain(..n).collect();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Sends `line`, expects `reply` back.
    async fn ask(&mut self, line: &str, reply: &str) {
        self.send(line.as_bytes()).await;
        self.expect(reply.as_bytes()).await;
    }

    /// Reads one frame.
    async fn frame(&mut self) -> Frame {
        loop {
            if let Decoded::Frame(f, n) = decode(&self.1, &Limits::default()).unwrap() {
                self.1.drain(..n);
                return f;
            }
            assert!(self.fill().await, "a frame, not EOF");
        }
    }

    /// Expects an `ERR` whose payload contains `reason`, then the server closing.
    async fn expect_err_and_close(&mut self, reason: &str) {
        let f = self.frame().await;
        assert_eq!(f.kind, "ERR", "payload: {:?}", f.text());
        let text = f.text().unwrap().to_owned();
        assert!(
            text.contains(reason),
            "ERR {text:?} should mention {reason:?}"
        );
        self.expect_closed().await;
    }

    async fn expect_closed(&mut self) {
        assert!(
            self.1.is_empty(),
            "unexpected {:?}",
            String::from_utf8_lossy(&self.1)
        );
        assert!(
            !self.fill().await,
            "expected EOF, got {:?}",
            String::from_utf8_lossy(&self.1)
        );
    }

    async fn login(addr: SocketAddr, user: &str, pass: &str) -> Raw {
        let mut c = Raw::connect(addr).await;
        c.ask(
            &format!("USER 0 {user}\n"),
            &format!(
                "ACK {}\nhi {user}, authentication required",
                28 + user.len()
            ),
        )
        .await;
        c.ask(
            &format!("PASS 0 {pass}\n"),
            "ACK 26\nsuccessfully authenticated",
        )
        .await;
        c
    }

    async fn query(&mut self, who: Option<&str>) -> String {
        match who {
            Some(w) => self.send(format!("QUERY 0 {w}\n").as_bytes()).await,
            None => self.send(b"QUERY 0\n").await,
        }
        let f = self.frame().await;
        assert_eq!(f.kind, "RESULT");
        f.text().unwrap().to_owned()
    }
}

async fn registered(addr: SocketAddr) -> String {
    let mut c = Raw::login(addr, "observer", "pw").await;
    c.query(None).await
}

#[tokio::test]
async fn nc_session_byte_for_byte() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    let peer = Peer::start().await;
    let p = peer.port;
    let mut nc = Raw::connect(server.addr).await;
    nc.ask(
        "USER 0 corrado\n",
        "ACK 35\nhi corrado, authentication required",
    )
    .await;
    nc.ask("PASS 0 mypass\n", "ACK 26\nsuccessfully authenticated")
        .await;
    // Ephemeral ports have five digits, like 5555 had four: lengths below
    // are those of the slides plus one.
    nc.ask(
        &format!("BIND 0 127.0.0.1 {p}\n"),
        &format!("ACK 37\nbound successfully to 127.0.0.1:{p}"),
    )
    .await;
    nc.ask("QUERY 0\n", &format!("RESULT 23\ncorrado,127.0.0.1,{p}"))
        .await;
    nc.ask(
        "QUERY 0 corrado\n",
        &format!("RESULT 23\ncorrado,127.0.0.1,{p}"),
    )
    .await;
    nc.ask("QUERY 0 nobody\n", "RESULT 0\n").await;
    nc.ask("LEAVE 0\n", "ACK 27\nderegistered from directory")
        .await;
    nc.ask("QUERY 0\n", "RESULT 0\n").await;
    server.stop().await;
}

#[tokio::test]
async fn login_is_a_synonym_of_user_and_crlf_is_tolerated() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    let mut c = Raw::connect(server.addr).await;
    c.ask(
        "LOGIN 0 corrado\r\n",
        "ACK 35\nhi corrado, authentication required",
    )
    .await;
    c.ask("PASS 0 mypass\r\n", "ACK 26\nsuccessfully authenticated")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_whole_session_in_one_write_and_byte_by_byte() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    let peer = Peer::start().await;
    let p = peer.port;
    let session = format!("USER 0 corrado\nPASS 0 mypass\nBIND 0 127.0.0.1 {p}\nQUERY 0\n");
    let replies = format!(
        "ACK 35\nhi corrado, authentication required\
         ACK 26\nsuccessfully authenticated\
         ACK 37\nbound successfully to 127.0.0.1:{p}\
         RESULT 23\ncorrado,127.0.0.1,{p}"
    );

    let mut coalesced = Raw::connect(server.addr).await;
    coalesced.send(session.as_bytes()).await;
    coalesced.expect(replies.as_bytes()).await;

    let mut split = Raw::connect(server.addr).await;
    split.0.set_nodelay(true).unwrap();
    for b in session.as_bytes() {
        split.send(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    split.expect(replies.as_bytes()).await;
    server.stop().await;
}

#[tokio::test]
async fn out_of_order_and_unknown_commands_are_refused_and_closed() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    let a = server.addr;

    let mut c = Raw::connect(a).await;
    c.send(b"PASS 0 mypass\n").await;
    c.expect_err_and_close("a 'USER <username>' command was expected!")
        .await;

    let mut c = Raw::connect(a).await;
    c.send(b"BIND 0 127.0.0.1 5555\n").await;
    c.expect_err_and_close("'USER <username>'").await;

    let mut c = Raw::connect(a).await;
    c.ask(
        "USER 0 corrado\n",
        "ACK 35\nhi corrado, authentication required",
    )
    .await;
    c.send(b"BIND 0 127.0.0.1 5555\n").await;
    c.expect_err_and_close("a 'PASS <password>' command was expected!")
        .await;

    let mut c = Raw::connect(a).await;
    c.send(b"USER 0\n").await;
    c.expect_err_and_close("'USER <username>'").await;

    let mut c = Raw::connect(a).await;
    c.send(b"USER 0 a,b\n").await;
    c.expect_err_and_close("invalid user name").await;

    let mut c = Raw::login(a, "corrado", "mypass").await;
    c.send(b"HELLO 0\n").await;
    c.expect_err_and_close("I did not understand the message HELLO")
        .await;

    for bad in [
        "BIND 0 127.0.0.1\n",
        "QUERY 0 a b\n",
        "LEAVE 0 now\n",
        "USER 0 corrado\n",
    ] {
        let mut c = Raw::login(a, "corrado", "mypass").await;
        c.send(bad.as_bytes()).await;
        let kind = bad.split(' ').next().unwrap();
        c.expect_err_and_close(&format!("I did not understand the message {kind}"))
            .await;
    }

    for bad_port in ["0", "65536", "http", "-1"] {
        let mut c = Raw::login(a, "corrado", "mypass").await;
        c.send(format!("BIND 0 127.0.0.1 {bad_port}\n").as_bytes())
            .await;
        c.expect_err_and_close("invalid bind notification").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_err_at_once_never_a_hang() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    let a = server.addr;
    // Each is refused as soon as its bad byte arrives (no newline needed).
    for bad in [
        &b"\x01\x00\x00\x00"[..],
        b"USER x",
        b" USER",
        b"USER 0 a\tb",
        b"\xff\xfe",
    ] {
        let mut c = Raw::connect(a).await;
        c.send(bad).await;
        c.expect_err_and_close("malformed message").await;
    }
    // A length above the limit is refused before any payload is sent.
    let mut c = Raw::connect(a).await;
    c.send(b"USER 99999999999 corrado\n").await;
    c.expect_err_and_close("exceeds the limit").await;
    // A header line that never ends.
    let mut c = Raw::connect(a).await;
    c.send(&[b'A'; 5000]).await;
    c.expect_err_and_close("header longer than").await;
    // Mid-session garbage after authentication.
    let mut c = Raw::login(a, "corrado", "mypass").await;
    c.send(b"QUERY 0\x07\n").await;
    c.expect_err_and_close("malformed message").await;
    // The server still serves everyone else.
    Raw::login(a, "corrado", "mypass").await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_password_registers_nothing_and_closes() {
    let server = Server::start(config(), &[("corrado", "mypass"), ("observer", "pw")]).await;
    let peer = Peer::start().await;
    let mut c = Raw::connect(server.addr).await;
    c.ask(
        "USER 0 corrado\n",
        "ACK 35\nhi corrado, authentication required",
    )
    .await;
    c.send(format!("PASS 0 wrong\nBIND 0 127.0.0.1 {}\n", peer.port).as_bytes())
        .await;
    c.expect_err_and_close("authentication failed").await;
    // Unknown users are refused the same way (no open registration by default).
    let mut c = Raw::connect(server.addr).await;
    c.ask(
        "USER 0 mallory\n",
        "ACK 35\nhi mallory, authentication required",
    )
    .await;
    c.send(b"PASS 0 anything\n").await;
    c.expect_err_and_close("authentication failed").await;
    assert_eq!(registered(server.addr).await, "");
    server.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_throttled_even_with_the_right_password() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    for _ in 0..5 {
        let mut c = Raw::connect(server.addr).await;
        c.send(b"USER 0 corrado\nPASS 0 guess\n").await;
        c.frame().await;
        c.expect_err_and_close("authentication failed").await;
    }
    let mut c = Raw::connect(server.addr).await;
    c.send(b"USER 0 corrado\nPASS 0 guess\n").await;
    c.frame().await;
    c.expect_err_and_close("authentication failed").await;
    let mut c = Raw::connect(server.addr).await;
    c.send(b"USER 0 corrado\nPASS 0 mypass\n").await;
    c.frame().await;
    c.expect_err_and_close("too many failed attempts").await;
    server.stop().await;
}

#[tokio::test]
async fn open_registration_creates_accounts_on_first_login() {
    let closed = Server::start(config(), &[]).await;
    let mut c = Raw::connect(closed.addr).await;
    c.send(b"USER 0 newbie\nPASS 0 pw\n").await;
    c.frame().await;
    c.expect_err_and_close("authentication failed").await;
    closed.stop().await;

    let open = Server::start(
        DirectoryConfig {
            open_registration: true,
            ..config()
        },
        &[],
    )
    .await;
    Raw::login(open.addr, "newbie", "pw").await;
    Raw::login(open.addr, "newbie", "pw").await;
    let mut c = Raw::connect(open.addr).await;
    c.send(b"USER 0 newbie\nPASS 0 other\n").await;
    c.frame().await;
    c.expect_err_and_close("authentication failed").await;
    open.stop().await;
}

#[tokio::test]
async fn bind_without_pong_registers_nothing() {
    let server = Server::start(config(), &[("corrado", "mypass"), ("observer", "pw")]).await;
    // Nobody listening.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = free.local_addr().unwrap().port();
    drop(free);
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.send(format!("BIND 0 127.0.0.1 {dead_port}\n").as_bytes())
        .await;
    c.expect_err_and_close("invalid bind notification").await;

    // Listening, but silent: like `nc -l`, it never says PONG.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.send(format!("BIND 0 127.0.0.1 {silent_port}\n").as_bytes())
        .await;
    c.expect_err_and_close("invalid bind notification").await;

    // Answers, but not PONG.
    let liar = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_port = liar.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = liar.accept().await {
            let _ = s.write_all(b"PING 0\n").await;
        }
    });
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.send(format!("BIND 0 127.0.0.1 {liar_port}\n").as_bytes())
        .await;
    c.expect_err_and_close("invalid bind notification").await;

    assert_eq!(registered(server.addr).await, "");
    server.stop().await;
}

#[tokio::test]
async fn nobody_binds_or_leaves_as_someone_else() {
    let users = [("alice", "a"), ("bob", "b"), ("observer", "pw")];
    let server = Server::start(config(), &users).await;
    let (pa, pb) = (Peer::start().await, Peer::start().await);
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    alice
        .send(format!("BIND 0 127.0.0.1 {}\n", pa.port).as_bytes())
        .await;
    alice.frame().await;
    let mut bob = Raw::login(server.addr, "bob", "b").await;
    // Bob's LEAVE and BIND concern Bob only.
    bob.ask("LEAVE 0\n", "ACK 27\nderegistered from directory")
        .await;
    bob.send(format!("BIND 0 127.0.0.1 {}\n", pb.port).as_bytes())
        .await;
    bob.frame().await;
    assert_eq!(
        registered(server.addr).await,
        format!("alice,127.0.0.1,{}\nbob,127.0.0.1,{}", pa.port, pb.port)
    );
    // The same name with the wrong password gets nowhere.
    let mut eve = Raw::connect(server.addr).await;
    eve.send(b"USER 0 alice\nPASS 0 b\nLEAVE 0\n").await;
    eve.frame().await;
    eve.expect_err_and_close("authentication failed").await;
    assert!(registered(server.addr).await.starts_with("alice,"));
    server.stop().await;
}

#[tokio::test]
async fn checker_deregisters_a_killed_peer() {
    let cfg = DirectoryConfig {
        checker: CheckerConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            parallelism: 8,
        },
        ..config()
    };
    let server = Server::start(cfg, &[("alive", "a"), ("doomed", "d"), ("observer", "pw")]).await;
    let (alive, doomed) = (Peer::start().await, Peer::start().await);
    for (name, pw, port) in [("alive", "a", alive.port), ("doomed", "d", doomed.port)] {
        let mut c = Raw::login(server.addr, name, pw).await;
        c.send(format!("BIND 0 127.0.0.1 {port}\n").as_bytes())
            .await;
        assert_eq!(c.frame().await.kind, "ACK");
    }
    // Several sweeps pass; both still answer.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(registered(server.addr).await.lines().count(), 2);
    doomed.kill().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = registered(server.addr).await;
        if now == format!("alive,127.0.0.1,{}", alive.port) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still registered: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn registrations_survive_a_restart_and_are_rechecked() {
    let users = [("stays", "s"), ("dies", "d"), ("observer", "pw")];
    let server = Server::start(config(), &users).await;
    let (stays, dies) = (Peer::start().await, Peer::start().await);
    for (name, pw, port) in [("stays", "s", stays.port), ("dies", "d", dies.port)] {
        let mut c = Raw::login(server.addr, name, pw).await;
        c.send(format!("BIND 0 127.0.0.1 {port}\n").as_bytes())
            .await;
        assert_eq!(c.frame().await.kind, "ACK");
    }
    let (db, dir) = server.stop().await;
    // While the directory is down, one peer dies.
    dies.kill().await;
    let mut server = Server::start_on(db, config(), &[]).await;
    server._dir = dir;
    // The restarted server re-verifies at once: only the live one remains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = registered(server.addr).await;
        if now == format!("stays,127.0.0.1,{}", stays.port) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registered: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn idle_unauthenticated_connections_time_out() {
    let server = Server::start(
        DirectoryConfig {
            auth_timeout: Duration::from_millis(300),
            ..config()
        },
        &[("corrado", "mypass")],
    )
    .await;
    let mut idle = Raw::connect(server.addr).await;
    // Half a header is not activity either.
    idle.send(b"USER 0 corr").await;
    idle.expect_err_and_close("idle").await;
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_told_busy() {
    let server = Server::start(
        DirectoryConfig {
            max_connections: 2,
            ..config()
        },
        &[("corrado", "mypass")],
    )
    .await;
    let _a = Raw::login(server.addr, "corrado", "mypass").await;
    let _b = Raw::login(server.addr, "corrado", "mypass").await;
    let mut c = Raw::connect(server.addr).await;
    c.expect_err_and_close("server busy").await;
    drop(_a);
    // A slot frees up once a client leaves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = Raw::connect(server.addr).await;
        d.send(b"USER 0 corrado\n").await;
        let f = d.frame().await;
        if f.kind == "ACK" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_client_does_not_stall_others() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    // One client sends half a frame and goes quiet; another floods garbage slowly.
    let mut stalled = Raw::connect(server.addr).await;
    stalled.send(b"USER 0 corrado\nPASS 0 myp").await;
    let mut slow = Raw::connect(server.addr).await;
    slow.send(b"USER 0 cor").await;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        Raw::login(server.addr, "corrado", "mypass").await;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_tells_open_sessions_and_stops() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    let addr = server.addr;
    server.stop().await;
    c.expect_err_and_close("shutting down").await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients_each_complete_a_session() {
    const N: usize = 1000;
    let names: Vec<String> = (0..N).map(|i| format!("user{i}")).collect();
    let users: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "pw")).collect();
    let server = Server::start(config(), &users).await;
    // Twenty client hosts, fifty clients each (within the per-source cap),
    // each host with its chat port.
    let hosts: Vec<String> = (1..=20).map(|h| format!("127.0.1.{h}")).collect();
    let mut peers = Vec::new();
    for h in &hosts {
        peers.push(Peer::start_on(h).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for (i, name) in names.clone().into_iter().enumerate() {
        let (host, port) = (hosts[i % 20].clone(), peers[i % 20].port);
        let (addr, barrier) = (server.addr, barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect_from(addr, &host).await;
            // Everyone connected before anyone speaks: truly concurrent.
            barrier.wait().await;
            c.ask(
                &format!("USER 0 {name}\n"),
                &format!(
                    "ACK {}\nhi {name}, authentication required",
                    28 + name.len()
                ),
            )
            .await;
            c.ask("PASS 0 pw\n", "ACK 26\nsuccessfully authenticated")
                .await;
            c.send(format!("BIND 0 {host} {port}\n").as_bytes()).await;
            assert_eq!(c.frame().await.kind, "ACK");
            let me = c.query(Some(&name)).await;
            assert_eq!(me, format!("{name},{host},{port}"));
            c.ask("LEAVE 0\n", "ACK 27\nderegistered from directory")
                .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.stop().await;
}

// ---- Finding 6: bounded fields and a bounded RESULT ----

#[tokio::test]
async fn bind_with_an_invalid_or_overlong_address_is_refused() {
    let server = Server::start(config(), &[("corrado", "mypass"), ("observer", "pw")]).await;
    let peer = Peer::start().await;
    // What an old resolver reads as 127.0.0.1, 3 KiB long: the audit's probe.
    let zeros = format!("127.{}0.0.1", "0".repeat(3000));
    let label = "a".repeat(63);
    let too_long = format!("{label}.{label}.{label}.{}", "b".repeat(62));
    assert_eq!(too_long.len(), 254);
    for bad in [
        zeros.as_str(),
        too_long.as_str(),
        "127.1",
        "host_name.example",
    ] {
        let mut c = Raw::login(server.addr, "corrado", "mypass").await;
        c.send(format!("BIND 0 {bad} {}\n", peer.port).as_bytes())
            .await;
        c.expect_err_and_close("invalid bind notification: bad address")
            .await;
    }
    assert_eq!(registered(server.addr).await, "");
    server.stop().await;
}

#[tokio::test]
async fn the_all_users_result_stays_within_its_bound() {
    let names: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    let mut users: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "pw")).collect();
    users.push(("observer", "pw"));
    let cap = 200;
    let server = Server::start(
        DirectoryConfig {
            max_result_bytes: cap,
            ..config()
        },
        &users,
    )
    .await;
    let peer = Peer::start().await;
    let (mut bound, mut full) = (0, 0);
    for n in &names {
        let mut c = Raw::login(server.addr, n, "pw").await;
        c.send(format!("BIND 0 127.0.0.1 {}\n", peer.port).as_bytes())
            .await;
        let f = c.frame().await;
        match f.kind.as_str() {
            "ACK" => bound += 1,
            _ => {
                assert_eq!(f.text(), Some("directory full"));
                c.expect_closed().await;
                full += 1;
            }
        }
    }
    // Lines of 19 bytes plus separators: ten fit in 200 bytes.
    assert_eq!((bound, full), (10, 10));
    let all = registered(server.addr).await;
    assert!(all.len() <= cap, "{} bytes", all.len());
    assert_eq!(all.lines().count(), 10);
    server.stop().await;
}

// ---- Finding 7: the login throttle cannot be raced, and locks a name only briefly ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_are_bounded_and_the_name_lockout_is_short() {
    let policy = ThrottlePolicy {
        free_per_name: 5,
        base_lockout: Duration::from_secs(1),
        max_name_lockout: Duration::from_secs(2),
        ..ThrottlePolicy::default()
    };
    // A real-cost hash, as the audit's server had: verifying takes long
    // enough that concurrent guesses all arrive before the first one fails.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("directory.db");
    provision(
        &DirectoryStore::open(&db).unwrap(),
        "corrado",
        "mypass",
        HashCost::default(),
    )
    .unwrap();
    let cfg = DirectoryConfig {
        throttle: policy,
        ..config()
    };
    let mut server = Server::start_on(db, cfg, &[]).await;
    server._dir = Some(dir);
    const N: usize = 40;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (addr, barrier) = (server.addr, barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            barrier.wait().await;
            c.send(format!("USER 0 corrado\nPASS 0 guess{i}\n").as_bytes())
                .await;
            assert_eq!(c.frame().await.kind, "ACK");
            let f = c.frame().await;
            assert_eq!(f.kind, "ERR");
            f.text().unwrap().to_owned()
        }));
    }
    let (mut verified, mut throttled) = (0, 0);
    for t in tasks {
        let text = t.await.unwrap();
        if text == "authentication failed" {
            verified += 1;
        } else {
            assert!(text.contains("too many failed attempts"), "{text}");
            throttled += 1;
        }
    }
    // Five free attempts, plus at most a spaced retry or two while the
    // burst lasts; every other guess is refused unchecked.
    assert!(
        (1..=7).contains(&verified),
        "{verified} of {N} guesses were checked"
    );
    assert_eq!(verified + throttled, N);
    // The real user, from another address, gets in once the short lockout
    // of the name has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2 + 5);
    loop {
        let mut c = Raw::connect_from(server.addr, "127.0.0.2").await;
        c.send(b"USER 0 corrado\nPASS 0 mypass\n").await;
        c.frame().await;
        let f = c.frame().await;
        if f.kind == "ACK" {
            assert_eq!(f.text(), Some("successfully authenticated"));
            break;
        }
        assert!(
            f.text().unwrap().contains("too many failed attempts"),
            "{:?}",
            f.text()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the right password is still refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

// ---- Finding 8: one source cannot fill the directory ----

#[tokio::test]
async fn one_source_cannot_fill_the_directory() {
    let server = Server::start(
        DirectoryConfig {
            max_connections: 64,
            max_connections_per_source: 16,
            ..config()
        },
        &[("corrado", "mypass")],
    )
    .await;
    let peer = Peer::start().await;
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(Raw::connect_from(server.addr, "127.0.0.2").await);
    }
    // Someone else still gets a whole session.
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.send(format!("BIND 0 127.0.0.1 {}\n", peer.port).as_bytes())
        .await;
    assert_eq!(c.frame().await.kind, "ACK");
    assert_eq!(
        c.query(None).await,
        format!("corrado,127.0.0.1,{}", peer.port)
    );
    // The source's connections past its cap were told why and closed.
    for mut extra in held.drain(16..) {
        extra
            .expect_err_and_close("too many connections from your address")
            .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn the_log_in_deadline_covers_user_and_pass_together() {
    let server = Server::start(
        DirectoryConfig {
            auth_timeout: Duration::from_secs(1),
            ..config()
        },
        &[("corrado", "mypass")],
    )
    .await;
    let started = tokio::time::Instant::now();
    let mut c = Raw::connect(server.addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.ask(
        "USER 0 corrado\n",
        "ACK 35\nhi corrado, authentication required",
    )
    .await;
    // A deadline per message would allow until 1.6 s; one for both ends at 1 s.
    c.expect_err_and_close("idle too long").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1450), "closed after {took:?}");
    assert!(DirectoryConfig::default().auth_timeout <= Duration::from_secs(10));
    server.stop().await;
}

// ---- Finding 9: the port test is not a scanner ----

#[tokio::test]
async fn bind_is_only_to_the_clients_own_address() {
    let users = [("corrado", "mypass"), ("observer", "pw")];
    let foreign = Peer::start_on("127.0.0.2").await;
    let server = Server::start(config(), &users).await;
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.send(format!("BIND 0 127.0.0.2 {}\n", foreign.port).as_bytes())
        .await;
    c.expect_err_and_close("not the address you connect from")
        .await;
    // A host name must resolve to the client's address too.
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.send(format!("BIND 0 localhost {}\n", foreign.port).as_bytes())
        .await;
    c.expect_err_and_close("invalid bind notification").await;
    assert_eq!(registered(server.addr).await, "");
    // ... and then it is accepted, registered under the name given.
    let own = Peer::start().await;
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.ask(
        &format!("BIND 0 localhost {}\n", own.port),
        &format!("ACK 37\nbound successfully to localhost:{}", own.port),
    )
    .await;
    assert_eq!(
        registered(server.addr).await,
        format!("corrado,localhost,{}", own.port)
    );
    server.stop().await;

    // Behind a proxy, the operator can allow foreign addresses.
    let server = Server::start(
        DirectoryConfig {
            allow_foreign_bind: true,
            ..config()
        },
        &users,
    )
    .await;
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    c.send(format!("BIND 0 127.0.0.2 {}\n", foreign.port).as_bytes())
        .await;
    assert_eq!(c.frame().await.kind, "ACK");
    assert_eq!(
        registered(server.addr).await,
        format!("corrado,127.0.0.2,{}", foreign.port)
    );
    server.stop().await;
}

#[tokio::test]
async fn bind_floods_are_refused() {
    let server = Server::start(config(), &[("corrado", "mypass")]).await;
    let peer = Peer::start().await;
    let mut c = Raw::login(server.addr, "corrado", "mypass").await;
    let per_minute = DirectoryConfig::default().max_binds_per_minute;
    assert!(per_minute > 0);
    for _ in 0..per_minute {
        c.send(format!("BIND 0 127.0.0.1 {}\n", peer.port).as_bytes())
            .await;
        assert_eq!(c.frame().await.kind, "ACK");
    }
    c.send(format!("BIND 0 127.0.0.1 {}\n", peer.port).as_bytes())
        .await;
    c.expect_err_and_close("too many BIND requests").await;
    server.stop().await;
}

// ---- Finding 4 and 6, node side: the node's directory client against a scripted directory ----

/// What the scripted directory answers to an all-users QUERY, by how many
/// it has answered before.
type Script = fn(usize) -> Vec<u8>;

/// A directory that speaks the protocol without checking anything, answers
/// all-users QUERYs with the raw bytes of `script`, single-user QUERYs with
/// bob's and alice's entries, and reports every request with the number of the
/// connection it came on.
async fn scripted_directory(
    script: Script,
) -> (SocketAddr, mpsc::UnboundedReceiver<(usize, Request)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let all_queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for conn_no in 0.. {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (tx, all_queries) = (tx.clone(), all_queries.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let (frames, used) =
                        roundtable_shared::frame::decode_all(&buf, &Limits::default()).unwrap();
                    buf.drain(..used);
                    for f in frames {
                        let req = Request::parse(&f).expect("the node speaks the protocol");
                        let _ = tx.send((conn_no, req.clone()));
                        let out = match req {
                            Request::User { name } => wire(Reply::hi(&name)),
                            Request::Pass { .. } => wire(Reply::authenticated()),
                            Request::Bind { address, port } => wire(Reply::bound(&address, port)),
                            Request::Leave => wire(Reply::deregistered()),
                            Request::Query { name: Some(n) } if n == "bob" => {
                                result("bob,127.0.0.1,1")
                            }
                            Request::Query { name: Some(n) } if n == "alice" => {
                                result("alice,127.0.0.1,4242")
                            }
                            Request::Query { name: Some(_) } => result(""),
                            Request::Query { name: None } => script(
                                all_queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                            ),
                            Request::Key { .. }
                            | Request::Rekey { .. }
                            | Request::KeyQuery { .. }
                            | Request::Relay
                            | Request::RelayQuery { .. }
                            | Request::Forward(_) => wire(Reply::Nak("scripted".into())),
                        };
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A RESULT frame's bytes.
fn result(payload: &str) -> Vec<u8> {
    Frame::bare("RESULT", payload).encode().unwrap()
}

fn wire(r: Reply) -> Vec<u8> {
    r.to_frame().encode().unwrap()
}

/// Starts a node's directory client (as `alice`, chat port 4242 on
/// 127.0.0.1) against `server`.
fn start_client(
    server: SocketAddr,
) -> (
    Peers,
    tokio_util::sync::CancellationToken,
    tokio_util::task::TaskTracker,
) {
    let events = Events::default();
    let peers = Peers::new("alice", events.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    directory_client::spawn(
        DirectoryClientConfig {
            server: server.to_string(),
            name: "alice".into(),
            password: "pw".into(),
            advertise_host: "127.0.0.1".into(),
            chat_port: 4242,
            query_interval: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            // The scripted directory speaks only the classic commands.
            key: None,
        },
        peers.clone(),
        events,
        stop.clone(),
        &tracker,
    );
    (peers, stop, tracker)
}

/// The next request the scripted directory received, within a few seconds.
async fn next_request(rx: &mut mpsc::UnboundedReceiver<(usize, Request)>) -> (usize, Request) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the node keeps talking to the directory")
        .expect("the directory runs")
}

#[tokio::test]
async fn a_node_dropped_from_the_directory_binds_again_on_the_same_session() {
    // The directory has lost alice's registration: only bob is listed.
    let (addr, mut rx) = scripted_directory(|_| result("bob,127.0.0.1,1")).await;
    let (peers, stop, tracker) = start_client(addr);
    let bind = Request::Bind {
        address: "127.0.0.1".into(),
        port: 4242,
    };
    let mut seen = Vec::new();
    loop {
        let r = next_request(&mut rx).await;
        let done = r == (0, bind.clone()) && seen.contains(&(0, Request::Query { name: None }));
        seen.push(r);
        if done {
            break;
        }
    }
    assert_eq!(
        seen[..4],
        [
            (
                0,
                Request::User {
                    name: "alice".into()
                }
            ),
            (
                0,
                Request::Pass {
                    password: "pw".into()
                }
            ),
            (0, bind.clone()),
            (0, Request::Query { name: None }),
        ]
    );
    assert!(peers.get("bob").unwrap().online);
    stop.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_node_given_an_oversized_result_asks_one_user_at_a_time() {
    // First a normal answer (bob and alice), then one larger than the
    // node's 1 MiB frame limit, as 270 registrations of 4 KiB made it.
    let (addr, mut rx) = scripted_directory(|n| {
        if n == 0 {
            result("alice,127.0.0.1,4242\nbob,127.0.0.1,1")
        } else {
            let mut huge = b"RESULT 1100000\n".to_vec();
            huge.extend_from_slice(&[b'x'; 4096]);
            huge
        }
    })
    .await;
    let (peers, stop, tracker) = start_client(addr);
    let mut all_queries = 0;
    let mut connections = 0;
    loop {
        let (conn, r) = next_request(&mut rx).await;
        connections = connections.max(conn + 1);
        match r {
            Request::Query { name: None } => all_queries += 1,
            Request::Query { name: Some(n) } if n == "bob" => break,
            _ => {}
        }
        assert!(connections <= 2, "the node reconnects in a loop");
    }
    // One normal all-users QUERY and the oversized one; then single-user
    // QUERYs for known peers, on a second session, and no more all-users.
    assert_eq!(all_queries, 2);
    assert_eq!(connections, 2);
    for _ in 0..10 {
        let (conn, r) = next_request(&mut rx).await;
        assert_eq!(conn, 1);
        assert!(matches!(&r, Request::Query { name: Some(_) }), "{r:?}");
    }
    assert!(peers.get("bob").unwrap().online);
    stop.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .unwrap();
}

// ---- Issue 13: identity keys published through the directory ----

const K1: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const K2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const K3: &str = "0000000000000000000000000000000000000000000000000000000000000001";

/// The exact `NAK` a `KEY` gets while another key is pinned for `name`.
fn conflict_nak(name: &str) -> String {
    let text = format!(
        "a different key is pinned for {name}; replace it with REKEY 0 <pinned-hex> <new-hex>, or ask the operator to reset it"
    );
    format!("NAK {}\n{text}", text.len())
}

/// The exact `KEYRESULT` listing `lines` (`name,hex` each).
fn key_result(lines: &[String]) -> String {
    let payload = lines.join("\n");
    format!("KEYRESULT {}\n{payload}", payload.len())
}

#[tokio::test]
async fn a_published_key_is_pinned_looked_up_by_others_and_kept_across_a_restart() {
    let users = [("alice", "a"), ("bob", "b")];
    let server = Server::start(config(), &users).await;
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    let mut bob = Raw::login(server.addr, "bob", "b").await;
    bob.ask("KEYQUERY 0 alice\n", "KEYRESULT 0\n").await;
    alice
        .ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;
    // Publishing the pinned key again is fine (a node does it every session).
    alice
        .ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;
    bob.ask("KEYQUERY 0 alice\n", &key_result(&[format!("alice,{K1}")]))
        .await;
    // Several names: only those with a key, in the order asked, once each.
    bob.ask(&format!("KEY 0 {K2}\n"), "ACK 13\nkey published")
        .await;
    bob.ask(
        "KEYQUERY 0 nobody bob alice bob\n",
        &key_result(&[format!("bob,{K2}"), format!("alice,{K1}")]),
    )
    .await;
    let (db, dir) = server.stop().await;
    let mut server = Server::start_on(db, config(), &[]).await;
    server._dir = dir;
    let mut bob = Raw::login(server.addr, "bob", "b").await;
    bob.ask("KEYQUERY 0 alice\n", &key_result(&[format!("alice,{K1}")]))
        .await;
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    alice
        .ask(&format!("KEY 0 {K3}\n"), &conflict_nak("alice"))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_different_key_is_refused_while_one_is_pinned_and_the_session_goes_on() {
    let server = Server::start(config(), &[("alice", "a"), ("bob", "b")]).await;
    let peer = Peer::start().await;
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    alice
        .ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;
    alice
        .ask(&format!("KEY 0 {K2}\n"), &conflict_nak("alice"))
        .await;
    // Not closed: the same session binds and queries.
    alice
        .ask(
            &format!("BIND 0 127.0.0.1 {}\n", peer.port),
            &format!("ACK 37\nbound successfully to 127.0.0.1:{}", peer.port),
        )
        .await;
    // A second session of the same account cannot replace it either.
    let mut again = Raw::login(server.addr, "alice", "a").await;
    again
        .ask(&format!("KEY 0 {K2}\n"), &conflict_nak("alice"))
        .await;
    let mut bob = Raw::login(server.addr, "bob", "b").await;
    bob.ask("KEYQUERY 0 alice\n", &key_result(&[format!("alice,{K1}")]))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn the_owner_replaces_the_pinned_key_only_by_naming_it() {
    let server = Server::start(config(), &[("alice", "a"), ("bob", "b")]).await;
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    let nak = |t: &str| format!("NAK {}\n{t}", t.len());
    alice
        .ask(
            &format!("REKEY 0 {K1} {K2}\n"),
            &nak("no key is pinned for alice; publish one with KEY"),
        )
        .await;
    alice
        .ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;
    alice
        .ask(
            &format!("REKEY 0 {K3} {K2}\n"),
            &nak(&format!("the key pinned for alice is not {K3}")),
        )
        .await;
    alice
        .ask(&format!("REKEY 0 {K1} {K2}\n"), "ACK 12\nkey replaced")
        .await;
    let mut bob = Raw::login(server.addr, "bob", "b").await;
    bob.ask("KEYQUERY 0 alice\n", &key_result(&[format!("alice,{K2}")]))
        .await;
    // The new pin holds like the first one did (a new session: the five
    // key updates of this one are spent).
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    alice
        .ask(&format!("KEY 0 {K1}\n"), &conflict_nak("alice"))
        .await;
    alice
        .ask(&format!("KEY 0 {K2}\n"), "ACK 13\nkey published")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn nobody_publishes_or_replaces_a_key_for_a_name_they_did_not_log_in_as() {
    let users = [("alice", "a"), ("mallory", "m")];
    let server = Server::start(config(), &users).await;
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    alice
        .ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;

    // Before log-in, or with the wrong password: refused and closed.
    let mut c = Raw::connect(server.addr).await;
    c.send(format!("KEY 0 {K2}\n").as_bytes()).await;
    c.expect_err_and_close("a 'USER <username>' command was expected!")
        .await;
    let mut c = Raw::connect(server.addr).await;
    c.send(format!("USER 0 alice\nKEY 0 {K2}\n").as_bytes())
        .await;
    c.frame().await;
    c.expect_err_and_close("a 'PASS <password>' command was expected!")
        .await;
    let mut c = Raw::connect(server.addr).await;
    c.send(format!("USER 0 alice\nPASS 0 m\nREKEY 0 {K1} {K2}\n").as_bytes())
        .await;
    c.frame().await;
    c.expect_err_and_close("authentication failed").await;

    // Logged in as herself, mallory cannot name alice in any key command.
    let mut m = Raw::login(server.addr, "mallory", "m").await;
    m.send(format!("KEY 0 alice {K2}\n").as_bytes()).await;
    m.expect_err_and_close("I did not understand the message KEY")
        .await;
    let mut m = Raw::login(server.addr, "mallory", "m").await;
    // Naming alice's pin replaces nothing: REKEY concerns mallory's own.
    m.ask(
        &format!("REKEY 0 {K1} {K2}\n"),
        &format!(
            "NAK {}\nno key is pinned for mallory; publish one with KEY",
            "no key is pinned for mallory; publish one with KEY".len()
        ),
    )
    .await;
    m.ask(&format!("KEY 0 {K2}\n"), "ACK 13\nkey published")
        .await;
    m.ask(
        "KEYQUERY 0 alice mallory\n",
        &key_result(&[format!("alice,{K1}"), format!("mallory,{K2}")]),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn classic_query_answers_are_byte_identical_with_keys_published() {
    let server = Server::start(config(), &[("corrado", "mypass"), ("bob", "b")]).await;
    let peer = Peer::start().await;
    let p = peer.port;
    let mut nc = Raw::login(server.addr, "corrado", "mypass").await;
    nc.ask(
        &format!("BIND 0 127.0.0.1 {p}\n"),
        &format!("ACK 37\nbound successfully to 127.0.0.1:{p}"),
    )
    .await;
    let all = format!("RESULT 23\ncorrado,127.0.0.1,{p}");
    nc.ask("QUERY 0\n", &all).await;
    nc.ask("QUERY 0 corrado\n", &all).await;
    nc.ask("QUERY 0 bob\n", "RESULT 0\n").await;
    // Both publish keys; bob has a key but no registration.
    nc.ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;
    let mut bob = Raw::login(server.addr, "bob", "b").await;
    bob.ask(&format!("KEY 0 {K2}\n"), "ACK 13\nkey published")
        .await;
    // A classic client's answers are the same bytes as before.
    let mut classic = Raw::login(server.addr, "bob", "b").await;
    classic.ask("QUERY 0\n", &all).await;
    classic.ask("QUERY 0 corrado\n", &all).await;
    classic.ask("QUERY 0 bob\n", "RESULT 0\n").await;
    nc.ask("QUERY 0\n", &all).await;
    nc.ask("LEAVE 0\n", "ACK 27\nderegistered from directory")
        .await;
    nc.ask("QUERY 0\n", "RESULT 0\n").await;
    // Leaving the directory does not unpin the key.
    classic
        .ask(
            "KEYQUERY 0 corrado\n",
            &key_result(&[format!("corrado,{K1}")]),
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn bad_key_text_and_bad_key_queries_are_refused_and_pin_nothing() {
    let server = Server::start(config(), &[("alice", "a"), ("bob", "b")]).await;
    let a = server.addr;
    let upper = K1.to_uppercase();
    let too_many: Vec<String> = (0..33).map(|i| format!("u{i}")).collect();
    let cases = [
        (format!("KEY 0 {upper}\n"), "invalid key"),
        (format!("KEY 0 {}\n", &K1[1..]), "invalid key"),
        (format!("KEY 0 {K1}0\n"), "invalid key"),
        (format!("KEY 0 0x{}\n", &K1[2..]), "invalid key"),
        (format!("KEY 0 {}\n", "g".repeat(64)), "invalid key"),
        (
            "KEY 0\n".to_string(),
            "I did not understand the message KEY",
        ),
        (format!("REKEY 0 {K1} {upper}\n"), "invalid key"),
        (
            format!("REKEY 0 {K1}\n"),
            "I did not understand the message REKEY",
        ),
        (
            "KEYQUERY 0\n".to_string(),
            "I did not understand the message KEYQUERY",
        ),
        ("KEYQUERY 0 a,b\n".to_string(), "invalid user name"),
        (
            format!("KEYQUERY 0 {}\n", too_many.join(" ")),
            "1 to 32 user names",
        ),
    ];
    for (line, reason) in cases {
        let mut c = Raw::login(a, "alice", "a").await;
        c.send(line.as_bytes()).await;
        c.expect_err_and_close(reason).await;
    }
    let mut bob = Raw::login(a, "bob", "b").await;
    bob.ask("KEYQUERY 0 alice\n", "KEYRESULT 0\n").await;
    // After all that, alice's first valid key is still a first publication.
    let mut alice = Raw::login(a, "alice", "a").await;
    alice
        .ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;
    alice
        .ask(&format!("KEY 0 {K2}\n"), &conflict_nak("alice"))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn key_request_floods_are_refused() {
    let server = Server::start(
        DirectoryConfig {
            max_key_queries_per_minute: 3,
            ..config()
        },
        &[("alice", "a")],
    )
    .await;
    let updates = DirectoryConfig::default().max_key_updates_per_minute;
    assert!(updates > 0);
    let mut c = Raw::login(server.addr, "alice", "a").await;
    for _ in 0..updates {
        c.ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
            .await;
    }
    // REKEY draws on the same budget.
    c.send(format!("REKEY 0 {K1} {K2}\n").as_bytes()).await;
    c.expect_err_and_close("too many key requests: at most 5 per minute")
        .await;
    let mut c = Raw::login(server.addr, "alice", "a").await;
    for _ in 0..3 {
        c.ask("KEYQUERY 0 alice\n", &key_result(&[format!("alice,{K1}")]))
            .await;
    }
    c.send(b"KEYQUERY 0 alice\n").await;
    c.expect_err_and_close("too many key requests: at most 3 per minute")
        .await;
    server.stop().await;
}

/// Runs `roundtable directory ARGS… --db DB` and returns (success, stdout, stderr).
fn directory_cli(db: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .arg("directory")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The operator's `reset-key`, run while the directory serves: the next
/// `KEY` pins anew; `list-users --keys` shows the pins; `remove-user`
/// takes the key with the account.
#[tokio::test]
async fn the_operator_resets_a_key_on_a_running_directory() {
    let server = Server::start(config(), &[("alice", "a"), ("bob", "b")]).await;
    let db = server.db.clone();
    let mut alice = Raw::login(server.addr, "alice", "a").await;
    alice
        .ask(&format!("KEY 0 {K1}\n"), "ACK 13\nkey published")
        .await;
    let cli = |args: Vec<String>| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            directory_cli(&db, &args)
        })
    };
    let arg = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        cli(arg(&["list-users", "--keys"])).await.unwrap(),
        (true, format!("alice {K1}\nbob -\n"), String::new())
    );
    // Plain list-users is unchanged.
    assert_eq!(cli(arg(&["list-users"])).await.unwrap().1, "alice\nbob\n");
    let (ok, out, _) = cli(arg(&["reset-key", "alice"])).await.unwrap();
    assert!(ok);
    assert_eq!(
        out,
        format!("reset the key of alice (was {K1}); its next KEY pins a new one\n")
    );
    let (ok, out, _) = cli(arg(&["reset-key", "alice"])).await.unwrap();
    assert!(ok);
    assert_eq!(out, "alice has no pinned key; its next KEY pins one\n");
    let (ok, _, err) = cli(arg(&["reset-key", "nobody"])).await.unwrap();
    assert!(!ok);
    assert!(err.contains("no account named nobody"), "{err}");
    // The running server sees it at once, on the session that was open.
    alice
        .ask(&format!("KEY 0 {K2}\n"), "ACK 13\nkey published")
        .await;
    let mut bob = Raw::login(server.addr, "bob", "b").await;
    bob.ask("KEYQUERY 0 alice\n", &key_result(&[format!("alice,{K2}")]))
        .await;
    drop(alice);
    let (ok, out, _) = cli(arg(&["remove-user", "alice"])).await.unwrap();
    assert!(ok);
    assert_eq!(
        out,
        format!("removed account alice and its pinned key {K2}\n")
    );
    bob.ask("KEYQUERY 0 alice\n", "KEYRESULT 0\n").await;
    server.stop().await;
}

/// Logs a `Connection` in, as the node's directory client does.
async fn node_session(addr: SocketAddr, user: &str, pass: &str) -> Connection<TcpStream> {
    let mut c = Connection::new(TcpStream::connect(addr).await.unwrap(), Limits::default());
    for req in [
        Request::User { name: user.into() },
        Request::Pass {
            password: pass.into(),
        },
    ] {
        c.write_frame(&req.to_frame()).await.unwrap();
        let f = c.read_frame().await.unwrap().unwrap();
        assert!(matches!(Reply::parse(&f), Ok(Reply::Ack(_))), "{f}");
    }
    c
}

#[tokio::test]
async fn the_node_client_publishes_replaces_and_looks_up_keys() {
    use directory_client::{lookup_keys, publish_key, replace_key, KeyOutcome};
    use roundtable_shared::directory::PublicKey;
    let server = Server::start(config(), &[("alice", "a"), ("bob", "b")]).await;
    let (k1, k2, k3) = (
        PublicKey::from_text(K1).unwrap(),
        PublicKey::from_text(K2).unwrap(),
        PublicKey::from_text(K3).unwrap(),
    );
    let mut alice = node_session(server.addr, "alice", "a").await;
    assert_eq!(
        publish_key(&mut alice, k1).await.unwrap(),
        KeyOutcome::Accepted
    );
    assert_eq!(
        publish_key(&mut alice, k1).await.unwrap(),
        KeyOutcome::Accepted
    );
    let KeyOutcome::Refused(reason) = publish_key(&mut alice, k2).await.unwrap() else {
        panic!("a different key was accepted");
    };
    assert!(
        reason.contains("a different key is pinned for alice"),
        "{reason}"
    );
    assert!(matches!(
        replace_key(&mut alice, k3, k2).await.unwrap(),
        KeyOutcome::Refused(_)
    ));
    let mut bob = node_session(server.addr, "bob", "b").await;
    assert_eq!(
        publish_key(&mut bob, k3).await.unwrap(),
        KeyOutcome::Accepted
    );
    // More names than one KEYQUERY takes, an impossible name and a repeat:
    // asked in chunks, the session survives.
    let mut names: Vec<String> = (0..70).map(|i| format!("user{i}")).collect();
    names.extend(["alice", "bad,name", "bob", "alice"].map(String::from));
    let found = lookup_keys(&mut bob, &names).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["alice"], k1);
    assert_eq!(found["bob"], k3);
    // The owner's explicit replacement, seen by the other session.
    assert_eq!(
        replace_key(&mut alice, k1, k2).await.unwrap(),
        KeyOutcome::Accepted
    );
    let found = lookup_keys(&mut bob, &["alice".to_string()]).await.unwrap();
    assert_eq!(found.get("alice"), Some(&k2));
    server.stop().await;
}
