//! "Check peers": the button, the wait, and who answered (round trip,
//! version, path) or why not.

use roundtable_shared::api::PeerCheckResult;
use yew::prelude::*;

use crate::state::{CheckStatus, Checks};
use crate::view;

#[derive(Properties, PartialEq)]
pub struct PeerCheckPanelProps {
    pub check: Checks,
    /// The deadline the check asks for, ms (said while waiting).
    pub timeout_ms: u64,
    /// Start a check.
    #[prop_or_default]
    pub on_check: Callback<()>,
}

fn row(r: &PeerCheckResult) -> Html {
    let path = view::path_mark(r.path);
    html! {
        <tr key={r.name.clone()} class={classes!("check-result", if r.answered { "answered" } else { "no-answer" })}
            data-peer={r.name.clone()} data-answered={r.answered.to_string()}>
            <th scope="row" class="peer-name">{ &r.name }</th>
            if r.answered {
                <td class="answer ok"><span aria-hidden="true">{ "✓ " }</span>{ "answered" }</td>
                <td class="rtt">{ r.rtt_ms.map(view::rtt).unwrap_or_else(|| "—".into()) }</td>
                <td class="version">{ r.version.clone().unwrap_or_else(|| "—".into()) }</td>
                <td class="path">
                    if let Some(m) = path {
                        <span class={classes!("path", m.class)} title={m.title}>{ m.label }</span>
                    } else {
                        { "—" }
                    }
                </td>
            } else {
                <td class="answer bad"><span aria-hidden="true">{ "✗ " }</span>{ "no answer" }</td>
                <td class="check-why" colspan="3">
                    { r.error.clone().unwrap_or_else(|| "no answer within the deadline".into()) }
                </td>
            }
        </tr>
    }
}

/// The check's button and its latest result. While a check runs, or after
/// one failed, the previous result stays, marked as previous.
#[component(PeerCheckPanel)]
pub fn peer_check_panel(props: &PeerCheckPanelProps) -> Html {
    let status = &props.check.status;
    let running = *status == CheckStatus::Running;
    let onclick = {
        let on_check = props.on_check.clone();
        Callback::from(move |_: MouseEvent| on_check.emit(()))
    };
    let summary = props.check.last.as_ref().map(|c| {
        let answered = c.results.iter().filter(|r| r.answered).count();
        format!(
            "{answered} of {} answered within {} ms",
            c.results.len(),
            c.timeout_ms
        )
    });
    html! {
        <div class="peer-check" id="peer-check" aria-busy={running.to_string()}
             data-state={match status {
                 CheckStatus::Idle => "idle",
                 CheckStatus::Running => "running",
                 CheckStatus::Done => "done",
                 CheckStatus::Failed(_) => "failed",
             }}>
            <div class="check-head">
                <button id="check-peers" type="button" {onclick} disabled={running}
                        title="Send one request to every online peer at once and see who answers">
                    { "Check peers" }
                </button>
                if running {
                    <span class="checking" id="checking" role="status">
                        <span class="spinner" aria-hidden="true"></span>
                        { format!("checking… (up to {})", view::duration(props.timeout_ms as i64)) }
                    </span>
                } else if let (CheckStatus::Done, Some(s)) = (status, &summary) {
                    <span class="check-summary" id="check-summary" role="status">{ s }</span>
                }
            </div>
            if let CheckStatus::Failed(e) = status {
                <p class="error check-error" id="check-error" role="alert">{ e }</p>
            }
            if let Some(c) = &props.check.last {
                if *status != CheckStatus::Done {
                    <p class="check-previous">
                        { "Previous check" }{ summary.map(|s| format!(": {s}")).unwrap_or_default() }
                    </p>
                }
                if c.results.is_empty() {
                    <p class="empty" id="check-none">{ "No peer was online to ask." }</p>
                } else {
                    <table class={classes!("check-results", (*status != CheckStatus::Done).then_some("stale"))}
                           id="check-results">
                        <caption class="visually-hidden">{ "Who answered the peer check" }</caption>
                        <thead><tr>
                            <th scope="col">{ "Peer" }</th><th scope="col">{ "Answer" }</th>
                            <th scope="col">{ "Round trip" }</th><th scope="col">{ "Version" }</th>
                            <th scope="col">{ "Path" }</th>
                        </tr></thead>
                        <tbody>{ for c.results.iter().map(row) }</tbody>
                    </table>
                }
            }
        </div>
    }
}
