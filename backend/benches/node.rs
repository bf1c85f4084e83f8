//! Node benchmark: `cargo bench -p roundtable --bench node` (or
//! `cargo xtask bench`). Prints its figures; asserts only correctness.
//!
//! A directory and pairs of nodes run in this process on loopback, side by
//! side (issue 13): a **plain** pair (`ChatConfig::secure = false`: plain
//! `MSG`, as before the secure channel), an **encrypted** pair (the Noise
//! channel, the default) and a **relayed** pair (bob with `--chat none`, so
//! alice reaches him through the directory's relay). For each:
//! - latency (first, on quiet stores): `POST /api/chats/{bob}/messages` on
//!   alice at 1,000 messages/s until the WebSocket event on bob, with the
//!   times at which each node had stored the message, as percentiles;
//! - end to end (plain and encrypted): alice accepts messages for bob
//!   (stored, queued) and her delivery worker drains them over one
//!   connection until all are acknowledged.
//!
//! Also: the receive path (MSG frames with 100-byte texts pipelined to a
//! node's chat port by a plain client over one connection, each stored
//! durably and acknowledged), and the time to open a link: TCP connect and
//! capability exchange (plain) against that plus the Noise handshake.
//!
//! Environment: `BENCH_MESSAGES` (default 100000), `BENCH_SECS` (default 10).

mod common;

use common::{env_usize, machine};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundtable::directory::accounts::HashCost;
use roundtable::directory::{serve, DirectoryConfig};
use roundtable::events::Events;
use roundtable::framing::Connection;
use roundtable::node::chat::ChatConfig;
use roundtable::node::link::{open_direct, seal_all, Overlay};
use roundtable::node::peers::Peers;
use roundtable::node::trust::Trust;
use roundtable::node::{Node, NodeConfig};
use roundtable::overlay::channel::{self, ChannelConfig};
use roundtable::overlay::identity::Identity;
use roundtable::store::directory::DirectoryStore;
use roundtable::store::pins::PinStore;
use roundtable_shared::api::{Direction, Event, MessageState};
use roundtable_shared::frame::{Frame, Limits};
use roundtable_shared::peer::{Capabilities, PeerFrame};
use roundtable_shared::secure::{unpack, SecureFrame};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The acknowledged extension without the secure channel: what a
/// Roundtable node of before issue 13 spoke.
const PLAIN: Capabilities = Capabilities {
    roundtable: true,
    secure: false,
    aesgcm: false,
    room_files: false,
};

fn text(i: usize) -> String {
    let mut t = format!("{i:>10} ");
    while t.len() < 100 {
        t.push('x');
    }
    t
}

