//! The directory server over raw TCP, as a classic eurechat client or `nc`
//! would talk to it. Every test starts its own server on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use roundtable::directory::accounts::{provision, HashCost};
use roundtable::directory::checker::CheckerConfig;
use roundtable::directory::{serve, DirectoryConfig};
use roundtable::framing::Connection;
use roundtable::store::directory::DirectoryStore;
use roundtable_shared::frame::{decode, Decoded, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
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
    let peer = Peer::start().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for name in names.clone() {
        let (addr, port, barrier) = (server.addr, peer.port, barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
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
            c.send(format!("BIND 0 127.0.0.1 {port}\n").as_bytes())
                .await;
            assert_eq!(c.frame().await.kind, "ACK");
            let me = c.query(Some(&name)).await;
            assert_eq!(me, format!("{name},127.0.0.1,{port}"));
            c.ask("LEAVE 0\n", "ACK 27\nderegistered from directory")
                .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.stop().await;
}
