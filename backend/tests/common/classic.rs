//! A classic eurechat client, played over raw TCP: a chat listener that
//! answers `PING` with a plain `PONG 0` and records everything else it is
//! sent, registered at the directory with `USER`/`PASS`/`BIND` like the
//! original client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roundtable_shared::frame::{decode, Decoded, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct ClassicPeer {
    /// Its chat listener.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    /// The open directory session (dropping it ends the registration's session).
    session: Option<TcpStream>,
    task: tokio::task::JoinHandle<()>,
}

impl ClassicPeer {
    /// A listener on 127.0.0.1, port 0.
    pub async fn listen() -> ClassicPeer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, rec.clone()));
            }
        });
        ClassicPeer {
            addr,
            received,
            session: None,
            task,
        }
    }

    /// Logs in as `name` and binds the listener, as the original client does.
    pub async fn register(&mut self, name: &str, password: &str, directory: SocketAddr) {
        let mut s = TcpStream::connect(directory).await.unwrap();
        let script = [
            (format!("USER 0 {name}\n"), "ACK"),
            (format!("PASS 0 {password}\n"), "ACK"),
            (
                format!("BIND 0 {} {}\n", self.addr.ip(), self.addr.port()),
                "ACK",
            ),
        ];
        for (line, want) in script {
            s.write_all(line.as_bytes()).await.unwrap();
            let reply = read_frame(&mut s).await;
            assert!(
                reply.starts_with(want),
                "directory answered {reply:?} to {line:?}"
            );
        }
        self.session = Some(s);
    }

    /// Everything received so far, frames as they came on the wire.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` has been received.
    pub async fn wait_for(&self, needle: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !self.received().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{needle:?} never arrived; got {:?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ClassicPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One frame's raw bytes (header and payload) from the directory.
async fn read_frame(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    loop {
        if let Ok(Decoded::Frame(_, used)) = decode(&buf, &Limits::default()) {
            return String::from_utf8_lossy(&buf[..used]).into_owned();
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("the directory answers in time")
            .unwrap();
        assert!(
            n > 0,
            "the directory closed: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut s: TcpStream, received: Arc<Mutex<Vec<u8>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Decoded::Frame(f, used)) = decode(&buf, &Limits::default()) {
            if f.kind == "PING" {
                // A classic client ignores PING's arguments.
                if s.write_all(b"PONG 0\n").await.is_err() {
                    return;
                }
            } else {
                received.lock().unwrap().extend_from_slice(&buf[..used]);
            }
            buf.drain(..used);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
