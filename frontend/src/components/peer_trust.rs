//! The trust mark of one peer (verified, unverified, key changed, not yet
//! verified), in the peer list and the conversation's header.

use roundtable_shared::api::{PeerTrust, PinSource};
use yew::prelude::*;

use crate::view;

#[derive(Properties, PartialEq)]
pub struct PeerTrustMarkProps {
    pub trust: PeerTrust,
    /// The fingerprint this node pinned for the peer.
    #[prop_or_default]
    pub pinned_fingerprint: Option<AttrValue>,
    #[prop_or_default]
    pub pinned_by: Option<PinSource>,
    /// Also show, as text, how the key was pinned and its full fingerprint
    /// (the conversation's header; the list keeps them in the tooltip).
    #[prop_or_default]
    pub details: bool,
}

/// `<span class="peer-trust verified">✓ verified</span>`: words first (the
/// symbol is decoration), the explanation in the tooltip and for screen
/// readers.
#[component(PeerTrustMark)]
pub fn peer_trust_mark(props: &PeerTrustMarkProps) -> Html {
    trust_mark(props)
}

/// The mark's markup, for lists that render it without a component per
/// row (the peer list has up to thousands).
pub fn trust_mark(props: &PeerTrustMarkProps) -> Html {
    let mark = view::trust_mark(
        props.trust,
        props.pinned_fingerprint.as_deref(),
        props.pinned_by,
    );
    let (symbol, words) = match mark.label.split_once(' ') {
        Some((s, w)) if !s.is_ascii() => (Some(s), w),
        _ => (None, mark.label),
    };
    let details = props.details && props.trust == PeerTrust::Verified;
    html! {
        <>
            <span class={classes!("peer-trust", mark.class)} data-trust={mark.class}
                  title={mark.title.clone()} aria-label={mark.title}>
                if let Some(s) = symbol {
                    <span aria-hidden="true">{ s }{ " " }</span>
                }
                { words }
            </span>
            if details {
                <span class="pin-details">
                    if let Some(by) = props.pinned_by {
                        <span class="pin-source" data-pinned-by={match by {
                            PinSource::FirstUse => "first_use",
                            PinSource::Accepted => "accepted",
                        }}>{ view::pin_source(by) }</span>
                    }
                    if let Some(fp) = &props.pinned_fingerprint {
                        <code class="pinned-fingerprint" title="The key this node pinned for this peer">{ fp }</code>
                    }
                </span>
            }
        </>
    }
}
