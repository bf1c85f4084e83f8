//! The routed pages: they read the shared state, fetch what is missing and
//! render the presentational components.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use roundtable_shared::api::{
    Direction, Event as ApiEvent, PeerTrust, SearchHit, TransferInfo, TransferState,
};
use roundtable_shared::progress::RoundStatus;
use roundtable_shared::training::{
    clean_training_name, RunStatus, Training, TrainingState, MAX_TRAINING_NAME,
};
use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;
use yew_router::prelude::*;

use crate::api;
use crate::collab;
use crate::components::{
    local_offset_min, members_words, now_ms, AttachFiles, Composer, FileDrop, KeyChangedBanner,
    Lanes, MessageList, MetricCharts, NewRoomForm, PeerCheckPanel, PeerList, PeerPathMark,
    PeerTrustMark, RoomList, RoomMembers, SearchQuery, SearchResults, Timeline, TrainingName,
};
use crate::hooks::{use_store, use_tick};
use crate::route::{At, Route};
use crate::state::{
    Action, Chat, CheckStatus, HitSeek, KeyAcceptance, Upload, HIT_PAGE, HIT_PAGES,
};
use crate::view;

/// Marks the first render of the peer list (read by the end-to-end test).
fn mark_first_peers() {
    thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
    if !DONE.with(|d| d.replace(true)) {
        mark("roundtable:peers");
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
        <>
        <RoomsCard />
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
        </>
    }
}

