//! `roundtable`: the directory server, the demo, and account administration.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use roundtable::directory::accounts::{self, HashCost};
use roundtable::directory::checker::CheckerConfig;
use roundtable::directory::relay::RelayConfig;
use roundtable::directory::{self, DirectoryConfig};
use roundtable::node::chat::ChatConfig;
use roundtable::node::{Node, NodeConfig};
use roundtable::store::directory::DirectoryStore;
use roundtable::store::pins::PinStore;
use roundtable::transfer::bulk::Priority;
use roundtable::web::Limits;
use roundtable_shared::directory::PublicKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "roundtable",
    version,
    about = "Chat and training-round monitoring for federated-learning collaborations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the eurechat directory server, or manage its accounts.
    Directory(DirectoryCmd),
    /// Run a participant node: chat, FL notifications, dashboard; or
    /// manage its pinned peer keys.
    Node(NodeCmd),
    /// Run a local demo: a directory, three nodes and a training driver.
    Demo(DemoArgs),
    /// The demo's stand-in for a local training script.
    #[command(hide = true)]
    DemoTrain(DemoTrainArgs),
    /// Play a DLR-shaped training against notification endpoints.
    FlDrive(roundtable::fl_drive::FlDriveArgs),
    /// Send a file to peers through your node (--node URL --to bob,carol),
    /// with a progress bar per recipient; or, with --raw HOST:PORT, as one
    /// bare NVIDIA FLARE binary exchange to any compatible receiver
    /// (NVFlare's `receive_all`, `roundtable receive-file`).
    SendFile(SendFileArgs),
    /// List the files a node sent and received.
    Files(FilesArgs),
    /// Receive NVIDIA FLARE binary exchanges, one per connection, each
    /// written atomically under --out once its CRC-32 checks out.
    ReceiveFile(ReceiveFileArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["node", "raw"])))]
#[command(group(clap::ArgGroup::new("whom").args(["to", "room"])))]
struct SendFileArgs {
    /// Your node's web address: hand the file to it for --to or --room.
    #[arg(long, requires = "whom")]
    node: Option<String>,
    /// Recipients (user names, comma-separated), with --node.
    #[arg(long, value_delimiter = ',')]
    to: Vec<String>,
    /// A room (its name, or its id): the file goes to everyone in it, and
    /// shows in the room on their dashboards. With --node.
    #[arg(long, conflicts_with = "to", requires = "node")]
    room: Option<String>,
    /// The node's web token, with --node (if it has one).
    #[arg(long, env = "ROUNDTABLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Receiver `host:port`: speak the bare NVFlare exchange to it.
    #[arg(long, conflicts_with_all = ["node", "to", "room"])]
    raw: Option<String>,
    /// Meta section (UTF-8), with --raw. Default: `{"file_name": <the
    /// file's name>}`, which `roundtable receive-file` stores the file under.
    #[arg(long, requires = "raw")]
    meta: Option<String>,
    /// The file to send.
    path: PathBuf,
}

