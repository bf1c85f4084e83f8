//! The one WebSocket to the node's `/ws`: it reconnects with backoff and
//! reports each (re)connection so the app fetches a fresh snapshot.

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::callback::Timeout;
use roundtable_shared::api::Event;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, WebSocket};
use yew::Callback;

use crate::state::WsState;

/// Milliseconds to wait before attempt `n` (1-based) to reconnect:
/// 250 ms doubling up to 5 s.
pub fn backoff(n: u32) -> u32 {
    250u32
        .saturating_mul(1 << n.saturating_sub(1).min(5))
        .min(5000)
}

/// The WebSocket URL for a page at `protocol//host` (`location.protocol`, `location.host`).
pub fn ws_url(protocol: &str, host: &str) -> String {
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{host}/ws")
}

/// What the socket tells the app.
#[derive(Clone)]
pub struct Handlers {
    /// Each successful (re)connection: time to fetch the current state.
    pub on_open: Callback<()>,
    pub on_event: Callback<Event>,
    pub on_state: Callback<WsState>,
}

struct Inner {
    url: String,
    handlers: Handlers,
    socket: Option<WebSocket>,
    failures: u32,
    stopped: bool,
    retry: Option<Timeout>,
    // Kept alive as long as the socket uses them.
    #[allow(clippy::type_complexity)]
    closures: Option<(
        Closure<dyn FnMut()>,
        Closure<dyn FnMut(MessageEvent)>,
        Closure<dyn FnMut()>,
    )>,
}

/// A live connection; closing it (drop) stops reconnecting.
pub struct Connection(Rc<RefCell<Inner>>);

impl Connection {
    /// Connects to the page's own `/ws`.
    pub fn open(handlers: Handlers) -> Connection {
        let loc = web_sys::window().expect("a window").location();
        let url = ws_url(
            &loc.protocol().unwrap_or_default(),
            &loc.host().unwrap_or_default(),
        );
        let inner = Rc::new(RefCell::new(Inner {
            url,
            handlers,
            socket: None,
            failures: 0,
            stopped: false,
            retry: None,
            closures: None,
        }));
        connect(&inner);
        Connection(inner)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut inner = self.0.borrow_mut();
        inner.stopped = true;
        inner.retry = None;
        if let Some(s) = inner.socket.take() {
            s.set_onclose(None);
            let _ = s.close();
        }
    }
}

fn connect(inner: &Rc<RefCell<Inner>>) {
    let url = inner.borrow().url.clone();
    let socket = match WebSocket::new(&url) {
        Ok(s) => s,
        Err(_) => return lost(inner),
    };
    let on_open = {
        let inner = Rc::downgrade(inner);
        Closure::<dyn FnMut()>::new(move || {
            let Some(inner) = inner.upgrade() else { return };
            let h = {
                let mut i = inner.borrow_mut();
                i.failures = 0;
                i.handlers.clone()
            };
            h.on_state.emit(WsState::Connected);
            h.on_open.emit(());
        })
    };
    let on_message = {
        let on_event = inner.borrow().handlers.on_event.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(text) = e.data().as_string() {
                if let Ok(ev) = serde_json::from_str::<Event>(&text) {
                    on_event.emit(ev);
                }
            }
        })
    };
    let on_close = {
        let inner = Rc::downgrade(inner);
        Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = inner.upgrade() {
                lost(&inner);
            }
        })
    };
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let mut i = inner.borrow_mut();
    i.socket = Some(socket);
    i.closures = Some((on_open, on_message, on_close));
}

/// The socket closed or could not open: say so and try again later.
fn lost(inner: &Rc<RefCell<Inner>>) {
    let (delay, state, on_state) = {
        let mut i = inner.borrow_mut();
        if i.stopped {
            return;
        }
        if let Some(s) = i.socket.take() {
            s.set_onclose(None);
            s.set_onopen(None);
            s.set_onmessage(None);
        }
        i.failures += 1;
        let state = if i.failures > WsState::OFFLINE_AFTER {
            WsState::Offline
        } else {
            WsState::Reconnecting(i.failures)
        };
        (backoff(i.failures), state, i.handlers.on_state.clone())
    };
    on_state.emit(state);
    let weak = Rc::downgrade(inner);
    let timer = Timeout::new(delay, move || {
        if let Some(inner) = weak.upgrade() {
            connect(&inner);
        }
    });
    inner.borrow_mut().retry = Some(timer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), 250);
        assert_eq!(backoff(2), 500);
        assert_eq!(backoff(4), 2000);
        assert_eq!(backoff(6), 5000);
        assert_eq!(backoff(100), 5000);
    }

    #[test]
    fn url_follows_the_page() {
        assert_eq!(ws_url("http:", "127.0.0.1:8081"), "ws://127.0.0.1:8081/ws");
        assert_eq!(ws_url("https:", "example.org"), "wss://example.org/ws");
    }
}
