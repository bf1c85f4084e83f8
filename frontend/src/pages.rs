//! The routed pages: they read the shared state, fetch what is missing and
//! render the presentational components.

use std::cell::Cell;
use std::rc::Rc;

use roundtable_shared::api::{Direction, PeerTrust, TransferInfo, TransferState};
use roundtable_shared::training::{RunStatus, Training};
use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;
use yew_router::prelude::*;

use crate::api;
use crate::components::{
    local_offset_min, now_ms, AttachFiles, Composer, FileDrop, KeyChangedBanner, MessageList,
    PeerCheckPanel, PeerList, PeerPathMark, PeerTrustMark, Timeline,
};
use crate::hooks::{use_store, use_tick};
use crate::route::Route;
use crate::state::{Action, CheckStatus, KeyAcceptance, Upload};
use crate::view;

/// Marks the first render of the peer list (read by the end-to-end test).
fn mark_first_peers() {
    thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
    if !DONE.with(|d| d.replace(true)) {
        if let Some(p) = web_sys::window().and_then(|w| w.performance()) {
            let _ = p.mark("roundtable:peers");
        }
    }
}

/// Every peer, filterable by name, and "Check peers".
#[component(PeersPage)]
pub fn peers_page() -> Html {
    let store = use_store();
    let filter = use_state(String::new);
    let rows = {
        let store = store.clone();
        use_memo((store.peers_rev, (*filter).clone()), move |(_, f)| {
            Rc::new(store.peer_list(f))
        })
    };
    let loaded = store.loaded;
    use_effect_with(loaded, |loaded| {
        if *loaded {
            mark_first_peers();
        }
    });
    let on_check = {
        let dispatch = store.dispatcher();
        let running = store.check.status == CheckStatus::Running;
        Callback::from(move |()| {
            if running {
                return;
            }
            let dispatch = dispatch.clone();
            dispatch.dispatch(Action::CheckStarted);
            yew::platform::spawn_local(async move {
                match api::check_peers(api::CHECK_TIMEOUT_MS).await {
                    Ok(check) => dispatch.dispatch(Action::Checked(check)),
                    Err(e) => dispatch.dispatch(Action::CheckFailed(format!(
                        "The check did not complete: {e}."
                    ))),
                }
            });
        })
    };
    let oninput = {
        let filter = filter.clone();
        Callback::from(move |e: InputEvent| {
            let input: HtmlInputElement = e.target_unchecked_into();
            filter.set(input.value());
        })
    };
    html! {
        <section class="card" aria-labelledby="peers-title">
            <div class="card-head">
                <h2 id="peers-title">{ "Peers" }</h2>
                <label class="filter">
                    <span class="visually-hidden">{ "Filter peers by name" }</span>
                    <input id="peer-filter" type="search" placeholder="Filter by name"
                           value={(*filter).clone()} {oninput} />
                </label>
                <span class="count">{ format!("{} shown", rows.len()) }</span>
            </div>
            <PeerCheckPanel check={store.check.clone()} timeout_ms={api::CHECK_TIMEOUT_MS} {on_check} />
            if loaded {
                <PeerList rows={(*rows).clone()} now={now_ms()} />
            } else {
                <p class="status loading" role="status">{ "loading…" }</p>
            }
        </section>
    }
}

/// Fetches the peers and applies `peer`'s entry (while the dashboard
/// still shows its key in question).
async fn refetch_peer(dispatch: &UseReducerDispatcher<crate::state::State>, peer: &str) {
    if let Ok(peers) = api::peers().await {
        if let Some(p) = peers.into_iter().find(|p| p.name == peer) {
            dispatch.dispatch(Action::PeerRefetched(p));
        }
    }
}

/// "1 message", "2 messages".
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The dashboard's number for the next upload (the node numbers it once
/// it has it).
fn next_upload_id() -> u64 {
    thread_local!(static NEXT: Cell<u64> = const { Cell::new(1) });
    NEXT.with(|n| n.replace(n.get() + 1))
}