#[derive(Args)]
struct FilesArgs {
    /// The node's web address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    node: String,
    /// The node's web token (if it has one).
    #[arg(long, env = "ROUNDTABLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct ReceiveFileArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Folder the received files go to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Drop a connection silent for this many seconds (and its partial file).
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DirectoryCmd {
    #[command(subcommand)]
    action: Option<AccountAction>,
    #[command(flatten)]
    serve: DirectoryArgs,
}

#[derive(Args)]
struct DirectoryArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8888")]
    listen: SocketAddr,
    /// SQLite database holding accounts and registrations.
    #[arg(long, default_value = "directory.db")]
    db: PathBuf,
    /// Create an account on the first USER/PASS for an unknown name.
    #[arg(long)]
    open_registration: bool,
    /// Seconds between liveness sweeps.
    #[arg(long, default_value_t = 10.0)]
    check_interval: f64,
    /// Seconds a peer has to answer PING during a sweep or a BIND port test.
    #[arg(long, default_value_t = 3.0)]
    check_timeout: f64,
    /// Most liveness pings in flight at once.
    #[arg(long, default_value_t = 256)]
    check_parallelism: usize,
    /// Seconds an authenticated client may stay silent.
    #[arg(long, default_value_t = 300.0)]
    idle_timeout: f64,
    /// Most client connections at once.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Most client connections at once from one source address.
    #[arg(long, default_value_t = 64)]
    max_connections_per_source: usize,
    /// Seconds a new client has to send USER and PASS.
    #[arg(long, default_value_t = 10.0)]
    auth_timeout: f64,
    /// Let clients BIND an address other than the one they connect from
    /// (only for set-ups behind a proxy or NAT: it lets any user aim the
    /// port test at any host).
    #[arg(long)]
    allow_foreign_bind: bool,
    /// BIND requests allowed per session per minute (0: unlimited).
    #[arg(long, default_value_t = 5)]
    max_binds_per_minute: u32,
    /// KEY and REKEY requests allowed per session per minute (0: unlimited).
    #[arg(long, default_value_t = 5)]
    max_key_updates_per_minute: u32,
    /// KEYQUERY requests (up to 32 names each) allowed per session per
    /// minute (0: unlimited).
    #[arg(long, default_value_t = 120)]
    max_key_queries_per_minute: u32,
    /// Relayed frames queued for one destination at most (past it the
    /// sender gets RELAYNAK).
    #[arg(long, default_value_t = 256)]
    relay_queue_frames: usize,
    /// Relayed bytes queued for one destination at most.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    relay_queue_bytes: usize,
    /// Relayed bytes queued for all destinations together at most.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    relay_total_bytes: usize,
    /// Relayed frames one user may send per second, in bursts of twice
    /// this (0: unlimited).
    #[arg(long, default_value_t = 2000)]
    relay_frames_per_second: u32,
    /// Relayed bytes one user may send per second, in bursts of twice this
    /// (0: unlimited).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    relay_bytes_per_second: u64,
    /// Do not relay: RELAY gets NAK, HELLO/SEC get RELAYNAK.
    #[arg(long)]
    no_relay: bool,
}

