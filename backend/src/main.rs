//! `roundtable`: the directory server, the demo, and account administration.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use roundtable::directory::accounts::{self, HashCost};
use roundtable::directory::checker::CheckerConfig;
use roundtable::directory::{self, DirectoryConfig};
use roundtable::node::{Node, NodeConfig};
use roundtable::store::directory::DirectoryStore;
use roundtable::web::{self, WebConfig};
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
    /// Run a participant node: chat, FL notifications, dashboard.
    Node(NodeArgs),
    /// Run a local demo: a directory, three nodes and a training driver.
    Demo(DemoArgs),
    /// Play a DLR-shaped training against notification endpoints.
    FlDrive(roundtable::fl_drive::FlDriveArgs),
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
    /// Delete an account and its registration.
    RemoveUser {
        name: String,
        #[arg(long, default_value = "directory.db")]
        db: PathBuf,
    },
    /// List account names.
    ListUsers {
        #[arg(long, default_value = "directory.db")]
        db: PathBuf,
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
    /// Chat listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    chat: SocketAddr,
    /// Host others use to reach our chat port, when it differs from the listen IP.
    #[arg(long)]
    advertise: Option<String>,
    /// DLR FL notification endpoint address.
    #[arg(long)]
    notify: Option<SocketAddr>,
    /// Web bridge (dashboard and API) address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Token required by the web bridge (mandatory when --http is not loopback).
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
}

#[derive(Args)]
struct DemoArgs {
    /// The built dashboard to serve.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
    /// Directory server address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    directory: SocketAddr,
    /// Dashboard address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Where the demo keeps its data (default: a fresh temporary folder).
    #[arg(long)]
    data: Option<PathBuf>,
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
            if !store.delete_account(&name)? {
                bail!("no account named {name}");
            }
            println!("removed account {name}");
        }
        AccountAction::ListUsers { db } => {
            for n in DirectoryStore::open(&db)?.account_names()? {
                println!("{n}");
            }
        }
    }
    Ok(())
}

async fn run_demo(args: DemoArgs) -> Result<()> {
    let temp;
    let data = match args.data {
        Some(d) => d,
        None => {
            temp = tempfile_dir()?;
            temp.clone()
        }
    };
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    if !args.dist.join("index.html").exists() {
        bail!(
            "no dashboard at {}: build it first (cargo xtask run does)",
            args.dist.display()
        );
    }
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());

    let store = DirectoryStore::open(&data.join("directory.db"))?;
    let dir_listener = TcpListener::bind(args.directory)
        .await
        .with_context(|| format!("cannot listen on {}", args.directory))?;
    let config = DirectoryConfig {
        open_registration: true,
        ..DirectoryConfig::default()
    };
    let dir_task = tokio::spawn(directory::serve(
        dir_listener,
        store,
        config,
        shutdown.clone(),
    ));

    let web_listener = TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let url = format!("http://{}", web_listener.local_addr()?);
    let web_task = tokio::spawn(web::serve(
        web_listener,
        WebConfig::new(args.dist),
        shutdown.clone(),
    ));

    println!("Roundtable demo is up:");
    println!("  dashboard  {url}");
    println!(
        "  directory  {} (open registration; try: nc {} {})",
        args.directory,
        args.directory.ip(),
        args.directory.port()
    );
    println!("  data       {}", data.display());
    println!("Press Ctrl-C to stop.");
    web_task.await??;
    dir_task.await??;
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
    let cfg = NodeConfig {
        name: args.name,
        password,
        directory: args.directory,
        chat_listen: args.chat,
        advertise: args.advertise,
        notify_listen: args.notify,
        http_listen: args.http,
        data: args.data,
        dist: args.dist,
        token: args.token,
        train_cmd,
        query_interval: Duration::from_secs(2),
    };
    let node = Node::start(cfg).await?;
    println!("{} is up:", node.name);
    println!("  dashboard  http://{}", node.http_addr);
    println!("  chat       {}", node.chat_addr);
    if let Some(n) = node.notify_addr {
        println!("  notify     http://{n}/");
    }
    cancel_on_signal(node.shutdown_token());
    node.wait().await;
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
        Command::Node(args) => run_node(args).await,
        Command::Demo(args) => run_demo(args).await,
        Command::FlDrive(args) => roundtable::fl_drive::run(args).await,
    }
}