/// Hands each file to the node for `peer`, one request per file, the file
/// streamed from disk: shown as uploading until the node answers with its
/// transfer, or with why not (kept on screen).
fn upload_files(
    dispatch: &UseReducerDispatcher<crate::state::State>,
    peer: &str,
    files: Vec<web_sys::File>,
) {
    for file in files {
        let id = next_upload_id();
        dispatch.dispatch(Action::UploadStarted(Upload {
            id,
            peer: peer.to_owned(),
            name: file.name(),
            size: file.size().max(0.0) as u64,
            started_at: now_ms(),
            error: None,
        }));
        let dispatch = dispatch.clone();
        let peer = peer.to_owned();
        yew::platform::spawn_local(async move {
            match api::upload(&peer, &file).await {
                Ok(transfers) => dispatch.dispatch(Action::UploadDone { id, transfers }),
                Err(e) => dispatch.dispatch(Action::UploadFailed {
                    id,
                    error: e.sentence(),
                }),
            }
        });
    }
}

#[derive(Properties, PartialEq)]
pub struct ChatPageProps {
    pub peer: AttrValue,
}

/// One conversation: history, live messages and the send box.
#[component(ChatPage)]
pub fn chat_page(props: &ChatPageProps) -> Html {
    let store = use_store();
    let peer = props.peer.to_string();
    let error = use_state(|| None::<AttrValue>);
    // One history request at a time.
    let busy = use_mut_ref(|| false);

    // The newest page, on opening and after every snapshot (reconnection).
    {
        let dispatch = store.dispatcher();
        let busy = busy.clone();
        use_effect_with((peer.clone(), store.epoch), move |(peer, _)| {
            let peer = peer.clone();
            yew::platform::spawn_local(async move {
                *busy.borrow_mut() = true;
                if let Ok(messages) = api::history(&peer, None, api::PAGE).await {
                    dispatch.dispatch(Action::Latest {
                        peer,
                        messages,
                        limit: api::PAGE,
                    });
                }
                *busy.borrow_mut() = false;
            });
        });
    }
    let chat = store.chats.get(&peer).cloned().unwrap_or_default();
    let on_load_older = {
        let dispatch = store.dispatcher();
        let peer = peer.clone();
        let before = chat.messages.first().map(|m| m.seq);
        let has_more = chat.has_more;
        Callback::from(move |()| {
            if !has_more || *busy.borrow() {
                return;
            }
            *busy.borrow_mut() = true;
            let busy = busy.clone();
            let dispatch = dispatch.clone();
            let peer = peer.clone();
            yew::platform::spawn_local(async move {
                if let Ok(messages) = api::history(&peer, before, api::PAGE).await {
                    dispatch.dispatch(Action::Older {
                        peer,
                        messages,
                        limit: api::PAGE,
                    });
                }
                *busy.borrow_mut() = false;
            });
        })
    };
    let on_seen = {
        let dispatch = store.dispatcher();
        let peer = peer.clone();
        let read = store.last_read(&peer);
        Callback::from(move |seq: i64| {
            if seq > read {
                dispatch.dispatch(Action::MarkRead {
                    peer: peer.clone(),
                    seq,
                });
            }
        })
    };
    let on_send = {
        let dispatch = store.dispatcher();
        let peer = peer.clone();
        let error = error.clone();
        Callback::from(move |text: String| {
            let dispatch = dispatch.clone();
            let peer = peer.clone();
            let error = error.clone();
            yew::platform::spawn_local(async move {
                match api::send(&peer, &text).await {
                    Ok(m) => {
                        error.set(None);
                        dispatch.dispatch(Action::Accepted(m));
                    }
                    Err(e) => error.set(Some(format!("Not sent: {e}").into())),
                }
            });
        })
    };
    let on_accept = {
        let dispatch = store.dispatcher();
        let peer = peer.clone();
        Callback::from(move |fingerprint: String| {
            let dispatch = dispatch.clone();
            let peer = peer.clone();
            let step = |acceptance| Action::KeyAcceptance {
                peer: peer.clone(),
                acceptance,
            };
            dispatch.dispatch(step(KeyAcceptance::Pending {
                fingerprint: fingerprint.clone(),
            }));
            yew::platform::spawn_local(async move {
                let step = |acceptance| Action::KeyAcceptance {
                    peer: peer.clone(),
                    acceptance,
                };
                match api::trust(&peer, &fingerprint).await {
                    // The node's peer event clears the banner; the refetch
                    // does too, should the event lag.
                    Ok(()) => {
                        dispatch.dispatch(step(KeyAcceptance::Accepted { fingerprint }));
                        refetch_peer(&dispatch, &peer).await;
                    }
                    // The key changed again: the refetch shows the new one.
                    Err(e) if e.status() == Some(api::CONFLICT) => {
                        dispatch.dispatch(step(KeyAcceptance::ChangedAgain { fingerprint }));
                        refetch_peer(&dispatch, &peer).await;
                    }
                    Err(e) => dispatch.dispatch(step(KeyAcceptance::Failed {
                        fingerprint,
                        error: e.to_string(),
                    })),
                }
            });
        })
    };
    let transfers = {
        let store = store.clone();
        use_memo((peer.clone(), store.transfers_rev), move |(p, _)| {
            store.peer_transfers(p)
        })
    };
    let uploads = {
        let store = store.clone();
        use_memo((peer.clone(), store.transfers_rev), move |(p, _)| {
            store.peer_uploads(p)
        })
    };
    let on_files = {
        let dispatch = store.dispatcher();
        let peer = peer.clone();
        Callback::from(move |files: Vec<web_sys::File>| upload_files(&dispatch, &peer, files))
    };
    let on_dismiss_upload = {
        let dispatch = store.dispatcher();
        Callback::from(move |id: u64| dispatch.dispatch(Action::UploadDismissed(id)))
    };
    let info = store.peers.get(&peer);
    let status = match info {
        Some(p) if p.online => "online".to_string(),
        Some(p) => match p.last_seen {
            Some(t) => format!("offline · seen {}", view::ago(t, now_ms())),
            None => "offline".into(),
        },
        None => "not in the directory".into(),
    };
    html! {
        <section class="card chat" aria-labelledby="chat-title">
            <div class="card-head">
                <Link<Route> to={Route::Peers} classes="back">{ "← Peers" }</Link<Route>>
                <h2 id="chat-title">{ &peer }</h2>
                <span class="peer-seen">{ status }</span>
                if let Some(p) = info {
                    <span class="chat-identity" id="chat-identity">
                        <PeerTrustMark trust={p.trust} details=true
                            pinned_fingerprint={p.pinned_fingerprint.clone().map(AttrValue::from)}
                            pinned_by={p.pinned_by} />
                        <PeerPathMark path={p.path} relay_only={view::relay_only(p)} />
                    </span>
                }
                <span class="count">{ plural(chat.count.max(chat.messages.len() as u64), "message") }</span>
            </div>
            if let Some(p) = info.filter(|p| p.trust == PeerTrust::KeyChanged) {
                <KeyChangedBanner peer={props.peer.clone()}
                    pinned={p.pinned_fingerprint.clone().map(AttrValue::from)}
                    offered={p.offered_fingerprint.clone().map(AttrValue::from)}
                    acceptance={store.key_acceptance.get(&peer).cloned()}
                    {on_accept} />
            }
            <FileDrop peer={props.peer.clone()} on_files={on_files.clone()}>
                <MessageList key={peer.clone()} chat={chat} {on_load_older} {on_seen}
                    {transfers} {uploads} {on_dismiss_upload} offset_min={local_offset_min()} />
            </FileDrop>
            <div class="composer-bar">
                <AttachFiles peer={props.peer.clone()} {on_files} />
                <Composer peer={props.peer.clone()} {on_send} error={(*error).clone()} />
            </div>
        </section>
    }
}

