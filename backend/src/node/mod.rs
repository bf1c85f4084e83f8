//! The participant's process: wires the directory client, peer chat, the
//! notification endpoint and the web bridge together, and shuts them down
//! in order (LEAVE sent, connections closed) on request.

pub mod chat;
pub mod check;
pub mod directory_client;
pub mod link;
pub mod peers;
pub mod relay;
pub mod rooms;
pub mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Events;
use crate::overlay::channel::ChannelConfig;
use crate::overlay::identity::Identity;
use crate::overlay::rpc::Handlers;
use crate::progress::{Progress, ProgressConfig};
use crate::store::chat::ChatStore;
use crate::store::pins::PinStore;
use crate::transfer::{TransferConfig, Transfers};
use crate::web::{self, NodeApi, WebConfig};
use chat::{Chat, ChatConfig, Transports};
use directory_client::{DirectoryClientConfig, DirectoryLink};
use link::Overlay;
use peers::Peers;
use relay::{Relay, RelayConfig};
use trust::Trust;

/// Everything `roundtable node` is told.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub password: String,
    /// Directory `host:port`.
    pub directory: String,
    /// Chat listen address (`None`: `--chat none`, no listener; the node
    /// is reached through the directory's relay only).
    pub chat_listen: Option<SocketAddr>,
    /// Host others use to reach our chat port (default: the listen IP).
    pub advertise: Option<String>,
    /// Port others use to reach our chat port, when it differs from the
    /// one we listen on (a port forward, or a test's proxy in between).
    pub advertise_port: Option<u16>,
    /// DLR notification endpoint address, if any.
    pub notify_listen: Option<SocketAddr>,
    pub http_listen: SocketAddr,
    /// Where the node keeps its databases.
    pub data: PathBuf,
    /// The built dashboard.
    pub dist: PathBuf,
    /// Required bearer token for the web bridge (mandatory off loopback;
    /// at least [`web::security::MIN_TOKEN_LEN`] bytes).
    pub token: Option<String>,
    /// Timeouts and connection caps of the web bridge's listener.
    pub web_limits: web::Limits,
    /// Timeouts, connection caps and source allow-list of the notification
    /// endpoint's listener.
    pub notify_limits: web::Limits,
    /// Local training command (`--train-cmd`), split into words.
    pub train_cmd: Option<Vec<String>>,
    pub query_interval: Duration,
    /// Refuse classic (plain) peers: `--require-secure`.
    pub require_secure: bool,
    /// Largest file sent or received (`--max-file-size`).
    pub max_file_size: u64,
    /// Bytes a second a file may take through the relay (0: no pace).
    pub relay_file_rate: u64,
    /// Part files of abandoned incoming transfers are removed after this
    /// long (`--part-max-age`).
    pub part_max_age: Duration,
    /// Share this node's training progress with the peers in the same
    /// training (`--share-progress`, on by default).
    pub share_progress: bool,
    /// How a file's work gives way to chat and the rest of the machine
    /// (`--file-priority`).
    pub file_priority: crate::transfer::bulk::Priority,
}

impl NodeConfig {
    /// Loopback defaults for `name`, everything on port 0.
    pub fn local(name: &str, password: &str, directory: &str, data: PathBuf) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        NodeConfig {
            name: name.to_owned(),
            password: password.to_owned(),
            directory: directory.to_owned(),
            chat_listen: Some(any),
            advertise: None,
            advertise_port: None,
            notify_listen: Some(any),
            http_listen: any,
            data,
            dist: PathBuf::from("dist"),
            token: None,
            web_limits: web::Limits::web(),
            notify_limits: web::Limits::notify(),
            train_cmd: None,
            query_interval: Duration::from_secs(2),
            require_secure: false,
            max_file_size: crate::transfer::DEFAULT_MAX_FILE_SIZE,
            relay_file_rate: crate::transfer::DEFAULT_RELAY_RATE,
            part_max_age: crate::transfer::DEFAULT_PART_MAX_AGE,
            share_progress: true,
            file_priority: Default::default(),
        }
    }
}