#[derive(Subcommand)]
enum AccountAction {
    /// Create an account, or set its password if it exists.
    AddUser {
        name: String,
        /// Read the password from standard input (first line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long, default_value = "directory.db")]
        db: PathBuf,
    },
    /// Delete an account, its registration and its pinned key.
    RemoveUser {
        name: String,
        #[arg(long, default_value = "directory.db")]
        db: PathBuf,
    },
    /// List account names.
    ListUsers {
        /// Also show each account's pinned identity key ("-": none).
        #[arg(long)]
        keys: bool,
        #[arg(long, default_value = "directory.db")]
        db: PathBuf,
    },
    /// Forget an account's pinned identity key, so that its next KEY pins
    /// a new one (say, after the user's node lost its key). Takes effect at
    /// once, also on a running directory.
    ResetKey {
        name: String,
        #[arg(long, default_value = "directory.db")]
        db: PathBuf,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct NodeCmd {
    #[command(subcommand)]
    action: Option<NodeAction>,
    /// Optional so that `node trust` needs none of the node's own flags.
    #[command(flatten)]
    serve: Option<NodeArgs>,
}

#[derive(Subcommand)]
enum NodeAction {
    /// Accept the new identity key a peer presents (after its key changed),
    /// or show what is pinned for it. Works while the node runs.
    Trust {
        /// The peer's user name.
        name: String,
        /// The node's data folder.
        #[arg(long)]
        data: PathBuf,
        /// Accept only if the new key has this fingerprint (as the peer
        /// reads it out from its own dashboard).
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

#[derive(Args)]
struct NodeArgs {
    /// Our user name at the directory.
    #[arg(long)]
    name: String,
    /// Directory server `host:port`.
    #[arg(long, default_value = "127.0.0.1:8888")]
    directory: String,
    /// Chat listen address, or `none`: no chat listener at all; the node
    /// logs in without BIND and is reached through the directory's relay.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_chat)]
    chat: ChatListen,
    /// Host others use to reach our chat port, when it differs from the listen IP.
    #[arg(long)]
    advertise: Option<String>,
    /// Port others use to reach our chat port, when it differs from the
    /// listen port (a port forward).
    #[arg(long)]
    advertise_port: Option<u16>,
    /// DLR FL notification endpoint address.
    #[arg(long)]
    notify: Option<SocketAddr>,
    /// Serve notifications only from these sources (CIDR or IP, comma-separated),
    /// e.g. the FL server's address. Others are disconnected at once.
    #[arg(long, value_delimiter = ',', value_parser = parse_net)]
    notify_allow: Option<Vec<IpNet>>,
    /// Web bridge (dashboard and API) address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Token required by the web bridge, at least 16 bytes (mandatory when
    /// --http is not loopback; without it only a loopback Host is answered).
    #[arg(long, env = "ROUNDTABLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data folder (databases).
    #[arg(long)]
    data: PathBuf,
    /// The built dashboard.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// Local training command run for each round, e.g. "python src/main.py".
    #[arg(long)]
    train_cmd: Option<String>,
    /// Read the directory password from standard input (else ROUNDTABLE_PASSWORD).
    #[arg(long)]
    password_stdin: bool,
    /// Refuse classic eurechat peers and plain connections: chat only over
    /// the authenticated, encrypted channel.
    #[arg(long)]
    require_secure: bool,
    /// Largest file this node sends or receives, bytes (suffixes K, M, G,
    /// T: powers of 1024).
    #[arg(long, default_value = "64G", value_parser = parse_size)]
    max_file_size: u64,
    /// Bytes a second a file may take through the directory's relay, to a
    /// peer without a chat address (suffixes K, M, G; 0: no pace). Chat
    /// through the relay shares the directory's budget per user.
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    relay_file_rate: u64,
    /// Remove the part files of incoming transfers untouched for this many hours.
    #[arg(long = "part-max-age", default_value_t = 168.0)]
    part_max_age_hours: f64,
    /// Share this node's training progress (states, times, exit status,
    /// metrics; never output, model ids or files) with the peers that take
    /// part in the same training.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    share_progress: OnOff,
    /// How files give way to chat and the rest of the machine: "idle"
    /// (Linux SCHED_IDLE: only CPU nothing else wants) or "low" (nice 10:
    /// for hosts whose other work keeps every core busy).
    #[arg(long, value_enum, default_value_t = Priority::Idle)]
    file_priority: Priority,
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// A size in bytes with an optional K, M, G or T suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 1048576, 512M or 64G"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Args)]
struct DemoArgs {
    /// The built dashboard to serve.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// Directory server address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    directory: SocketAddr,
    /// Alice's dashboard; bob and carol get the next two ports.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Alice's notification endpoint; bob and carol get the next two ports.
    #[arg(long, default_value = "127.0.0.1:8101")]
    notify: SocketAddr,
    /// Seconds between the phases of the demo training.
    #[arg(long, default_value_t = 3.0)]
    phase_interval: f64,
    /// Where the demo keeps its data (default: a fresh temporary folder).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Args)]
struct DemoTrainArgs {
    /// Milliseconds per epoch (the demo gives each node its own speed).
    #[arg(long, default_value_t = 400)]
    pace_ms: u64,
    /// How this participant's data differs (shifts its metrics a little).
    #[arg(long, default_value_t = 0)]
    skill: u32,
    /// train, test or swag.
    phase: String,
    #[arg(long)]
    training_id: String,
    #[arg(long)]
    round: u32,
    #[arg(long)]
    model_id: String,
}

/// A network for an allow-list: `10.0.0.0/8`, `2001:db8::/32`, or a single
/// address.
/// `--chat`: an address, or `none`.
#[derive(Debug, Clone, Copy)]
enum ChatListen {
    At(SocketAddr),
    None,
}

fn parse_chat(s: &str) -> Result<ChatListen, String> {
    if s == "none" {
        return Ok(ChatListen::None);
    }
    s.parse()
        .map(ChatListen::At)
        .map_err(|e| format!("{s:?} is neither host:port nor none: {e}"))
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither a CIDR network nor an IP address"))
}

/// Open files kept aside for everything but the HTTP listeners: the chat
/// port's connections, the databases, training runs, logs.
const FD_RESERVE: u64 = 128;

/// Raises the soft open-file limit to the hard one (a node holds a file per
/// connection; the usual soft 1024 is low) and returns it.
fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            tracing::info!(limit = n, "open-file limit (RLIMIT_NOFILE)");
            Some(n)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            None
        }
    }
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("invalid duration {s}"))
}

/// Cancels the token on Ctrl-C or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}

fn read_password() -> Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    let pw = input.lines().next().unwrap_or_default().to_owned();
    if !accounts::valid_password(&pw) {
        bail!("the password must be 1 to 256 bytes without spaces or control characters");
    }
    Ok(pw)
}

async fn run_directory(args: DirectoryArgs) -> Result<()> {
    let store = DirectoryStore::open(&args.db)?;
    let config = DirectoryConfig {
        open_registration: args.open_registration,
        idle_timeout: secs(args.idle_timeout)?,
        port_test_timeout: secs(args.check_timeout)?,
        max_connections: args.max_connections,
        max_connections_per_source: args.max_connections_per_source,
        auth_timeout: secs(args.auth_timeout)?,
        allow_foreign_bind: args.allow_foreign_bind,
        max_binds_per_minute: args.max_binds_per_minute,
        max_key_updates_per_minute: args.max_key_updates_per_minute,
        max_key_queries_per_minute: args.max_key_queries_per_minute,
        relay: RelayConfig {
            enabled: !args.no_relay,
            queue_frames: args.relay_queue_frames.max(1),
            queue_bytes: args.relay_queue_bytes,
            total_bytes: args.relay_total_bytes,
            frames_per_second: args.relay_frames_per_second,
            bytes_per_second: args.relay_bytes_per_second,
        },
        checker: CheckerConfig {
            interval: secs(args.check_interval)?,
            timeout: secs(args.check_timeout)?,
            parallelism: args.check_parallelism,
        },
        ..DirectoryConfig::default()
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    directory::serve(listener, store, config, shutdown).await?;
    Ok(())
}

fn run_accounts(action: AccountAction) -> Result<()> {
    match action {
        AccountAction::AddUser { name, db, .. } => {
            let store = DirectoryStore::open(&db)?;
            let pw = read_password()?;
            let created = accounts::provision(&store, &name, &pw, HashCost::default())?;
            println!(
                "{} account {name}",
                if created { "created" } else { "updated" }
            );
        }
        AccountAction::RemoveUser { name, db } => {
            let store = DirectoryStore::open(&db)?;
            let key = store.key(&name)?;
            if !store.delete_account(&name)? {
                bail!("no account named {name}");
            }
            match key {
                Some(k) => println!("removed account {name} and its pinned key {}", PublicKey(k)),
                None => println!("removed account {name}"),
            }
        }
        AccountAction::ListUsers { keys, db } => {
            let store = DirectoryStore::open(&db)?;
            let pinned: std::collections::HashMap<String, [u8; 32]> = if keys {
                store.all_keys()?.into_iter().collect()
            } else {
                Default::default()
            };
            for n in store.account_names()? {
                match (keys, pinned.get(&n)) {
                    (false, _) => println!("{n}"),
                    (true, Some(k)) => println!("{n} {}", PublicKey(*k)),
                    (true, None) => println!("{n} -"),
                }
            }
        }
        AccountAction::ResetKey { name, db } => {
            let store = DirectoryStore::open(&db)?;
            if store.account_hash(&name)?.is_none() {
                bail!("no account named {name}");
            }
            match store.reset_key(&name)? {
                Some(k) => println!(
                    "reset the key of {name} (was {}); its next KEY pins a new one",
                    PublicKey(k)
                ),
                None => println!("{name} has no pinned key; its next KEY pins one"),
            }
        }
    }
    Ok(())
}

async fn run_demo(args: DemoArgs) -> Result<()> {
    let data = match args.data {
        Some(d) => d,
        None => tempfile_dir()?,
    };
    if !args.dist.join("index.html").exists() {
        bail!(
            "no dashboard at {}: build it first (cargo xtask run does)",
            args.dist.display()
        );
    }
    // Three nodes in one process: give them the hard limit too.
    raise_fd_limit();
    let exe = std::env::current_exe().context("locating the roundtable binary")?;
    let running = roundtable::demo::start(roundtable::demo::DemoConfig {
        directory: args.directory,
        http: args.http,
        notify: args.notify,
        data: data.clone(),
        dist: args.dist,
        train_cmd: Some(vec![exe.display().to_string(), "demo-train".into()]),
        phase_interval: Duration::from_secs_f64(args.phase_interval),
    })
    .await?;
    println!();
    println!("Roundtable demo is up. Open a dashboard:");
    for n in &running.nodes {
        println!("  {:<6} http://{}/", n.name, n.http_addr);
    }
    println!(
        "Directory  {}  (try: nc {} {})",
        running.directory,
        running.directory.ip(),
        running.directory.port()
    );
    for n in &running.nodes {
        if let Some(a) = n.notify_addr {
            let chat = if n.chat_addr.port() == 0 {
                "none (relayed)".to_owned()
            } else {
                n.chat_addr.to_string()
            };
            println!("  {:<6} chat {chat}  notify http://{a}/", n.name);
        }
    }
    println!("Data       {}", data.display());
    println!("Press Ctrl-C to stop.");
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone());
    stop.cancelled().await;
    running.stop().await;
    Ok(())
}

/// The demo's stand-in for a local training script: prints progress and
/// reports its metrics as `roundtable-metric` lines (a loss that falls and
/// an accuracy that rises over the rounds, a little different per
/// participant), takes a few seconds, exits 0.
fn demo_train(args: DemoTrainArgs) -> Result<()> {
    use std::io::Write;
    let epochs = 4;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "{} round {} of training {} with model {}",
        args.phase, args.round, args.training_id, args.model_id
    )?;
    let skill = f64::from(args.skill);
    let mut loss = (0.9 + 0.04 * skill) / f64::from(args.round + 1).sqrt();
    for e in 1..=epochs {
        std::thread::sleep(Duration::from_millis(args.pace_ms));
        loss *= 0.93;
        writeln!(out, "epoch {e}/{epochs} loss {loss:.4}")?;
        out.flush()?;
    }
    let metric = |name: &str, value: f64| {
        format!(
            "{}{}",
            roundtable_shared::progress::METRIC_PREFIX,
            serde_json::json!({ "name": name, "value": (value * 1e4).round() / 1e4 })
        )
    };
    let accuracy = (1.0 - loss * 0.8).clamp(0.0, 1.0);
    match args.phase.as_str() {
        "train" => {
            writeln!(out, "{}", metric("loss", loss))?;
            writeln!(out, "{}", metric("accuracy", accuracy))?;
        }
        _ => {
            writeln!(out, "{}", metric("loss", loss * 1.1))?;
            writeln!(out, "{}", metric("accuracy", accuracy - 0.03))?;
        }
    }
    writeln!(out, "done: accuracy {accuracy:.3}")?;
    Ok(())
}

