//! The warning over a conversation whose peer's identity key changed: old
//! and new fingerprints side by side, and the one button that accepts the
//! new key.

use yew::prelude::*;

use crate::state::KeyAcceptance;

#[derive(Properties, PartialEq)]
pub struct KeyChangedBannerProps {
    pub peer: AttrValue,
    /// The fingerprint this node pinned (the old key).
    #[prop_or_default]
    pub pinned: Option<AttrValue>,
    /// The fingerprint the peer now presents (the new key).
    #[prop_or_default]
    pub offered: Option<AttrValue>,
    /// Where the user's acceptance stands.
    #[prop_or_default]
    pub acceptance: Option<KeyAcceptance>,
    /// Accept this fingerprint (the one on screen).
    #[prop_or_default]
    pub on_accept: Callback<String>,
}

/// The first and last groups of a fingerprint, to name it in a sentence.
fn short(fp: &str) -> String {
    let groups: Vec<&str> = fp.split(' ').collect();
    match groups.as_slice() {
        [first, .., last] => format!("{first} … {last}"),
        _ => fp.to_owned(),
    }
}

/// Shown while the peer is `key_changed`; the peer event that follows an
/// accepted key removes it.
#[component(KeyChangedBanner)]
pub fn key_changed_banner(props: &KeyChangedBannerProps) -> Html {
    let peer = &props.peer;
    let busy = matches!(
        props.acceptance,
        Some(KeyAcceptance::Pending { .. } | KeyAcceptance::Accepted { .. })
    );
    let onclick = {
        let offered = props.offered.clone();
        let on_accept = props.on_accept.clone();
        Callback::from(move |_: MouseEvent| {
            if let Some(fp) = &offered {
                on_accept.emit(fp.to_string());
            }
        })
    };
    let (status, status_class) = match &props.acceptance {
        None => (None, "status"),
        Some(KeyAcceptance::Pending { .. }) => (Some("Accepting the new key…".to_owned()), "status"),
        Some(KeyAcceptance::Accepted { .. }) => (
            Some("Accepted; waiting for the node to confirm…".to_owned()),
            "status",
        ),
        Some(KeyAcceptance::ChangedAgain { fingerprint }) => (
            Some(format!(
                "{peer}'s key changed again before your acceptance took effect: the key you accepted ({}) is not the one offered now. The new one is shown above; compare it before accepting.",
                short(fingerprint)
            )),
            "error",
        ),
        Some(KeyAcceptance::Failed { error, .. }) => (
            Some(format!("The new key was not accepted: {error}.")),
            "error",
        ),
    };
    html! {
        <div class="key-changed-banner" id="key-changed-banner" role="alert" data-peer={peer.clone()}>
            <p class="key-changed-text">
                <strong>{ format!("{peer}'s identity key changed.") }</strong>
                { format!(" Messages from and to {peer} are held until you accept the new key.") }
            </p>
            <p class="hint">
                { format!("Compare the new fingerprint with {peer} by another channel (in person, by phone) before you accept it.") }
            </p>
            <div class="key-compare">
                <div class="key-old">
                    <span class="key-label">{ "Pinned key (old)" }</span>
                    <code id="old-fingerprint">{ props.pinned.clone().unwrap_or_else(|| "none".into()) }</code>
                </div>
                <div class="key-new">
                    <span class="key-label">{ "Offered key (new)" }</span>
                    <code id="new-fingerprint">{ props.offered.clone().unwrap_or_else(|| "not known yet".into()) }</code>
                </div>
            </div>
            <div class="key-actions">
                <button id="accept-key" type="button" {onclick}
                        disabled={busy || props.offered.is_none()}
                        aria-describedby="new-fingerprint">
                    { "Accept new key" }
                </button>
                if let Some(text) = status {
                    <p class={classes!("accept-status", status_class)} id="accept-status" role="status"
                       data-state={match &props.acceptance {
                           Some(KeyAcceptance::Pending { .. }) => "pending",
                           Some(KeyAcceptance::Accepted { .. }) => "accepted",
                           Some(KeyAcceptance::ChangedAgain { .. }) => "changed-again",
                           _ => "failed",
                       }}>
                        { text }
                    </p>
                }
            </div>
        </div>
    }
}
