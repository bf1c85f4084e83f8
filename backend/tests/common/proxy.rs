//! A TCP proxy for tests that slows one direction down and counts it: a
//! transfer a test can interrupt halfway, or watch move in a dashboard;
//! and that can cut the connections it carries the way a lost network
//! does, the client told at once and the server never.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on a free port to `target`, letting the client's bytes through
/// at `rate` bytes per second and counting them: its address and the count.
pub async fn throttled_proxy(target: SocketAddr, rate: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let (addr, count, _cut) = cuttable_proxy(target, rate).await;
    (addr, count)
}

/// Cuts the connections a [`cuttable_proxy`] carries now.
pub struct Cut(watch::Sender<u64>);

impl Cut {
    /// Closes the client's side of every connection open now and leaves
    /// the server's open and silent (as if the network between them went
    /// down and only the client noticed); later connections go through.
    pub fn cut(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

/// [`throttled_proxy`], and its [`Cut`].
pub async fn cuttable_proxy(target: SocketAddr, rate: u64) -> (SocketAddr, Arc<AtomicU64>, Cut) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let (cuts, cut_rx) = watch::channel(0u64);
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                return;
            };
            let c = c.clone();
            let mut cut = cut_rx.clone();
            cut.mark_unchanged();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                {
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let started = tokio::time::Instant::now();
                        let mut sent = 0u64;
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            c.fetch_add(n as u64, Ordering::Relaxed);
                            sent += n as u64;
                            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                            tokio::time::sleep_until(due).await;
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    // A proxy whose `Cut` was dropped is never cut.
                    let cut_now = async {
                        if cut.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => return,
                        _ = cut_now => {}
                    }
                }
                drop((cr, cw));
                // The server's side stays open, and hears nothing more.
                let _held = (sr, sw);
                std::future::pending::<()>().await;
            });
        }
    });
    (addr, count, Cut(cuts))
}
