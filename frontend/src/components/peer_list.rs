use std::rc::Rc;

use roundtable_shared::api::PeerTrust;
use yew::prelude::*;
use yew_router::prelude::*;

use super::peer_path::{path_mark, PeerPathMarkProps};
use super::peer_trust::{trust_mark, PeerTrustMarkProps};
use crate::route::Route;
use crate::state::PeerRow;
use crate::view;

#[derive(Properties, PartialEq)]
pub struct PeerListProps {
    /// Already sorted and filtered.
    pub rows: Rc<Vec<PeerRow>>,
    /// Now, Unix ms (for "last seen").
    pub now: i64,
}

/// The peers, each a link to its conversation, with its trust mark and path.
#[component(PeerList)]
pub fn peer_list(props: &PeerListProps) -> Html {
    if props.rows.is_empty() {
        return html! { <p class="empty" id="no-peers">{ "No peers." }</p> };
    }
    html! {
        <ul class="peers" id="peers" aria-label="Peers">
            { for props.rows.iter().map(|r| {
                let seen = if !r.presence_known {
                    "presence unknown (not connected to your node)".to_string()
                } else if r.online {
                    "online".to_string()
                } else {
                    match r.last_seen {
                        Some(t) => format!("offline · seen {}", view::ago(t, props.now)),
                        None => "offline".to_string(),
                    }
                };
                html! {
                    <li key={r.name.clone()}
                        class={classes!("peer", (r.online && r.presence_known).then_some("online"), (!r.presence_known).then_some("presence-unknown"), (r.trust == PeerTrust::KeyChanged).then_some("key-changed"))}
                        data-name={r.name.clone()}>
                        <Link<Route> to={Route::Chat { peer: r.name.clone() }} classes="peer-link">
                            <span class={classes!("dot", match (r.presence_known, r.online) { (false, _) => "unknown", (true, true) => "ok", (true, false) => "off" })}
                                  aria-hidden="true"></span>
                            <span class="peer-name">{ &r.name }</span>
                            <span class="peer-seen">{ seen }</span>
                            { trust_mark(&PeerTrustMarkProps {
                                trust: r.trust,
                                pinned_fingerprint: r.pinned_fingerprint.clone().map(AttrValue::from),
                                pinned_by: r.pinned_by,
                                details: false,
                            }) }
                            { path_mark(&PeerPathMarkProps { path: r.path, relay_only: r.relay_only }) }
                            if let Some(fp) = &r.fingerprint {
                                <code class="peer-key" data-fingerprint={fp.clone()}
                                      title={format!("Key fingerprint, as the directory pinned it: {fp} (not yet proven by a handshake)")}>
                                    { fp.split(' ').take(2).collect::<Vec<_>>().join(" ") }{ " …" }
                                </code>
                            }
                            if r.unread > 0 {
                                <span class="badge unread" aria-label={format!("{} unread", r.unread)}>
                                    { r.unread }
                                </span>
                            }
                        </Link<Route>>
                    </li>
                }
            }) }
        </ul>
    }
}