async fn run_node(args: NodeArgs) -> Result<()> {
    let password = if args.password_stdin {
        read_password()?
    } else {
        std::env::var("ROUNDTABLE_PASSWORD")
            .context("no password: use --password-stdin or set ROUNDTABLE_PASSWORD")?
    };
    let train_cmd = args
        .train_cmd
        .as_deref()
        .map(roundtable::notify::parse_command)
        .transpose()?;
    let (mut web_limits, mut notify_limits) = (Limits::web(), Limits::notify());
    notify_limits.allow = args.notify_allow;
    if let Some(limit) = raise_fd_limit() {
        // The listeners' caps together stay below the limit, so neither
        // can take the files chat and the other listener need.
        let chat = ChatConfig::new(&args.name);
        let reserve = (chat.max_inbound + chat.max_links) as u64 + FD_RESERVE;
        Limits::fit(
            &mut [&mut web_limits, &mut notify_limits],
            limit.saturating_sub(reserve),
        );
    }
    let cfg = NodeConfig {
        name: args.name,
        password,
        directory: args.directory,
        chat_listen: match args.chat {
            ChatListen::At(a) => Some(a),
            ChatListen::None => None,
        },
        advertise: args.advertise,
        advertise_port: args.advertise_port,
        notify_listen: args.notify,
        http_listen: args.http,
        data: args.data,
        dist: args.dist,
        token: args.token,
        web_limits,
        notify_limits,
        train_cmd,
        query_interval: Duration::from_secs(2),
        require_secure: args.require_secure,
        max_file_size: args.max_file_size,
        relay_file_rate: args.relay_file_rate,
        part_max_age: secs(args.part_max_age_hours * 3600.0)?,
        share_progress: args.share_progress == OnOff::On,
        file_priority: args.file_priority,
    };
    let node = Node::start(cfg).await?;
    println!("{} is up:", node.name);
    println!("  dashboard  http://{}", node.http_addr);
    if node.chat_addr.port() == 0 {
        println!("  chat       none (reached through the directory's relay)");
    } else {
        println!("  chat       {}", node.chat_addr);
    }
    if let Some(n) = node.notify_addr {
        println!("  notify     http://{n}/");
    }
    cancel_on_signal(node.shutdown_token());
    node.wait().await;
    Ok(())
}