/// A running node.
pub struct Node {
    pub name: String,
    pub chat_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub notify_addr: Option<SocketAddr>,
    pub chat: Chat,
    pub peers: Peers,
    pub events: Events,
    pub directory: DirectoryLink,
    pub trainings: crate::notify::Trainings,
    pub transfers: Transfers,
    /// Training progress shared with and received from peers.
    pub progress: Progress,
    /// Our identity key's fingerprint.
    pub fingerprint: String,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Node {
    /// Binds every port, opens the stores, and starts all services.
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<Node> {
        let chat = ChatConfig::new(&cfg.name);
        Node::start_with(cfg, chat).await
    }

    /// [`Node::start`] with chat tuned (timeouts, caps); its name is the node's.
    pub async fn start_with(cfg: NodeConfig, mut chat_cfg: ChatConfig) -> anyhow::Result<Node> {
        crate::transfer::bulk::set_priority(cfg.file_priority);
        chat_cfg.name.clone_from(&cfg.name);
        if chat_cfg.files_dir.is_none() {
            chat_cfg.files_dir = Some(cfg.data.join("files").join("received"));
        }
        if !cfg.http_listen.ip().is_loopback() && cfg.token.is_none() {
            anyhow::bail!("--http {} is not loopback: set --token", cfg.http_listen);
        }
        if let Some(t) = &cfg.token {
            web::security::check_token(t)?;
        }
        std::fs::create_dir_all(&cfg.data)
            .with_context(|| format!("creating {}", cfg.data.display()))?;
        // Made on first start; a key file others can read stops the node.
        let identity = Arc::new(Identity::load_or_create(&cfg.data)?);
        let fingerprint = identity.fingerprint().to_string();
        tracing::info!(%fingerprint, "identity key");
        let store = ChatStore::open(&cfg.data.join("chat.db"))?;
        let chat_listener = match cfg.chat_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("chat port {a}"))?,
            ),
            None => None,
        };
        let chat_addr = match &chat_listener {
            Some(l) => l.local_addr()?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let relay_only = chat_listener.is_none();
        let http_listener = TcpListener::bind(cfg.http_listen)
            .await
            .with_context(|| format!("web port {}", cfg.http_listen))?;
        let http_addr = http_listener.local_addr()?;
        let notify_listener = match cfg.notify_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("notify port {a}"))?,
            ),
            None => None,
        };
        let notify_addr = notify_listener.as_ref().and_then(|l| l.local_addr().ok());

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let events = Events::new(4096);
        let peers = Peers::new(&cfg.name, events.clone());
        let trust = Trust::load(PinStore::open(&cfg.data.join("pins.db"))?, peers.clone())?;
        let overlay = Overlay {
            me: cfg.name.clone(),
            identity: identity.clone(),
            trust: trust.clone(),
            channel: ChannelConfig::default(),
            require_secure: cfg.require_secure,
            secure: chat_cfg.secure,
        };
        let (relay, relay_inbound) = Relay::spawn(
            RelayConfig {
                server: cfg.directory.clone(),
                name: cfg.name.clone(),
                password: cfg.password.clone(),
                query_interval: cfg.query_interval,
                max_backoff: Duration::from_secs(10),
            },
            overlay.clone(),
            peers.clone(),
            shutdown.clone(),
            &tracker,
        );
        let transfers = Transfers::open(
            TransferConfig {
                max_file_size: cfg.max_file_size,
                part_max_age: cfg.part_max_age,
                relay_rate: cfg.relay_file_rate,
                ..TransferConfig::new(cfg.data.join("files"))
            },
            &cfg.data,
            crate::transfer::Reach {
                overlay: overlay.clone(),
                peers: peers.clone(),
                relay: Some(relay.clone()),
            },
            events.clone(),
            shutdown.clone(),
            tracker.clone(),
        )?;
        tracker.spawn(transfers.clone().run());
        let trainings = crate::notify::Trainings::open(
            &cfg.data.join("trainings.db"),
            cfg.train_cmd.clone(),
            events.clone(),
            &tracker,
            shutdown.clone(),
        )?;
        let progress = Progress::new(
            &cfg.name,
            ProgressConfig {
                share: cfg.share_progress,
                ..ProgressConfig::default()
            },
            trainings.store().clone(),
            events.clone(),
        );
        let mut handlers = Handlers::with_info(&cfg.name);
        progress.register(&mut handlers);
        let chat = Chat::new(
            chat_cfg,
            Transports {
                overlay,
                relay: Some(relay),
                transfers: Some(transfers.clone()),
                handlers,
            },
            store,
            peers.clone(),
            events.clone(),
            shutdown.clone(),
            tracker.clone(),
        );
        tracker.spawn(progress.clone().follow_events(shutdown.clone()));
        tracker.spawn(
            progress
                .clone()
                .push(chat.clone(), tracker.clone(), shutdown.clone()),
        );
        if let Some(l) = chat_listener {
            tracker.spawn(chat.clone().serve(l));
        }
        tracker.spawn(chat.clone().run_relay_inbound(relay_inbound.chat));
        tracker.spawn(chat.clone().run_relay_files(relay_inbound.files));
        tracker.spawn(chat.clone().run_dispatcher());
        tracker.spawn(rooms::follow_trainings(
            chat.clone(),
            progress.clone(),
            trainings.store().clone(),
            shutdown.clone(),
        ));

        if let Some(l) = notify_listener {
            let (t, lim, s) = (
                trainings.clone(),
                cfg.notify_limits.clone(),
                shutdown.clone(),
            );
            tracker.spawn(async move {
                if let Err(e) = crate::notify::endpoint::serve_with(l, t, lim, s).await {
                    tracing::error!(%e, "notification endpoint failed");
                }
            });
        }

        let directory = directory_client::spawn(
            DirectoryClientConfig {
                server: cfg.directory.clone(),
                name: cfg.name.clone(),
                password: cfg.password.clone(),
                advertise_host: cfg
                    .advertise
                    .clone()
                    .unwrap_or_else(|| chat_addr.ip().to_string()),
                chat_port: cfg.advertise_port.unwrap_or(chat_addr.port()),
                bind: !relay_only,
                query_interval: cfg.query_interval,
                max_backoff: Duration::from_secs(10),
                key: Some(*identity.public_key()),
            },
            peers.clone(),
            trust.clone(),
            events.clone(),
            shutdown.clone(),
            &tracker,
        );

        let api = NodeApi {
            name: cfg.name.clone(),
            chat_addr: if relay_only {
                String::new()
            } else {
                format!(
                    "{}:{}",
                    cfg.advertise
                        .clone()
                        .unwrap_or_else(|| chat_addr.ip().to_string()),
                    cfg.advertise_port.unwrap_or(chat_addr.port())
                )
            },
            directory_addr: cfg.directory.clone(),
            chat: chat.clone(),
            peers: peers.clone(),
            events: events.clone(),
            directory: directory.clone(),
            trainings: trainings.clone(),
            transfers: transfers.clone(),
            fingerprint: fingerprint.clone(),
            trust: trust.clone(),
            relay_only,
            require_secure: cfg.require_secure,
            progress: progress.clone(),
        };
        let web_cfg = WebConfig {
            dist: cfg.dist.clone(),
            token: cfg.token.clone(),
            limits: cfg.web_limits.clone(),
        };
        let s = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = web::serve_node(http_listener, web_cfg, api, s).await {
                tracing::error!(%e, "web bridge failed");
            }
        });
        tracing::info!(name = %cfg.name, chat = %chat_addr, http = %http_addr, notify = ?notify_addr, "node started");
        Ok(Node {
            name: cfg.name,
            chat_addr,
            http_addr,
            notify_addr,
            chat,
            peers,
            events,
            directory,
            trainings,
            transfers,
            progress,
            fingerprint,
            shutdown,
            tracker,
        })
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every service (sending LEAVE to the directory) and waits for
    /// them, at most `grace`.
    pub async fn stop(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(name = %self.name, "some node tasks did not stop in time");
        }
    }

    /// Waits until the node has been told to stop and has stopped.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.stop(Duration::from_secs(5)).await;
    }
}
