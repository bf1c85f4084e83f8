//! What every benchmark prints about where it ran, and its knobs.
#![allow(dead_code)]

/// A numeric environment knob, or its default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The CPU model, from /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `N cores (CPU model)`.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({})", cpu_model())
}

/// A child process, killed when dropped (also when the benchmark panics).
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory and `n` nodes (`site00`, `site01`, …) in this process, on
/// loopback, each seeing every other online at its chat address.
pub struct Cluster {
    pub nodes: Vec<roundtable::node::Node>,
    pub names: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
    directory: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Starts them, their data under `data`.
    pub async fn start(n: usize, data: &std::path::Path) -> Cluster {
        use roundtable::directory::{self, DirectoryConfig};
        use roundtable::node::{Node, NodeConfig};
        let stop = tokio_util::sync::CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir_addr = listener.local_addr().unwrap().to_string();
        let store = roundtable::store::directory::DirectoryStore::open(&data.join("d.db")).unwrap();
        let cfg = DirectoryConfig {
            open_registration: true,
            ..DirectoryConfig::default()
        };
        let s = stop.clone();
        let directory = tokio::spawn(async move {
            let _ = directory::serve(listener, store, cfg, s).await;
        });
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("site{i:02}");
            let mut cfg = NodeConfig::local(&name, "pw", &dir_addr, data.join(&name));
            cfg.query_interval = std::time::Duration::from_millis(500);
            nodes.push(Node::start(cfg).await.unwrap());
        }
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        for node in &nodes {
            for p in &names {
                while p != &node.name
                    && !node
                        .peers
                        .get(p)
                        .is_some_and(|i| i.online && i.port.is_some())
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        Cluster {
            nodes,
            names,
            stop,
            directory,
        }
    }

    /// Stops every node, then the directory.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop(std::time::Duration::from_secs(5)).await;
        }
        self.stop.cancel();
        let _ = self.directory.await;
    }
}