fn run_node_action(action: NodeAction) -> Result<()> {
    match action {
        NodeAction::Trust {
            name,
            data,
            fingerprint,
        } => {
            let path = data.join("pins.db");
            if !path.exists() {
                bail!(
                    "{} has no pinned keys (is --data the node's data folder?)",
                    data.display()
                );
            }
            let pins = PinStore::open(&path)?;
            let Some(pin) = pins.get(&name)? else {
                bail!("no key is pinned for {name}: its key is pinned at the first secure contact");
            };
            println!("{name}: pinned {}", pin.key.fingerprint());
            let Some(offered) = pin.offered else {
                println!("{name} presents the pinned key; nothing to accept");
                return Ok(());
            };
            println!("{name}: now presents {}", offered.fingerprint());
            let pin = pins.accept(
                &name,
                fingerprint.as_deref(),
                roundtable::store::chat::now_ms(),
            )?;
            println!(
                "accepted: {name} is pinned to {} (messages held for it are sent at the next connection)",
                pin.key.fingerprint()
            );
        }
    }
    Ok(())
}

async fn send_file(args: SendFileArgs) -> Result<()> {
    use roundtable::transfer::cli;
    if let Some(node) = &args.node {
        let client = cli::NodeClient::new(node, args.token.clone())?;
        let to = match &args.room {
            Some(room) => cli::Recipients::Room(client.room_id(room).await?),
            None => cli::Recipients::Users(args.to.clone()),
        };
        return cli::send(&client, &to, &args.path).await;
    }
    let raw = args.raw.context("--raw HOST:PORT or --node URL")?;
    let name = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the path names no file")?
        .to_owned();
    let meta = args
        .meta
        .unwrap_or_else(|| serde_json::json!({ "file_name": name }).to_string());
    let size = std::fs::metadata(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?
        .len();
    let mut stream = tokio::net::TcpStream::connect(&raw)
        .await
        .with_context(|| format!("cannot connect to {raw}"))?;
    stream.set_nodelay(true)?;
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(name.clone());
    let started = std::time::Instant::now();
    let sent =
        roundtable::transfer::raw::send(&mut stream, &args.path, &meta, |n| bar.set_position(n))
            .await
            .with_context(|| format!("sending {} to {raw}", args.path.display()))?;
    tokio::io::AsyncWriteExt::shutdown(&mut stream).await?;
    bar.finish();
    println!(
        "sent {name}: {} bytes, crc32 {:08x}, in {:.2} s",
        sent.size,
        sent.crc,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn files(args: FilesArgs) -> Result<()> {
    use roundtable::transfer::cli;
    let client = cli::NodeClient::new(&args.node, args.token)?;
    print!("{}", cli::table(&client.files().await?));
    Ok(())
}

async fn receive_file(args: ReceiveFileArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "receiving on {} into {}",
        listener.local_addr()?,
        args.out.display()
    );
    let mut cfg = roundtable::transfer::raw::ServeConfig::new(args.out);
    cfg.idle = secs(args.idle_timeout)?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    roundtable::transfer::raw::serve(listener, cfg, shutdown, |r, from| {
        println!(
            "received {} ({} bytes, sha256 {}) from {from}",
            r.path.display(),
            r.size,
            r.sha256
        );
    })
    .await;
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("roundtable-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Directory(cmd) => match cmd.action {
            Some(action) => run_accounts(action),
            None => run_directory(cmd.serve).await,
        },
        Command::Node(cmd) => match (cmd.action, cmd.serve) {
            (Some(action), _) => run_node_action(action),
            (None, Some(args)) => run_node(args).await,
            (None, None) => bail!("roundtable node needs --name and --data (see --help)"),
        },
        Command::Demo(args) => run_demo(args).await,
        Command::DemoTrain(args) => demo_train(args),
        Command::FlDrive(args) => roundtable::fl_drive::run(args).await,
        Command::SendFile(args) => send_file(args).await,
        Command::Files(args) => files(args).await,
        Command::ReceiveFile(args) => receive_file(args).await,
    }
}