fn state_class(t: &Training) -> &'static str {
    t.state.as_str()
}

/// The trainings this node takes part in.
#[component(TrainingsPage)]
pub fn trainings_page() -> Html {
    let store = use_store();
    use_tick(store.trainings.values().any(|t| !t.state.is_terminal()));
    let mut list: Vec<&Training> = store.trainings.values().collect();
    list.sort_by_key(|t| std::cmp::Reverse(t.started_at));
    let offset = local_offset_min();
    let now = now_ms();
    html! {
        <section class="card" aria-labelledby="trainings-title">
            <div class="card-head"><h2 id="trainings-title">{ "Trainings" }</h2></div>
            if list.is_empty() {
                <p class="empty" id="no-trainings">{ "No trainings yet." }</p>
            } else {
                <table class="trainings" id="trainings">
                    <thead><tr>
                        <th scope="col">{ "Training" }</th><th scope="col">{ "State" }</th>
                        <th scope="col">{ "Round" }</th><th scope="col">{ "Started" }</th>
                        <th scope="col">{ "Duration" }</th>
                    </tr></thead>
                    <tbody>
                    { for list.iter().map(|t| html! {
                        <tr key={t.uuid.clone()} data-uuid={t.uuid.clone()} class="training-row">
                            <td><Link<Route> to={Route::Training { uuid: t.uuid.clone() }}>
                                <code>{ &t.uuid }</code></Link<Route>></td>
                            <td><span class={classes!("state", state_class(t))}>{ t.state.as_str() }</span></td>
                            <td class="round">{ t.current_round.map(|r| r.to_string()).unwrap_or_default() }</td>
                            <td>{ view::clock(t.started_at, offset) }</td>
                            <td>{ view::duration(t.finished_at.unwrap_or(now) - t.started_at) }</td>
                        </tr>
                    }) }
                    </tbody>
                </table>
            }
        </section>
    }
}

