use roundtable_shared::api::{KeyAtDirectory, LinkState};
use yew::prelude::*;

use crate::state::WsState;

#[derive(Properties, PartialEq, Default)]
pub struct HeaderProps {
    /// The node's name, once known.
    #[prop_or_default]
    pub name: Option<AttrValue>,
    /// Our chat address (what the directory tells others).
    #[prop_or_default]
    pub chat: Option<AttrValue>,
    /// The directory server's address.
    #[prop_or_default]
    pub directory: Option<AttrValue>,
    /// The dashboard's connection to the node.
    #[prop_or_default]
    pub ws: Option<WsState>,
    /// The node's session with its directory.
    #[prop_or_default]
    pub directory_state: Option<LinkState>,
    /// The node's version, once known.
    #[prop_or_default]
    pub version: Option<AttrValue>,
    /// The node's identity key fingerprint, once known.
    #[prop_or_default]
    pub fingerprint: Option<AttrValue>,
    /// What the directory did with that key.
    #[prop_or_default]
    pub key_at_directory: Option<KeyAtDirectory>,
    /// No chat listener (`--chat none`): reachable only through the
    /// directory's relay.
    #[prop_or_default]
    pub relay_only: bool,
    /// Plain connections refused (`--require-secure`).
    #[prop_or_default]
    pub require_secure: bool,
}

fn link_label(s: LinkState) -> &'static str {
    match s {
        LinkState::Connecting => "connecting",
        LinkState::Connected => "connected",
        LinkState::Reconnecting => "reconnecting",
        LinkState::Stopped => "stopped",
    }
}

/// The widest screen that counts as a phone's, in CSS px (the stylesheet's
/// `max-width: 600px` media queries).
pub const NARROW_PX: f64 = 600.0;

/// Whether the window is phone-sized (false outside a browser window).
fn narrow_screen() -> bool {
    web_sys::window()
        .and_then(|w| w.inner_width().ok())
        .and_then(|v| v.as_f64())
        .is_some_and(|w| w <= NARROW_PX)
}

/// The top bar: the node's name and identity, and how connected it is. On
/// a narrow screen its first line keeps the name and the connection; the
/// addresses go to a second line, folded (`#header-addresses`).
#[component(Header)]
pub fn header(props: &HeaderProps) -> Html {
    let ws = props.ws.unwrap_or(WsState::Connecting);
    let ws_class = match ws {
        WsState::Connected => "ok",
        WsState::Connecting | WsState::Reconnecting(_) => "warn",
        WsState::Offline => "bad",
    };
    let dir_class = match props.directory_state {
        Some(LinkState::Connected) => "ok",
        Some(LinkState::Stopped) => "bad",
        _ => "warn",
    };
    let chat = props.chat.as_ref().filter(|c| !c.is_empty());
    let has_addresses = props.relay_only
        || chat.is_some()
        || props.directory.is_some()
        || props.fingerprint.is_some();
    // Folded on a phone-sized screen when the header first renders; the
    // user opens and closes it from then on.
    let open = use_state(|| !narrow_screen());
    html! {
        <header class="topbar">
            <h1 class="brand">{ "Roundtable" }</h1>
            if let Some(name) = &props.name {
                <span class="me" id="me" title="This node">{ name }</span>
            }
            <span class={classes!("conn", ws_class)} id="conn" role="status" aria-live="polite"
                  title="The dashboard's connection to this node" data-state={ws.label()}>
                <span class="dot" aria-hidden="true"></span>{ ws.label() }
            </span>
            if let Some(d) = props.directory_state {
                <span class={classes!("conn", dir_class)} id="directory-state"
                      title="This node's session with the directory">
                    { "directory " }{ link_label(d) }
                </span>
            }
            <div class="identity">
                if has_addresses {
                    // On a phone the addresses start folded under
                    // "Addresses"; elsewhere they are open and the summary
                    // is hidden (the stylesheet's media queries).
                    <details class="addresses" id="header-addresses" open={*open}>
                        <summary title="This node's chat address, directory and identity key">
                            { "Addresses" }
                        </summary>
                        <span class="address-list">
                            if props.relay_only {
                                <span class="address pill relay-only" id="relay-only"
                                      title="Started with --chat none: no chat listener; peers reach this node through the directory's relay, which forwards sealed frames it cannot read">
                                    { "no chat listener · reachable through the directory's relay" }
                                </span>
                            } else if let Some(chat) = chat {
                                <span class="address" title="Chat address">{ "chat " }<code>{ chat }</code></span>
                            }
                            if let Some(dir) = &props.directory {
                                <span class="address" title="Directory">
                                    <span class="sep" aria-hidden="true">{ " · " }</span>{ "directory " }<code>{ dir }</code>
                                </span>
                            }
                            if let Some(fp) = &props.fingerprint {
                                <span class="address" title="This node's identity key fingerprint: compare it with your peers out of band">
                                    <span class="sep" aria-hidden="true">{ " · " }</span>{ "key " }<code id="fingerprint">{ fp }</code>
                                </span>
                            }
                        </span>
                    </details>
                }
                if props.key_at_directory == Some(KeyAtDirectory::Conflict) {
                    <span class="pill bad" id="key-conflict"
                          title="The directory has another key pinned for this name; ask its operator to run `roundtable directory reset-key NAME`">
                        { "key conflict at the directory" }
                    </span>
                }
                if props.require_secure {
                    <span class="pill secure" id="require-secure"
                          title="Started with --require-secure: plain connections (classic eurechat peers, nc) are refused">
                        { "secure peers only" }
                    </span>
                }
                if let Some(v) = &props.version {
                    <span class="pill" title="Version">{ "v" }<span id="version">{ v }</span></span>
                }
            </div>
        </header>
    }
}
