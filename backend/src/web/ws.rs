//! `/ws`: forwards the node's event stream to a dashboard. Who may open it
//! is decided before this handler runs (token, `Host`, `Origin`: see
//! [`super::security`]).

use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use tokio::sync::broadcast::error::RecvError;

use super::server::Shutdown;
use super::NodeApi;
use crate::events::Events;

/// Largest message a dashboard may send us (it sends none that matter).
const MAX_MESSAGE: usize = 64 * 1024;

/// How long one event may take to reach a browser before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn ws(
    State(n): State<NodeApi>,
    shutdown: Option<Extension<Shutdown>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let shutdown = shutdown.map(|Extension(s)| s);
    upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| forward_events(socket, n.events, shutdown))
}

/// Forwards events until the browser leaves or the server stops. A browser
/// that cannot keep up (its send stalls, or it falls behind the bus) is
/// disconnected; it reconnects and fetches a fresh snapshot, so nothing is
/// silently lost.
async fn forward_events(mut socket: WebSocket, events: Events, shutdown: Option<Shutdown>) {
    let mut rx = events.subscribe();
    let stopped = async {
        match &shutdown {
            Some(s) => s.0.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    let Ok(text) = serde_json::to_string(&ev) else { continue };
                    let send = socket.send(WsMessage::Text(text.into()));
                    match tokio::time::timeout(SEND_TIMEOUT, send).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "dropping a WebSocket client that fell behind");
                    let _ = socket.send(WsMessage::Close(None)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = &mut stopped => {
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(WsMessage::Close(None))).await;
                return;
            }
        }
    }
}