#[derive(Properties, PartialEq)]
pub struct TrainingPageProps {
    pub uuid: AttrValue,
}

/// One training: its timeline, and each round's phases with their runs.
#[component(TrainingPage)]
pub fn training_page(props: &TrainingPageProps) -> Html {
    let store = use_store();
    use_tick(
        store
            .trainings
            .get(props.uuid.as_str())
            .is_some_and(|t| !t.state.is_terminal()),
    );
    let Some(t) = store.trainings.get(props.uuid.as_str()) else {
        return html! {
            <section class="card">
                <h2>{ "Training " }<code>{ &props.uuid }</code></h2>
                <p class="empty">{ if store.loaded { "This node does not know this training." } else { "loading…" } }</p>
                <Link<Route> to={Route::Trainings}>{ "← Trainings" }</Link<Route>>
            </section>
        };
    };
    let offset = local_offset_min();
    let now = now_ms();
    let bars = view::bars(t, now);
    html! {
        <section class="card training" aria-labelledby="training-title">
            <div class="card-head">
                <Link<Route> to={Route::Trainings} classes="back">{ "← Trainings" }</Link<Route>>
                <h2 id="training-title">{ "Training " }<code>{ &t.uuid }</code></h2>
                <span class={classes!("state", state_class(t))} id="training-state">{ t.state.as_str() }</span>
            </div>
            <dl class="facts">
                <dt>{ "Current round" }</dt>
                <dd id="current-round">{ t.current_round.map(|r| r.to_string()).unwrap_or_else(|| "—".into()) }</dd>
                <dt>{ "Started" }</dt><dd>{ view::clock(t.started_at, offset) }</dd>
                if let Some(f) = t.finished_at {
                    <dt>{ "Finished" }</dt><dd>{ view::clock(f, offset) }{ " (" }{ view::duration(f - t.started_at) }{ ")" }</dd>
                }
                if let Some(m) = &t.global_model_id {
                    <dt>{ "Global model" }</dt><dd><code>{ m }</code></dd>
                }
            </dl>
            <Timeline training={t.clone()} {now} />
            <table class="phases" id="phases">
                <thead><tr>
                    <th scope="col">{ "Round" }</th><th scope="col">{ "Phase" }</th>
                    <th scope="col">{ "Started" }</th><th scope="col">{ "Duration" }</th>
                    <th scope="col">{ "Model" }</th><th scope="col">{ "Local run" }</th>
                </tr></thead>
                <tbody>
                { for bars.iter().map(|b| {
                    let rec = t.phase(b.round, b.phase);
                    let run = rec.and_then(|p| p.run.as_ref());
                    html! {
                        <tr class="phase-row" data-round={b.round.to_string()} data-phase={b.phase.as_str()}>
                            <td>{ b.round }</td>
                            <td><span class={classes!("key", b.phase.as_str())}>{ b.phase.as_str() }</span></td>
                            <td>{ view::clock(b.start, offset) }</td>
                            <td>{ b.duration.map(view::duration).unwrap_or_else(|| "running".into()) }</td>
                            <td><code class="model">{ rec.map(|p| p.model_id.clone()).unwrap_or_default() }</code></td>
                            <td>
                            if let Some(run) = run {
                                <span class={classes!("run", run.status.as_str())}>{ run.status.as_str() }</span>
                                if let Some(code) = run.exit_code {
                                    { format!(" exit {code}") }
                                }
                                if run.status != RunStatus::Running {
                                    if let Some(end) = run.ended_at {
                                        { format!(" · {}", view::duration(end - run.started_at)) }
                                    }
                                }
                                if !run.output_tail.is_empty() {
                                    <details open={run.status != RunStatus::Succeeded}>
                                        <summary>{ "output" }</summary>
                                        <pre class="output">{ run.output_tail.iter().rev().take(8).rev().cloned().collect::<Vec<_>>().join("\n") }</pre>
                                    </details>
                                }
                            } else {
                                { "—" }
                            }
                            </td>
                        </tr>
                    }
                }) }
                </tbody>
            </table>
        </section>
    }
}

