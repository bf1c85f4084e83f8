//! How messages reach one peer: direct or relayed via the directory, and
//! whether it is online only through the relay.

use roundtable_shared::api::PeerPath;
use yew::prelude::*;

use crate::view;

#[derive(Properties, PartialEq)]
pub struct PeerPathMarkProps {
    /// How the last exchange went (`None`: none yet).
    #[prop_or_default]
    pub path: Option<PeerPath>,
    /// Online only through the directory's relay (no chat address).
    #[prop_or_default]
    pub relay_only: bool,
}

/// `<span class="peer-path" data-path="relayed">relayed via directory · relay only</span>`;
/// nothing when neither is known.
#[component(PeerPathMark)]
pub fn peer_path_mark(props: &PeerPathMarkProps) -> Html {
    path_mark(props)
}

/// The mark's markup, for lists that render it without a component per
/// row (the peer list has up to thousands).
pub fn path_mark(props: &PeerPathMarkProps) -> Html {
    let path = view::path_mark(props.path);
    if path.is_none() && !props.relay_only {
        return Html::default();
    }
    let relay_only = props.relay_only.then(view::relay_only_mark);
    let data_path = path.as_ref().map_or("none", |m| m.class);
    html! {
        <span class="peer-path" data-path={data_path}
              data-relay-only={props.relay_only.to_string()}>
            if let Some(m) = path {
                <span class={classes!("path", m.class)} title={m.title.clone()} aria-label={m.title}>
                    { m.label }
                </span>
            }
            if let Some(m) = relay_only {
                if data_path != "none" {
                    <span aria-hidden="true">{ " · " }</span>
                }
                <span class={classes!("path", m.class)} title={m.title.clone()} aria-label={m.title}>
                    { m.label }
                </span>
            }
        </span>
    }
}
