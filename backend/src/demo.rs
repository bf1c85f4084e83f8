//! `roundtable demo`: a whole collaboration in one process, so that a
//! newcomer sees a live system: a directory, three nodes (alice, bob,
//! carol), a repeating DLR-shaped training driven through their real
//! notification endpoints over HTTP, a local training step run for each
//! round, and bob and carol answering chat messages. Carol runs with no
//! chat listener (`--chat none`), as a site behind NAT would: her chat
//! goes through the directory's relay, and the dashboards show it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use roundtable_shared::api::{Direction, Event};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::directory::{self, DirectoryConfig};
use crate::fl_drive::{drive, DriveOptions, Plan};
use crate::node::{Node, NodeConfig};
use crate::store::directory::DirectoryStore;

/// The demo's layout.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub directory: SocketAddr,
    /// Alice's dashboard; bob and carol use the next two ports.
    pub http: SocketAddr,
    /// Alice's notification endpoint; bob and carol use the next two ports.
    pub notify: SocketAddr,
    pub data: PathBuf,
    pub dist: PathBuf,
    /// The local training step each node runs per round. Each node
    /// appends `--pace-ms N --skill K` (the options of `roundtable
    /// demo-train`) so that the three train at different speeds (carol is
    /// the slow one) and report slightly different metrics.
    pub train_cmd: Option<Vec<String>>,
    /// Seconds between the phases of the demo training.
    pub phase_interval: Duration,
}

const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// Milliseconds per epoch of each node's training step: carol's site is
/// slower, so she is the straggler of most rounds.
const PACE_MS: [u64; 3] = [250, 350, 650];

fn shifted(a: SocketAddr, by: u16) -> SocketAddr {
    if a.port() == 0 {
        a
    } else {
        SocketAddr::new(a.ip(), a.port() + by)
    }
}

/// What the demo is running, for printing.
pub struct Running {
    pub directory: SocketAddr,
    pub nodes: Vec<Node>,
    stop: CancellationToken,
    directory_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the nodes (each LEAVEs), then the directory.
    pub async fn stop(self) {
        self.stop.cancel();
        for n in self.nodes {
            n.stop(Duration::from_secs(5)).await;
        }
        let _ = self.directory_task.await;
    }
}

/// Starts everything and returns once it is up.
pub async fn start(cfg: DemoConfig) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("creating {}", cfg.data.display()))?;
    let stop = CancellationToken::new();
    let store = DirectoryStore::open(&cfg.data.join("directory.db"))?;
    let listener = TcpListener::bind(cfg.directory).await.with_context(|| {
        format!(
            "directory port {} (is another demo running?)",
            cfg.directory
        )
    })?;
    let directory = listener.local_addr()?;
    let dir_cfg = DirectoryConfig {
        open_registration: true,
        ..DirectoryConfig::default()
    };
    let s = stop.clone();
    let directory_task = tokio::spawn(async move {
        if let Err(e) = directory::serve(listener, store, dir_cfg, s).await {
            tracing::error!(%e, "demo directory failed");
        }
    });

    let mut nodes = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let mut n = NodeConfig::local(
            name,
            &format!("{name}-demo-password"),
            &directory.to_string(),
            cfg.data.join(name),
        );
        n.http_listen = shifted(cfg.http, i as u16);
        n.notify_listen = Some(shifted(cfg.notify, i as u16));
        n.dist = cfg.dist.clone();
        n.train_cmd = cfg.train_cmd.clone().map(|mut c| {
            c.extend([
                "--pace-ms".to_owned(),
                PACE_MS[i].to_string(),
                "--skill".to_owned(),
                i.to_string(),
            ]);
            c
        });
        if *name == "carol" {
            n.chat_listen = None;
        }
        nodes.push(
            Node::start(n)
                .await
                .with_context(|| format!("starting {name}"))?,
        );
    }

    // Bob and carol answer whoever writes to them (but not each other).
    for n in &nodes[1..] {
        tokio::spawn(answer_messages(
            n.name.clone(),
            n.chat.clone(),
            n.events.subscribe(),
            stop.clone(),
        ));
    }
    // Bob says hello once alice is online.
    {
        let (bob, stop) = (nodes[1].chat.clone(), stop.clone());
        let peers = nodes[1].peers.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                if peers.get("alice").is_some_and(|p| p.online) {
                    let _ = bob
                        .send("alice", "Hi alice, bob here. The demo training restarts every minute; write to me or carol any time.")
                        .await;
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
    }
    // A training, again and again, through the real notification endpoints.
    let urls: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.notify_addr.map(|a| format!("http://{a}/")))
        .collect();
    tokio::spawn(drive_forever(urls, cfg.phase_interval, stop.clone()));

    Ok(Running {
        directory,
        nodes,
        stop,
        directory_task,
    })
}

async fn answer_messages(
    me: String,
    chat: crate::node::chat::Chat,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    stop: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = events.recv() => ev,
        };
        let message = match ev {
            Ok(Event::Message { message }) => message,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        if message.direction != Direction::In || NAMES[1..].contains(&message.peer.as_str()) {
            continue;
        }
        let reply = format!(
            "{me} here: got your {} bytes (\"{}\"). My local model is training; I'll report after this round.",
            message.text.len(),
            message.text.chars().take(60).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        if let Err(e) = chat.send(&message.peer, &reply).await {
            tracing::warn!(%me, %e, "demo bot could not answer");
        }
    }
}

/// One concise line per round of the demo training (the nodes log the
/// details at debug level).
fn log_step(plan: &Plan, step: &crate::fl_drive::StepReport) {
    use roundtable_shared::notify::Kind;
    let short = plan.training_uuid.get(..8).unwrap_or("");
    let n = &step.notification;
    match &n.kind {
        Kind::Round { phase, round, .. } => {
            tracing::info!("demo training {short}: {phase} round {round} sent to the three nodes")
        }
        Kind::Finished { .. } => tracing::info!("demo training {short}: finished"),
        _ => tracing::info!("demo training {short}: started"),
    }
}

async fn drive_forever(urls: Vec<String>, interval: Duration, stop: CancellationToken) {
    let options = DriveOptions {
        interval,
        ..DriveOptions::default()
    };
    let mut swag = false;
    loop {
        let plan = Plan::random(3, swag);
        swag = !swag;
        tokio::select! {
            _ = stop.cancelled() => return,
            report = drive(&plan, &urls, &options, |_, step| log_step(&plan, step)) => {
                if !report.all_accepted() {
                    tracing::warn!("demo training: some notifications were refused\n{}", report.table());
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval * 4) => {}
        }
    }
}