/// One transfer's line on the files page.
fn transfer_row(t: &TransferInfo, now: i64, offset: i64) -> Html {
    let state = view::transfer_state_name(t.state);
    let (arrow, way) = match t.direction {
        Direction::Out => ("↑", "sent"),
        Direction::In => ("↓", "received"),
    };
    let direction = match t.direction {
        Direction::Out => "out",
        Direction::In => "in",
    };
    let trouble = matches!(t.state, TransferState::Failed | TransferState::Waiting);
    html! {
        <tr key={t.seq} class={classes!("transfer-row", state)} data-seq={t.seq.to_string()}
            data-state={state} data-direction={direction}>
            <td class="file-name">{ &t.name }</td>
            <td class="file-direction" title={way}>
                <span aria-hidden="true">{ arrow }</span>
                <span class="visually-hidden">{ way }</span>
            </td>
            <td class="file-peer">
                if t.bare {
                    { view::transfer_peer(t) }
                } else {
                    { if t.direction == Direction::Out { "to " } else { "from " } }
                    <Link<Route> to={Route::Chat { peer: t.peer.clone() }}>{ &t.peer }</Link<Route>>
                }
            </td>
            <td class="file-size" data-size={t.size.to_string()} title={format!("{} bytes", t.size)}>
                { view::size(t.size) }
            </td>
            <td>
                <span class={classes!("file-state", state)} data-state={state}>
                    { view::transfer_state_label(t.state, t.direction) }
                </span>
                if let Some(e) = t.error.as_ref().filter(|_| trouble) {
                    <p class="file-error">{ e }</p>
                }
            </td>
            <td class="file-progress-cell">
                <progress class="file-progress" max={t.size.max(1).to_string()}
                          value={if t.size == 0 { (view::fraction(t) as u64).to_string() } else { t.bytes.min(t.size).to_string() }}
                          data-bytes={t.bytes.to_string()} data-size={t.size.to_string()} />
                <span class="file-progress-text">{ view::progress(t) }</span>
            </td>
            <td class="file-started" title={view::date_time(t.created_at, offset)}>{ view::when(t.created_at, now, offset) }</td>
            <td class="file-updated" title={view::date_time(t.updated_at, offset)}>{ view::when(t.updated_at, now, offset) }</td>
            <td><code class="file-sha256" title={t.sha256.clone()}>{ view::short_sha(&t.sha256) }</code></td>
            <td>
                if view::downloadable(t) {
                    <a class="file-download" href={view::content_url(t.seq)} download={t.name.clone()}>
                        { "⤓ download" }
                    </a>
                }
            </td>
        </tr>
    }
}

