use roundtable_shared::api::Health;
use yew::prelude::*;

use crate::api::Remote;

#[derive(Properties, PartialEq)]
pub struct ServerStatusProps {
    /// The health report, as far as it has loaded.
    pub health: Remote<Health>,
    /// Called when the user asks to load again after a failure.
    #[prop_or_default]
    pub on_retry: Callback<()>,
}

/// The server's health: loading, its name and version, or why it failed.
#[component(ServerStatus)]
pub fn server_status(props: &ServerStatusProps) -> Html {
    match &props.health {
        Remote::Loading => html! {
            <p class="status loading" role="status" aria-live="polite">{ "loading…" }</p>
        },
        Remote::Ready(h) => html! {
            <dl class="facts">
                <dt>{ "Status" }</dt>
                <dd><span class="dot ok" aria-hidden="true"></span>{ "online" }</dd>
                <dt>{ "Name" }</dt>
                <dd id="name">{ &h.name }</dd>
                <dt>{ "Version" }</dt>
                <dd><span id="version">{ &h.version }</span></dd>
            </dl>
        },
        Remote::Failed(e) => {
            let retry = props.on_retry.reform(|_: MouseEvent| ());
            html! {
                <div class="status error" role="alert">
                    <p>{ "Cannot load the server status: " }{ e.to_string() }</p>
                    <button type="button" onclick={retry}>{ "Retry" }</button>
                </div>
            }
        }
    }
}