async fn receive_path(bob: &Node, n: usize) -> f64 {
    let s = TcpStream::connect(bob.chat_addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (r, w) = s.into_split();
    let mut writer = Connection::new(tokio::io::join(tokio::io::empty(), w), Limits::default());
    let mut reader = Connection::new(tokio::io::join(r, tokio::io::sink()), Limits::default());
    writer
        .write_frame(&PeerFrame::Ping { caps: PLAIN }.to_frame())
        .await
        .unwrap();
    let pong = reader.read_frame().await.unwrap().unwrap();
    assert_eq!(PeerFrame::parse(&pong), Ok(PeerFrame::Pong { caps: PLAIN }));
    let started = Instant::now();
    let send = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(512);
        for i in 0..n {
            batch.push(
                PeerFrame::Msg {
                    sender: "loadgen".into(),
                    id: format!("lg{i}"),
                    text: text(i),
                }
                .to_frame(),
            );
            if batch.len() == 512 {
                writer.write_frames(&batch).await.unwrap();
                batch.clear();
            }
        }
        writer.write_frames(&batch).await.unwrap();
        writer
    });
    let mut acked = 0;
    while acked < n {
        let f: Frame = reader.read_frame().await.unwrap().expect("acks");
        if let Ok(PeerFrame::MsgAck { .. }) = PeerFrame::parse(&f) {
            acked += 1;
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    send.await.unwrap();
    let stored = bob.chat.store().history("loadgen", None, 1).unwrap();
    assert_eq!(stored[0].text, text(n - 1), "the last message is stored");
    rate
}

/// The receive path over the secure channel: a Roundtable client
/// ("loadsec") pipelines sealed MSG frames to `bob` over one connection,
/// reading the sealed acknowledgements as they come.
async fn receive_path_secure(bob: &Node, n: usize) -> f64 {
    let identity = Identity::generate().unwrap();
    let s = TcpStream::connect(bob.chat_addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut conn = Connection::new(s, Limits::default());
    conn.write_frame(
        &PeerFrame::Ping {
            caps: Capabilities::ALL,
        }
        .to_frame(),
    )
    .await
    .unwrap();
    let pong = conn.read_frame().await.unwrap().unwrap();
    let granted = Capabilities {
        aesgcm: channel::hardware_aes(),
        ..Capabilities::ALL
    };
    assert_eq!(
        PeerFrame::parse(&pong),
        Ok(PeerFrame::Pong { caps: granted })
    );
    let session = channel::connect(
        &mut conn,
        &identity,
        "loadsec",
        &bob.name,
        None,
        &ChannelConfig::default(),
        granted.cipher(),
    )
    .await
    .unwrap();
    let (s, rest) = conn.into_parts();
    assert!(rest.is_empty());
    let session = Arc::new(Mutex::new(session));
    let (r, w) = s.into_split();
    let mut writer = Connection::new(tokio::io::join(tokio::io::empty(), w), Limits::default());
    let mut reader = Connection::new(tokio::io::join(r, tokio::io::sink()), Limits::default());
    let started = Instant::now();
    let sealer = session.clone();
    let send = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(512);
        for i in 0..n {
            batch.push(
                PeerFrame::Msg {
                    sender: "loadsec".into(),
                    id: format!("ls{i}"),
                    text: text(i),
                }
                .to_frame(),
            );
            if batch.len() == 512 || i + 1 == n {
                let sealed = seal_all(&mut sealer.lock().unwrap(), &batch).unwrap();
                writer.write_frames(&sealed).await.unwrap();
                batch.clear();
            }
        }
        writer
    });
    let mut acked = 0;
    while acked < n {
        let f: Frame = reader.read_frame().await.unwrap().expect("acks");
        let SecureFrame::Sealed(sealed) = SecureFrame::parse_owned(f).unwrap() else {
            panic!("a HELLO after the handshake");
        };
        let plain = session.lock().unwrap().open(&sealed).unwrap();
        for f in unpack(&plain, &Limits::default()).unwrap() {
            if let Ok(PeerFrame::MsgAck { .. }) = PeerFrame::parse(&f) {
                acked += 1;
            }
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    send.await.unwrap();
    let stored = bob.chat.store().history("loadsec", None, 1).unwrap();
    assert_eq!(stored[0].text, text(n - 1), "the last message is stored");
    assert!(stored[0].verified, "proven by the channel");
    rate
}

async fn end_to_end(alice: &Node, bob: &str, n: usize) -> (f64, f64) {
    let mut events = alice.events.subscribe();
    let started = Instant::now();
    for i in 0..n {
        alice.chat.send(bob, &text(i)).await.unwrap();
    }
    let accept_rate = n as f64 / started.elapsed().as_secs_f64();
    let mut delivered = 0;
    while delivered < n {
        match events.recv().await {
            Ok(Event::MessageState {
                state: MessageState::Delivered,
                ..
            }) => delivered += 1,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                // Count from the store instead when the bus overflows.
                let _ = k;
                let left = alice.chat.store().outbox(bob, n).unwrap().len();
                delivered = delivered.max(n.saturating_sub(left));
            }
            Err(e) => panic!("{e}"),
        }
    }
    (accept_rate, n as f64 / started.elapsed().as_secs_f64())
}

/// Latency percentiles of one stage, from the POST.
struct Stage {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Stage {
    fn of(mut v: Vec<Duration>) -> Stage {
        v.sort();
        let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        Stage {
            p50: p(0.50),
            p99: p(0.99),
            p999: p(0.999),
            max: v[v.len() - 1],
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "p50 {:>5.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  max {:>6.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// POSTs on alice at 1,000/s for `secs`; for each message, when alice had
/// stored it, when bob had, and when bob's WebSocket delivered the event.
async fn latency(alice: &Node, bob: &Node, secs: u64) -> [Stage; 3] {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", bob.http_addr))
        .await
        .unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{}/api/chats/{}/messages", alice.http_addr, bob.name);
    type Stamps = HashMap<String, [Option<Instant>; 3]>;
    let sent_at = Arc::new(Mutex::new(HashMap::<String, Instant>::new()));
    // In-process stamps of the stored messages' events on each node.
    let stored: Arc<Mutex<Stamps>> = Arc::default();
    for (node, stage) in [(alice, 0), (bob, 1)] {
        let mut rx = node.events.subscribe();
        let stored = stored.clone();
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                if let Event::Message { message } = e {
                    let now = Instant::now();
                    stored.lock().unwrap().entry(message.text).or_default()[stage] = Some(now);
                }
            }
        });
    }
    let total = (secs * 1000) as usize;
    let poster = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for i in 0..total {
                tick.tick().await;
                let body = format!(r#"{{"text":"lat {i}"}}"#);
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                sent_at
                    .lock()
                    .unwrap()
                    .insert(format!("lat {i}"), Instant::now());
                let c = client.clone();
                tokio::spawn(async move {
                    let r = c.request(req).await.unwrap();
                    assert_eq!(r.status(), 202);
                });
            }
        })
    };
    let mut seen = Vec::with_capacity(total);
    while seen.len() < total {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        let Ok(text) = msg.into_text() else { continue };
        if let Ok(Event::Message { message }) = serde_json::from_str::<Event>(&text) {
            if message.direction == Direction::In && message.peer == alice.name {
                if let Some(t0) = sent_at.lock().unwrap().get(message.text.as_str()) {
                    seen.push((message.text.to_string(), *t0, Instant::now()));
                }
            }
        }
    }
    poster.await.unwrap();
    let stored = stored.lock().unwrap();
    let mut stages: [Vec<Duration>; 3] = Default::default();
    for (text, t0, at_ws) in seen {
        let [a, b, _] = stored.get(&text).copied().unwrap_or_default();
        // The WebSocket event follows both stores; a stamp not taken (the
        // in-process subscriber lagged) counts as late as the event itself.
        stages[0].push(a.unwrap_or(at_ws) - t0);
        stages[1].push(b.unwrap_or(at_ws) - t0);
        stages[2].push(at_ws - t0);
    }
    stages.map(Stage::of)
}