/// Every file this node sent or received, newest first, filterable by state.
#[component(FilesPage)]
pub fn files_page() -> Html {
    let store = use_store();
    let filter = use_state(|| None::<TransferState>);
    let all = {
        let store = store.clone();
        use_memo(store.transfers_rev, move |_| store.transfer_list(None))
    };
    let shown: Vec<&Rc<TransferInfo>> = all
        .iter()
        .filter(|t| filter.is_none_or(|s| t.state == s))
        .collect();
    let onchange = {
        let filter = filter.clone();
        Callback::from(move |e: Event| {
            let select: HtmlSelectElement = e.target_unchecked_into();
            let value = select.value();
            filter.set(
                view::TRANSFER_STATES
                    .into_iter()
                    .find(|s| view::transfer_state_name(*s) == value),
            );
        })
    };
    let in_state = |s: TransferState| all.iter().filter(|t| t.state == s).count();
    let offset = local_offset_min();
    let now = now_ms();
    html! {
        <section class="card" aria-labelledby="files-title">
            <div class="card-head">
                <h2 id="files-title">{ "Files" }</h2>
                <label class="filter">
                    <span class="visually-hidden">{ "Show files in state" }</span>
                    <select id="files-filter" class="files-filter" {onchange}>
                        <option value="" selected={filter.is_none()}>{ format!("all states ({})", all.len()) }</option>
                        { for view::TRANSFER_STATES.into_iter().map(|s| {
                            let name = view::transfer_state_name(s);
                            html! {
                                <option value={name} selected={*filter == Some(s)}>
                                    { format!("{name} ({})", in_state(s)) }
                                </option>
                            }
                        }) }
                    </select>
                </label>
                <span class="count" id="files-count">{ format!("{} shown", shown.len()) }</span>
            </div>
            if !store.transfers.loaded && all.is_empty() {
                <p class="status loading" role="status">{ "loading…" }</p>
            } else if shown.is_empty() {
                <p class="empty" id="no-files">
                    { if all.is_empty() { "No files sent or received yet: attach one in a conversation." } else { "No files in this state." } }
                </p>
            } else {
                <table class="files" id="files">
                    <thead><tr>
                        <th scope="col">{ "File" }</th>
                        <th scope="col"><span title="↑ sent, ↓ received">{ "↑↓" }</span></th>
                        <th scope="col">{ "Peer" }</th><th scope="col">{ "Size" }</th>
                        <th scope="col">{ "State" }</th><th scope="col">{ "Progress" }</th>
                        <th scope="col">{ "Started" }</th><th scope="col">{ "Updated" }</th>
                        <th scope="col">{ "SHA-256" }</th><th scope="col"><span class="visually-hidden">{ "Download" }</span></th>
                    </tr></thead>
                    <tbody>
                        { for shown.iter().map(|t| transfer_row(t, now, offset)) }
                    </tbody>
                </table>
            }
        </section>
    }
}