/// The rooms, above the peers, and "New room".
#[component(RoomsCard)]
fn rooms_card() -> Html {
    let store = use_store();
    let navigator = use_navigator();
    let busy = use_state(|| false);
    let error = use_state(|| None::<AttrValue>);
    let rows = {
        let store = store.clone();
        use_memo(store.rooms_rev, move |_| Rc::new(store.room_list()))
    };
    let on_create = {
        let dispatch = store.dispatcher();
        let (busy, error) = (busy.clone(), error.clone());
        Callback::from(move |(name, members): (String, String)| {
            let (dispatch, busy, error) = (dispatch.clone(), busy.clone(), error.clone());
            let navigator = navigator.clone();
            busy.set(true);
            yew::platform::spawn_local(async move {
                match api::create_room(&name, api::member_names(&members)).await {
                    Ok(room) => {
                        error.set(None);
                        let id = room.id.clone();
                        dispatch.dispatch(Action::Room(room));
                        if let Some(nav) = &navigator {
                            nav.push(&Route::Room { id });
                        }
                    }
                    Err(e) => error.set(Some(format!("No room created: {}.", e.sentence()).into())),
                }
                busy.set(false);
            });
        })
    };
    // The example names two real peers, not this node's own user.
    let examples: Vec<AttrValue> = store
        .peers
        .keys()
        .filter(|n| store.me.as_ref().is_none_or(|m| &m.name != *n))
        .take(2)
        .map(|n| AttrValue::from(n.clone()))
        .collect();
    html! {
        <section class="card rooms-card" aria-labelledby="rooms-title">
            <div class="card-head">
                <h2 id="rooms-title">{ "Rooms" }</h2>
                <span class="count">{ plural(rows.len() as u64, "room") }</span>
            </div>
            <RoomList rows={(*rows).clone()} />
            <NewRoomForm {on_create} busy={*busy} error={(*error).clone()} {examples} />
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

/// Where the files chosen in a conversation go.
#[derive(Debug, Clone, PartialEq)]
enum FilesTo {
    Peer(String),
    /// Every member of the room (its id) but us.
    Room(String),
}

/// Hands each file to the node for `to`, one request per file, the file
/// streamed from disk: shown as uploading until the node answers with its
/// transfers, or with why not (kept on screen).
fn upload_files(
    dispatch: &UseReducerDispatcher<crate::state::State>,
    to: &FilesTo,
    files: Vec<web_sys::File>,
) {
    for file in files {
        let id = next_upload_id();
        let (peer, room) = match to {
            FilesTo::Peer(p) => (p.clone(), None),
            FilesTo::Room(r) => (String::new(), Some(r.clone())),
        };
        dispatch.dispatch(Action::UploadStarted(Upload {
            id,
            peer,
            room,
            name: file.name(),
            size: file.size().max(0.0) as u64,
            started_at: now_ms(),
            error: None,
        }));
        let dispatch = dispatch.clone();
        let to = to.clone();
        yew::platform::spawn_local(async move {
            let sent = match &to {
                FilesTo::Peer(p) => api::upload(p, &file).await,
                FilesTo::Room(r) => api::upload_to_room(r, &file).await,
            };
            match sent {
                Ok(transfers) => dispatch.dispatch(Action::UploadDone { id, transfers }),
                Err(e) => dispatch.dispatch(Action::UploadFailed {
                    id,
                    error: e.sentence(),
                }),
            }
        });
    }
}

/// A conversation's file callbacks: send the files chosen or dropped to
/// `to`, and dismiss a refused upload.
fn file_callbacks(
    dispatch: UseReducerDispatcher<crate::state::State>,
    to: FilesTo,
) -> (Callback<Vec<web_sys::File>>, Callback<u64>) {
    let on_files = {
        let dispatch = dispatch.clone();
        Callback::from(move |files: Vec<web_sys::File>| upload_files(&dispatch, &to, files))
    };
    let on_dismiss = Callback::from(move |id: u64| dispatch.dispatch(Action::UploadDismissed(id)));
    (on_files, on_dismiss)
}

/// A conversation's history: a peer's chat or a room.
#[derive(Debug, Clone, PartialEq)]
enum History {
    Peer(String),
    Room(String),
}

impl History {
    /// The page of up to `limit` messages before `before`, as the action
    /// that applies it.
    async fn older(&self, before: i64, limit: usize) -> Result<Action, api::ApiError> {
        Ok(match self {
            History::Peer(peer) => Action::Older {
                peer: peer.clone(),
                messages: api::history(peer, Some(before), limit).await?,
                limit,
            },
            History::Room(room) => Action::RoomOlder {
                room: room.clone(),
                messages: api::room_history(room, Some(before), limit).await?,
                limit,
            },
        })
    }
}

/// Opening a conversation at a message (a search hit, `?at=SEQ`), as the
/// page shows it.
#[derive(Debug, Clone, PartialEq)]
enum Hit {
    /// No `?at=`: the conversation opens at its newest message.
    None,
    /// Loading older pages up to it.
    Seeking(i64),
    /// Loaded: the list scrolls to it and marks it.
    Found(i64),
    /// Not found: the conversation opens as usual, and says why.
    Missing(String),
}

impl Hit {
    /// What the message list is told: the hit, while it is sought too
    /// (the list then does not mark the newest messages read).
    fn seq(&self) -> Option<i64> {
        match self {
            Hit::Seeking(seq) | Hit::Found(seq) => Some(*seq),
            Hit::None | Hit::Missing(_) => None,
        }
    }
}

/// The `?at=SEQ` of the page's address.
#[hook]
fn use_at() -> Option<i64> {
    use_location()
        .and_then(|l| l.query::<At>().ok())
        .and_then(|q| q.at)
}

/// Loads `history`'s older pages, one request at a time (`busy` is the
/// page's flag, shared with scrolling), until message `at` is loaded or
/// known not to be there ([`Chat::seek`] decides; at most [`HIT_PAGES`]).
#[hook]
fn use_hit(history: History, chat: Rc<Chat>, at: Option<i64>, busy: Rc<RefCell<bool>>) -> Hit {
    let dispatch = use_store().dispatcher();
    // Older pages loaded for this conversation and hit.
    let pages = use_mut_ref(|| (None::<(History, i64)>, 0usize));
    // Why a page could not be loaded (for this hit).
    let failed = use_state(|| None::<(i64, String)>);
    let key = at.map(|seq| (history.clone(), seq));
    if pages.borrow().0 != key {
        *pages.borrow_mut() = (key, 0);
    }
    let seek = at.map(|seq| (seq, chat.seek(seq, pages.borrow().1)));
    // Hooks are called whatever `at` is: the effect does nothing without.
    {
        let failed = failed.clone();
        use_effect(move || {
            let Some((seq, HitSeek::Older { before })) = seek else {
                return;
            };
            if *busy.borrow() || failed.as_ref().is_some_and(|(s, _)| *s == seq) {
                return;
            }
            *busy.borrow_mut() = true;
            pages.borrow_mut().1 += 1;
            yew::platform::spawn_local(async move {
                let page = history.older(before, HIT_PAGE).await;
                *busy.borrow_mut() = false;
                match page {
                    Ok(action) => dispatch.dispatch(action),
                    Err(e) => failed.set(Some((seq, e.sentence()))),
                }
            });
        });
    }
    let Some((seq, seek)) = seek else {
        return Hit::None;
    };
    if let Some((_, why)) = failed.as_ref().filter(|(s, _)| *s == seq) {
        return Hit::Missing(format!(
            "The message you searched for could not be loaded: {why}."
        ));
    }
    match seek {
        HitSeek::Waiting | HitSeek::Older { .. } => Hit::Seeking(seq),
        HitSeek::Found => Hit::Found(seq),
        HitSeek::Missing => Hit::Missing(
            "The message you searched for is not in this conversation: it opens at the newest message."
                .into(),
        ),
        HitSeek::TooFar => Hit::Missing(format!(
            "The message you searched for is further back than the {} messages loaded: it opens at the newest message.",
            HIT_PAGES * HIT_PAGE
        )),
    }
}

/// The line above a conversation opened at a search hit: looking for it,
/// or why it is not shown.
fn hit_notice(hit: &Hit) -> Html {
    match hit {
        Hit::Seeking(_) => html! {
            <p class="hit-notice hit-seeking" id="hit-seeking" role="status">{ "Finding the message…" }</p>
        },
        Hit::Missing(why) => html! {
            <p class="hit-notice hit-missing" id="hit-missing" role="status">{ why }</p>
        },
        Hit::None | Hit::Found(_) => html! {},
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
    let at = use_at();
    let hit = use_hit(History::Peer(peer.clone()), chat.clone(), at, busy.clone());
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
                // The node keeps it for every browser; its event comes back
                // to this one too (and changes nothing: marks only move on).
                let peer = peer.clone();
                yew::platform::spawn_local(async move {
                    let _ = api::mark_read(&peer, seq).await;
                });
            }
        })
    };
    // The text of a send that failed goes back into the composer; one
    // refused for an unknown name waits for "Send anyway" or "Edit".
    let unsent = use_state(|| None::<AttrValue>);
    let unknown = use_state(|| None::<String>);
    let send = {
        let dispatch = store.dispatcher();
        let peer = peer.clone();
        let error = error.clone();
        let unsent = unsent.clone();
        let unknown = unknown.clone();
        Callback::from(move |(text, force): (String, bool)| {
            let dispatch = dispatch.clone();
            let peer = peer.clone();
            let error = error.clone();
            let unsent = unsent.clone();
            let unknown = unknown.clone();
            // A second failure of the same text must restore it again.
            unsent.set(None);
            unknown.set(None);
            yew::platform::spawn_local(async move {
                match api::send(&peer, &text, force).await {
                    Ok(m) => {
                        error.set(None);
                        dispatch.dispatch(Action::Accepted(m));
                    }
                    Err(e) if e.status() == Some(404) && !force => {
                        error.set(Some(format!("Not sent: {}.", e.sentence()).into()));
                        unknown.set(Some(text));
                    }
                    Err(e) => {
                        error.set(Some(
                            format!(
                                "Not sent: {}. Your text is back in the box: press Send to try again.",
                                e.sentence()
                            )
                            .into(),
                        ));
                        unsent.set(Some(text.into()));
                    }
                }
            });
        })
    };
    let on_send = {
        let send = send.clone();
        Callback::from(move |text: String| send.emit((text, false)))
    };
    let on_send_anyway = {
        let (send, unknown) = (send.clone(), unknown.clone());
        Callback::from(move |_| {
            if let Some(text) = (*unknown).clone() {
                send.emit((text, true));
            }
        })
    };
    let on_edit = {
        let (unknown, unsent, error) = (unknown.clone(), unsent.clone(), error.clone());
        Callback::from(move |_| {
            if let Some(text) = (*unknown).clone() {
                unsent.set(Some(text.into()));
                unknown.set(None);
                error.set(None);
            }
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
    let (on_files, on_dismiss_upload) =
        file_callbacks(store.dispatcher(), FilesTo::Peer(peer.clone()));
    let info = store.peers.get(&peer);
    let status = match info {
        // Without our node, what it last said may no longer hold.
        _ if store.ws != Some(crate::state::WsState::Connected) => {
            "presence unknown (not connected to your node)".to_string()
        }
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
            { hit_notice(&hit) }
            <FileDrop peer={props.peer.clone()} on_files={on_files.clone()}>
                <MessageList key={peer.clone()} chat={chat} {on_load_older} {on_seen}
                    {transfers} {uploads} {on_dismiss_upload} offset_min={local_offset_min()}
                    hit={hit.seq()} />
            </FileDrop>
            <div class="composer-bar">
                <AttachFiles peer={props.peer.clone()} {on_files} />
                <Composer peer={props.peer.clone()} {on_send} error={(*error).clone()}
                    unsent={(*unsent).clone()} />
            </div>
            if unknown.is_some() {
                <p class="unknown-recipient" id="unknown-recipient">
                    <button type="button" id="send-anyway" onclick={on_send_anyway}>
                        { format!("Send anyway (it waits until {} appears)", props.peer) }
                    </button>
                    <button type="button" class="link" id="edit-unsent" onclick={on_edit}>{ "Edit" }</button>
                </p>
            }
        </section>
    }
}

/// An answer with a room's new summary (adding someone, leaving).
type RoomAnswer = std::pin::Pin<
    Box<
        dyn std::future::Future<
            Output = Result<roundtable_shared::api::RoomSummary, api::ApiError>,
        >,
    >,
>;

#[derive(Properties, PartialEq)]
pub struct RoomPageProps {
    pub id: AttrValue,
}

/// One room: its name and members, add and leave, its history, live
/// messages and the send box.
#[component(RoomPage)]
pub fn room_page(props: &RoomPageProps) -> Html {
    let store = use_store();
    let id = props.id.to_string();
    let error = use_state(|| None::<AttrValue>);
    let unsent = use_state(|| None::<AttrValue>);
    // Why the room could not be fetched (404: no such room here).
    let missing = use_state(|| None::<AttrValue>);
    let members_busy = use_state(|| false);
    let members_error = use_state(|| None::<AttrValue>);
    let added = use_state(|| 0u64);
    // One history request at a time.
    let busy = use_mut_ref(|| false);

    // The room's summary and newest page, on opening and after every
    // snapshot (reconnection).
    {
        let dispatch = store.dispatcher();
        let busy = busy.clone();
        let missing = missing.clone();
        use_effect_with((id.clone(), store.epoch), move |(id, _)| {
            let id = id.clone();
            yew::platform::spawn_local(async move {
                match api::room(&id).await {
                    Ok(room) => {
                        missing.set(None);
                        dispatch.dispatch(Action::Room(room));
                    }
                    Err(e) if e.status() == Some(404) => {
                        missing.set(Some(e.sentence().into()));
                        return;
                    }
                    Err(_) => {}
                }
                *busy.borrow_mut() = true;
                if let Ok(messages) = api::room_history(&id, None, api::PAGE).await {
                    dispatch.dispatch(Action::RoomLatest {
                        room: id,
                        messages,
                        limit: api::PAGE,
                    });
                }
                *busy.borrow_mut() = false;
            });
        });
    }
    let chat = store.room_chat(&id);
    let at = use_at();
    let hit = use_hit(History::Room(id.clone()), chat.clone(), at, busy.clone());
    let on_load_older = {
        let dispatch = store.dispatcher();
        let id = id.clone();
        let before = chat.messages.first().map(|m| m.seq);
        let has_more = chat.has_more;
        Callback::from(move |()| {
            if !has_more || *busy.borrow() {
                return;
            }
            *busy.borrow_mut() = true;
            let (busy, dispatch, id) = (busy.clone(), dispatch.clone(), id.clone());
            yew::platform::spawn_local(async move {
                if let Ok(messages) = api::room_history(&id, before, api::PAGE).await {
                    dispatch.dispatch(Action::RoomOlder {
                        room: id,
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
        let id = id.clone();
        let read = store.room_read(&id);
        Callback::from(move |seq: i64| {
            if seq > read {
                dispatch.dispatch(Action::RoomMarkRead {
                    room: id.clone(),
                    seq,
                });
                // The node keeps it for every browser (and tells them all).
                let id = id.clone();
                yew::platform::spawn_local(async move {
                    let _ = api::mark_room_read(&id, seq).await;
                });
            }
        })
    };
    let on_send = {
        let dispatch = store.dispatcher();
        let id = id.clone();
        let (error, unsent) = (error.clone(), unsent.clone());
        Callback::from(move |text: String| {
            let (dispatch, id) = (dispatch.clone(), id.clone());
            let (error, unsent) = (error.clone(), unsent.clone());
            // A second failure of the same text must restore it again.
            unsent.set(None);
            yew::platform::spawn_local(async move {
                match api::send_room(&id, &text).await {
                    Ok(m) => {
                        error.set(None);
                        dispatch.dispatch(Action::Accepted(m));
                    }
                    Err(e) => {
                        error.set(Some(
                            format!(
                                "Not sent: {}. Your text is back in the box: press Send to try again.",
                                e.sentence()
                            )
                            .into(),
                        ));
                        unsent.set(Some(text.into()));
                        // Refused because we left (in another browser)?
                        // The room's summary says.
                        if e.status() == Some(api::CONFLICT) {
                            if let Ok(room) = api::room(&id).await {
                                dispatch.dispatch(Action::Room(room));
                            }
                        }
                    }
                }
            });
        })
    };
    // Add and leave answer with the room's new summary.
    let members_call = {
        let dispatch = store.dispatcher();
        let (busy, error, added) = (members_busy.clone(), members_error.clone(), added.clone());
        move |adding: bool, call: RoomAnswer| {
            let (dispatch, busy, error) = (dispatch.clone(), busy.clone(), error.clone());
            let added = added.clone();
            busy.set(true);
            yew::platform::spawn_local(async move {
                match call.await {
                    Ok(room) => {
                        error.set(None);
                        if adding {
                            added.set(*added + 1);
                        }
                        dispatch.dispatch(Action::Room(room));
                    }
                    Err(e) => {
                        let what = if adding { "Not added" } else { "Not left" };
                        error.set(Some(format!("{what}: {}.", e.sentence()).into()));
                    }
                }
                busy.set(false);
            });
        }
    };
    let on_add = {
        let (call, id) = (members_call.clone(), id.clone());
        Callback::from(move |name: String| {
            let id = id.clone();
            call(
                true,
                Box::pin(async move { api::add_member(&id, &name).await }),
            )
        })
    };
    let on_leave = {
        let id = id.clone();
        Callback::from(move |()| {
            let id = id.clone();
            members_call(false, Box::pin(async move { api::leave_room(&id).await }))
        })
    };
    let files = {
        let store = store.clone();
        use_memo((id.clone(), store.transfers_rev), move |(id, _)| {
            store.room_files(id)
        })
    };
    let uploads = {
        let store = store.clone();
        use_memo((id.clone(), store.transfers_rev), move |(id, _)| {
            store.room_uploads(id)
        })
    };
    let (on_files, on_dismiss_upload) =
        file_callbacks(store.dispatcher(), FilesTo::Room(id.clone()));
    let Some(room) = store.rooms.get(&id).cloned() else {
        return html! {
            <section class="card" aria-labelledby="room-name">
                <div class="card-head">
                    <Link<Route> to={Route::Peers} classes="back">{ "← Rooms & peers" }</Link<Route>>
                    <h2 id="room-name">{ "Room" }</h2>
                </div>
                if let Some(why) = &*missing {
                    <p class="empty" id="no-room">{ format!("This room is not on this node: {why}.") }</p>
                } else {
                    <p class="status loading" role="status">{ "loading…" }</p>
                }
            </section>
        };
    };
    let present = room.members.iter().filter(|m| m.present).count();
    let me = store.me.as_ref().map(|m| AttrValue::from(m.name.clone()));
    // Files go to the members present now; with nobody else there is no
    // one to send to.
    let can_send_files = room.joined && present > 1;
    let files_to = AttrValue::from(format!("everyone in {}", room.name));
    html! {
        <section class={classes!("card", "chat", "room", (!room.joined).then_some("left"))}
                 aria-labelledby="room-name" data-room={id.clone()}>
            <div class="card-head">
                <Link<Route> to={Route::Peers} classes="back">{ "← Rooms & peers" }</Link<Route>>
                <h2 id="room-name">{ &room.name }</h2>
                if let Some(uuid) = &room.training {
                    <Link<Route> to={Route::Training { uuid: uuid.clone() }} classes="room-training">
                        <span id="room-training">
                            { match store.trainings.get(uuid) {
                                Some(t) => format!("Training: {} →", view::training_name(t, now_ms(), local_offset_min())),
                                None => "Its training →".to_owned(),
                            } }
                        </span>
                    </Link<Route>>
                }
                <span class="peer-seen" id="room-member-count">{ members_words(present) }</span>
                <span class="count">{ plural(chat.count.max(chat.messages.len() as u64), "message") }</span>
            </div>
            <RoomMembers room={room.clone()} {me} {on_add} {on_leave} added={*added}
                busy={*members_busy} error={(*members_error).clone()} />
            { hit_notice(&hit) }
            <FileDrop peer={files_to.clone()} on_files={on_files.clone()} disabled={!can_send_files}>
                <MessageList key={id.clone()} chat={chat} {on_load_older} {on_seen}
                    transfers={files.shown.clone()} recipients={files.recipients.clone()}
                    {uploads} {on_dismiss_upload}
                    show_sender=true offset_min={local_offset_min()} hit={hit.seq()} />
            </FileDrop>
            <div class="composer-bar">
                if can_send_files {
                    <AttachFiles peer={files_to} {on_files} />
                }
                <Composer peer={AttrValue::from(room.name.clone())} {on_send}
                    error={(*error).clone()} unsent={(*unsent).clone()} disabled={!room.joined} />
            </div>
        </section>
    }
}

fn state_class(t: &Training) -> &'static str {
    t.state.as_str()
}

/// Trainings per page of the list.
pub const TRAININGS_PAGE: usize = 50;

/// Rounds of this node's timeline and phase table shown until the user
/// asks for all (the lanes above show the whole training compactly).
pub const LATEST_ROUNDS: usize = 12;

/// The trainings list's participants cell: `3 participants · 2 done with
/// round 4`.
fn participants_words(s: RoundStatus) -> String {
    if s.known == 0 {
        return "—".into();
    }
    let who = plural(s.known as u64, "participant");
    match s.round {
        Some(r) => format!("{who} · {} done with round {r}", s.done),
        None => who,
    }
}

/// The trainings this node takes part in, newest first: filterable by
/// state and paged.
#[component(TrainingsPage)]
pub fn trainings_page() -> Html {
    let store = use_store();
    use_tick(store.trainings.values().any(|t| !t.state.is_terminal()));
    let filter = use_state(|| None::<TrainingState>);
    let page = use_state(|| 0usize);
    let sorted = use_memo(store.trainings.clone(), |trainings| {
        let mut list: Vec<(i64, String)> = trainings
            .values()
            .map(|t| (t.started_at, t.uuid.clone()))
            .collect();
        list.sort_by(|a, b| b.cmp(a));
        list.into_iter().map(|(_, u)| u).collect::<Vec<String>>()
    });
    let shown: Vec<&Training> = sorted
        .iter()
        .filter_map(|u| store.trainings.get(u))
        .filter(|t| filter.is_none_or(|s| t.state == s))
        .collect();
    let pages = shown.len().div_ceil(TRAININGS_PAGE).max(1);
    let current = (*page).min(pages - 1);
    let from = current * TRAININGS_PAGE;
    let rows = &shown[from..(from + TRAININGS_PAGE).min(shown.len())];
    let onchange = {
        let filter = filter.clone();
        let page = page.clone();
        Callback::from(move |e: Event| {
            let select: HtmlSelectElement = e.target_unchecked_into();
            filter.set(TrainingState::parse(&select.value()));
            page.set(0);
        })
    };
    let go = |to: usize| {
        let page = page.clone();
        Callback::from(move |_: MouseEvent| page.set(to))
    };
    let in_state = |s: TrainingState| store.trainings.values().filter(|t| t.state == s).count();
    let offset = local_offset_min();
    let now = now_ms();
    html! {
        <section class="card" aria-labelledby="trainings-title">
            <div class="card-head">
                <h2 id="trainings-title">{ "Trainings" }</h2>
                <label class="filter">
                    <span class="visually-hidden">{ "Show trainings in state" }</span>
                    <select id="trainings-filter" {onchange}>
                        <option value="" selected={filter.is_none()}>{ format!("all states ({})", store.trainings.len()) }</option>
                        { for TrainingState::ALL.into_iter().map(|s| html! {
                            <option value={s.as_str()} selected={*filter == Some(s)}>
                                { format!("{} ({})", view::state_words(s), in_state(s)) }
                            </option>
                        }) }
                    </select>
                </label>
                <span class="count" id="trainings-count">{ format!("{} shown", shown.len()) }</span>
            </div>
            if store.trainings.is_empty() {
                <p class="empty" id="no-trainings">{ "No trainings yet." }</p>
            } else if shown.is_empty() {
                <p class="empty" id="no-trainings-in-state">{ "No trainings in this state." }</p>
            } else {
                <table class="trainings" id="trainings">
                    <thead><tr>
                        <th scope="col">{ "Training" }</th><th scope="col">{ "State" }</th>
                        <th scope="col">{ "Round" }</th><th scope="col">{ "Participants" }</th>
                        <th scope="col">{ "Started" }</th><th scope="col">{ "Duration" }</th>
                    </tr></thead>
                    <tbody>
                    { for rows.iter().map(|t| html! {
                        <tr key={t.uuid.clone()} data-uuid={t.uuid.clone()} data-state={t.state.as_str()} class="training-row">
                            <td><Link<Route> to={Route::Training { uuid: t.uuid.clone() }} classes="training-link">
                                { view::training_name(t, now, offset) }</Link<Route>>
                                if t.name.is_some() {
                                    <code class="short-id" title={t.uuid.clone()}>{ t.short_id() }</code>
                                }
                            </td>
                            <td><span class={classes!("state", state_class(t))} data-state={t.state.as_str()}>{ view::state_words(t.state) }</span></td>
                            <td class="round">{ t.current_round.map(|r| r.to_string()).unwrap_or_default() }</td>
                            <td class="participants">{ participants_words(store.round_status(&t.uuid)) }</td>
                            <td title={view::date_time(t.started_at, offset)}>{ view::when(t.started_at, now, offset) }</td>
                            <td>{ view::duration(t.finished_at.unwrap_or(now) - t.started_at) }</td>
                        </tr>
                    }) }
                    </tbody>
                </table>
                if pages > 1 {
                    <nav class="pager" aria-label="Pages of trainings">
                        <button type="button" id="trainings-prev" disabled={current == 0}
                                onclick={go(current.saturating_sub(1))}>{ "← Newer" }</button>
                        <span id="trainings-range">
                            { format!("{}–{} of {}", from + 1, from + rows.len(), shown.len()) }
                        </span>
                        <button type="button" id="trainings-next" disabled={current + 1 >= pages}
                                onclick={go(current + 1)}>{ "Older →" }</button>
                    </nav>
                }
            }
        </section>
    }
}

#[derive(Properties, PartialEq)]
pub struct TrainingPageProps {
    pub uuid: AttrValue,
}

/// Marks that the training page rendered with its participants loaded
/// (`roundtable:training-rendered`), then that the browser drew it
/// (`roundtable:training-painted`: after the next animation frame), for
/// the render benchmark.
fn mark_training_rendered() {
    use wasm_bindgen::{closure::Closure, JsCast};
    mark("roundtable:training-rendered");
    let Some(w) = web_sys::window() else {
        return;
    };
    let after_frame = Closure::once_into_js(|| {
        gloo_timers::callback::Timeout::new(0, || mark("roundtable:training-painted")).forget();
    });
    let _ = w.request_animation_frame(after_frame.unchecked_ref());
}

/// A `performance` mark (read by the benchmarks and end-to-end tests).
pub(crate) fn mark(name: &str) {
    if let Some(p) = web_sys::window().and_then(|w| w.performance()) {
        let _ = p.mark(name);
    }
}

/// One training: the participants' lanes, the metric charts, this node's
/// timeline and each round's phases with their runs.
#[component(TrainingPage)]
pub fn training_page(props: &TrainingPageProps) -> Html {
    let store = use_store();
    let uuid = props.uuid.to_string();
    let tp = store.training_participants(&uuid);
    let running = store
        .trainings
        .get(uuid.as_str())
        .is_some_and(|t| !t.state.is_terminal())
        || tp.by_name.values().any(|p| !p.lane.state.is_terminal());
    use_tick(running);
    // All phases of every participant, on opening and at each connection
    // of the WebSocket: fetched beside the snapshot, not after it, so that
    // a page opened at its address shows both in one render (events that
    // cross the request are merged in, never moved back by its answer).
    {
        let dispatch = store.dispatcher();
        use_effect_with(
            (uuid.clone(), store.connections),
            move |(uuid, connections)| {
                if *connections == 0 {
                    return;
                }
                let training = uuid.clone();
                yew::platform::spawn_local(async move {
                    if let Ok(participants) = api::training_participants(&training).await {
                        // The benchmark times from here or the snapshot,
                        // whichever is later, to the rendered mark.
                        mark("roundtable:training-data");
                        dispatch.dispatch(Action::Participants {
                            training,
                            participants,
                        });
                    }
                });
            },
        );
    }
    // Lanes and charts change only with this training's participants.
    let deps = (uuid.clone(), tp.rev, Rc::as_ptr(&tp) as usize);
    let lanes = {
        let tp = tp.clone();
        use_memo(deps.clone(), move |_| tp.lanes())
    };
    let series = {
        let lanes = lanes.clone();
        use_memo(deps, move |_| collab::metric_series(&lanes))
    };
    // The benchmark's marks, once per load of a training's page: queued
    // from the render that first shows its participants, so that they land
    // when that render's DOM is complete. (An effect would run later when
    // a render takes over 16 ms: Yew then lets the browser draw a frame,
    // and renders what arrived meanwhile, before it runs effects.)
    {
        let marked = use_mut_ref(|| None::<String>);
        let shown = tp.full && store.trainings.contains_key(uuid.as_str());
        if shown && marked.borrow().as_deref() != Some(uuid.as_str()) {
            *marked.borrow_mut() = Some(uuid.clone());
            yew::platform::spawn_local(async { mark_training_rendered() });
        }
    }
    let all_rounds = use_state(|| false);
    let rename_busy = use_state(|| false);
    let rename_error = use_state(|| None::<AttrValue>);
    let on_rename = {
        let dispatch = store.dispatcher();
        let uuid = uuid.clone();
        let busy = rename_busy.clone();
        let error = rename_error.clone();
        Callback::from(move |name: String| {
            if !name.is_empty() && clean_training_name(&name).is_none() {
                error.set(Some(
                    format!("A name is 1 to {MAX_TRAINING_NAME} characters, without control characters.").into(),
                ));
                return;
            }
            busy.set(true);
            error.set(None);
            let dispatch = dispatch.clone();
            let uuid = uuid.clone();
            let busy = busy.clone();
            let error = error.clone();
            yew::platform::spawn_local(async move {
                match api::rename_training(&uuid, &name).await {
                    Ok(training) => {
                        dispatch.dispatch(Action::Event(ApiEvent::Training { training }));
                    }
                    Err(e) => error.set(Some(format!("Not renamed: {}", e.sentence()).into())),
                }
                busy.set(false);
            });
        })
    };
    let Some(t) = store.trainings.get(uuid.as_str()) else {
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
    let mut bars = view::bars(t, now);
    let mut rounds: Vec<u32> = bars.iter().map(|b| b.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    let max_rounds = (!*all_rounds && rounds.len() > LATEST_ROUNDS).then_some(LATEST_ROUNDS);
    if max_rounds.is_some() {
        let shown = &rounds[rounds.len() - LATEST_ROUNDS..];
        bars.retain(|b| shown.binary_search(&b.round).is_ok());
    }
    let toggle_rounds = {
        let all_rounds = all_rounds.clone();
        Callback::from(move |_: MouseEvent| all_rounds.set(!*all_rounds))
    };
    let summaries = Rc::new(collab::lane_summaries(&lanes, &store.peers, now));
    let span = collab::lanes_span(&lanes, now);
    let sharing = store.me.as_ref().map(|m| m.share_progress);
    html! {
        <section class="card training" aria-labelledby="training-title">
            <div class="card-head">
                <Link<Route> to={Route::Trainings} classes="back">{ "← Trainings" }</Link<Route>>
                <TrainingName shown={view::training_name(t, now, offset)}
                    name={t.name.clone().map(AttrValue::from)} uuid={t.uuid.clone()}
                    {on_rename} busy={*rename_busy} error={(*rename_error).clone()}
                    on_open={let e = rename_error.clone(); move |()| e.set(None)} />
                <span class={classes!("state", state_class(t))} id="training-state" data-state={t.state.as_str()}>
                    { view::state_words(t.state) }
                </span>
                if let Some(room) = store.training_room(&t.uuid) {
                    <Link<Route> to={Route::Room { id: room.id.clone() }} classes="training-room">
                        <span id="training-room">{ "Room: " }{ &room.name }</span>
                    </Link<Route>>
                }
            </div>
            <dl class="facts">
                <dt>{ "Current round" }</dt>
                <dd id="current-round">{ t.current_round.map(|r| r.to_string()).unwrap_or_else(|| "—".into()) }</dd>
                <dt>{ "Started" }</dt>
                <dd title={view::date_time(t.started_at, offset)}>{ view::when(t.started_at, now, offset) }</dd>
                if let Some(f) = t.finished_at {
                    <dt>{ "Finished" }</dt>
                    <dd title={view::date_time(f, offset)}>{ view::when(f, now, offset) }{ " (" }{ view::duration(f - t.started_at) }{ ")" }</dd>
                }
                if let Some(m) = &t.global_model_id {
                    <dt>{ "Global model" }</dt><dd><code>{ m }</code></dd>
                }
                <dt>{ "Progress" }</dt>
                <dd id="share-progress" class={classes!("sharing", sharing.map(|on| if on { "on" } else { "off" }))}>
                    { match sharing {
                        Some(true) => "Sharing progress with the other participants",
                        Some(false) => "Not sharing (--share-progress off)",
                        None => "—",
                    } }
                </dd>
            </dl>
            <section class="participants" aria-labelledby="participants-title">
                <div class="section-head">
                    <h3 id="participants-title">{ "Participants" }</h3>
                    <span class="count" id="participants-count">{ participants_words(tp.round_status()) }</span>
                </div>
                if summaries.is_empty() {
                    <p class="empty" id="no-participants">
                        { if tp.full { "No participant's progress known yet." } else { "loading…" } }
                    </p>
                } else {
                    <Lanes lanes={summaries.clone()} {span} {now} offset_min={offset} />
                    if summaries.len() == 1 {
                        <p class="hint" id="only-you">
                            { "Only this node so far: peers in this training appear here once they share their progress." }
                        </p>
                    }
                }
            </section>
            <MetricCharts uuid={t.uuid.clone()} series={series.clone()} />
            <section class="local-rounds" aria-labelledby="rounds-title">
                <div class="section-head">
                    <h3 id="rounds-title">{ "This node's rounds" }</h3>
                    if rounds.len() > LATEST_ROUNDS {
                        <span class="count">
                            { if max_rounds.is_some() { format!("the latest {LATEST_ROUNDS} of {}", rounds.len()) } else { format!("all {}", rounds.len()) } }
                        </span>
                        <button type="button" class="link" id="rounds-toggle" onclick={toggle_rounds}>
                            { if max_rounds.is_some() { format!("Show all {} rounds", rounds.len()) } else { format!("Show the latest {LATEST_ROUNDS}") } }
                        </button>
                    }
                </div>
                <Timeline training={t.clone()} {now} {max_rounds} />
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
                            <tr class={classes!("phase-row", b.duration.is_none().then_some("live"))}
                                data-round={b.round.to_string()} data-phase={b.phase.as_str()}>
                                <td>{ b.round }</td>
                                <td><span class={classes!("key", b.phase.as_str())}>{ view::phase_word(b.phase) }</span></td>
                                <td title={view::date_time(b.start, offset)}>{ view::when(b.start, now, offset) }</td>
                                <td>{ b.duration.map(view::duration).unwrap_or_else(|| format!("running · {}", view::duration(b.width))) }</td>
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
                                    if run.metrics_ignored > 0 {
                                        <span class="metrics-ignored" title="Metric lines that were malformed or over the limits">
                                            { format!(" · {} metric lines ignored", run.metrics_ignored) }
                                        </span>
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
        </section>
    }
}

/// One transfer's line on the files page.
fn transfer_row(t: &TransferInfo, room: Option<&str>, now: i64, offset: i64) -> Html {
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
                if let (Some(id), Some(name)) = (&t.room, room) {
                    <span class="file-room">
                        { " in " }
                        <Link<Route> to={Route::Room { id: id.clone() }}>{ name }</Link<Route>>
                    </span>
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
                        { for shown.iter().map(|t| {
                            let room = t.room.as_ref().and_then(|r| store.rooms.get(r)).map(|r| r.name.as_str());
                            transfer_row(t, room, now, offset)
                        }) }
                    </tbody>
                </table>
            }
        </section>
    }
}

/// Search over every conversation: `/search?q=words`.
#[component(SearchPage)]
pub fn search_page() -> Html {
    let store = use_store();
    let query = use_location()
        .and_then(|l| l.query::<SearchQuery>().ok())
        .unwrap_or_default();
    let hits = use_state(|| None::<Result<Vec<SearchHit>, String>>);
    {
        let hits = hits.clone();
        use_effect_with(query.q.clone(), move |q| {
            hits.set(None);
            let (q, hits) = (q.clone(), hits.clone());
            yew::platform::spawn_local(async move {
                hits.set(Some(
                    api::search(&q, api::PAGE).await.map_err(|e| e.sentence()),
                ));
            });
        });
    }
    html! {
        <section class="card search">
            <header class="card-head">
                <h2 id="search-title">{ format!("Messages with “{}”", query.q.trim()) }</h2>
            </header>
            { match &*hits {
                None => html! { <p class="empty" id="searching">{ "Searching…" }</p> },
                Some(Err(e)) => html! { <p class="error" role="alert">{ format!("Search failed: {e}.") }</p> },
                Some(Ok(list)) => html! {
                    <SearchResults hits={list.clone()} now={now_ms()} offset_min={local_offset_min()}
                        rooms={store.rooms.clone()} />
                },
            } }
        </section>
    }
}