/// Time to open `n` links to `bob`: plain (connect, `PING`/`PONG`) or
/// secure (that, then the Noise handshake and the pin check).
async fn open_links(bob: &Node, secure: bool, tmp: &std::path::Path, n: usize) -> Stage {
    let peers = Peers::new("probe", Events::default());
    let trust = Trust::load(
        PinStore::open(&tmp.join(format!("probe-pins-{secure}.db"))).unwrap(),
        peers,
    )
    .unwrap();
    let overlay = Overlay {
        me: "probe".into(),
        identity: Arc::new(Identity::generate().unwrap()),
        trust,
        channel: ChannelConfig::default(),
        require_secure: false,
        secure,
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    let addr = bob.chat_addr;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let t0 = Instant::now();
        let link = open_direct(
            &overlay,
            &bob.name,
            &addr.ip().to_string(),
            addr.port(),
            Duration::from_secs(5),
            permit,
        )
        .await
        .unwrap();
        times.push(t0.elapsed());
        assert_eq!(link.secure(), secure);
    }
    Stage::of(times)
}

/// Starts a node pair named `a`, `b` (`b` without a chat listener when
/// `relayed`) and waits until `a` can reach `b`.
async fn pair(
    dir: &str,
    tmp: &std::path::Path,
    (a, b): (&str, &str),
    secure: bool,
    relayed: bool,
) -> (Node, Node) {
    let start = |name: &str, listen: bool| {
        let mut cfg = NodeConfig::local(name, "pw", dir, tmp.join(name));
        cfg.query_interval = Duration::from_millis(200);
        // The load generator is one source opening a connection per
        // request in flight: the web caps are not what is measured.
        cfg.web_limits.max_per_source = 4096;
        cfg.web_limits.max_connections = 4096;
        if !listen {
            cfg.chat_listen = None;
        }
        let mut chat = ChatConfig::new(name);
        chat.secure = secure;
        Node::start_with(cfg, chat)
    };
    let alice = start(a, true).await.unwrap();
    let bob = start(b, !relayed).await.unwrap();
    while !alice
        .peers
        .get(b)
        .is_some_and(|p| p.online && (!relayed || p.relay))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (alice, bob)
}

fn main() {
    let n = env_usize("BENCH_MESSAGES", 100_000);
    let secs = env_usize("BENCH_SECS", 10) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirectoryStore::open(&tmp.path().join("d.db")).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir = l.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let cfg = DirectoryConfig {
            open_registration: true,
            hash_cost: HashCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..DirectoryConfig::default()
        };
        tokio::spawn(serve(l, store, cfg, stop.clone()));
        let e2e_n = n / 5;
        let mut rows = Vec::new();
        for (label, names, secure, relayed) in [
            ("plain", ("alice", "bob"), false, false),
            ("encrypted", ("ann", "ben"), true, false),
            ("relayed", ("amy", "bea"), true, true),
        ] {
            let (alice, bob) = pair(&dir, tmp.path(), names, secure, relayed).await;
            // Latency first: it is measured at a steady rate, not while the
            // stores are still copying the long WAL a flat-out phase leaves.
            let [on_alice, on_bob, on_ws] = latency(&alice, &bob, secs).await;
            let e2e = if relayed {
                None
            } else {
                Some(end_to_end(&alice, &bob.name, e2e_n).await)
            };
            let links = if relayed {
                None
            } else {
                Some(open_links(&bob, secure, tmp.path(), 200).await)
            };
            let recv = match (secure, relayed) {
                (false, _) => Some(receive_path(&bob, n).await),
                (true, false) => Some(receive_path_secure(&bob, n).await),
                (true, true) => None,
            };
            rows.push((label, on_alice, on_bob, on_ws, e2e, links, recv));
            alice.stop(Duration::from_secs(5)).await;
            bob.stop(Duration::from_secs(5)).await;
        }

        println!();
        println!(
            "node benchmark: 100-byte texts, one connection, {}",
            machine()
        );
        for (label, on_alice, on_bob, on_ws, e2e, links, recv) in rows {
            println!("[{label}]");
            if let Some(recv) = recv {
                println!("  receive path (MSG -> stored -> MSGACK), {n} msgs   {recv:>10.0} msg/s");
            }
            if let Some((accept, e2e)) = e2e {
                println!(
                    "  alice accepts (stored, queued), {e2e_n} msgs        {accept:>10.0} msg/s"
                );
                println!("  alice -> bob end to end until acknowledged   {e2e:>10.0} msg/s");
            }
            if let Some(links) = links {
                println!("  open a link (200 times)          {links}");
            }
            println!(
                "  POST on alice at 1,000/s for {secs} s, {} messages, time from the POST until:",
                secs * 1000
            );
            println!("    stored on alice                   {on_alice}");
            println!("    stored on bob                     {on_bob}");
            println!("    WebSocket event on bob            {on_ws}   (goal p99 < 5 ms)");
        }
        stop.cancel();
    });
}
