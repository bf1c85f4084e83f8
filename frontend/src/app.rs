//! The root component: the state (a reducer shared through a context), the
//! WebSocket, the routes and the page layout.

use yew::prelude::*;
use yew_router::prelude::*;

use roundtable_shared::api::Event as ApiEvent;

use crate::api;
use crate::components::Header;
use crate::components::SearchBox;
use crate::hooks::{use_store, Store};
use crate::pages::{
    ChatPage, FilesPage, PeersPage, RoomPage, SearchPage, TrainingPage, TrainingsPage,
};
use crate::route::Route;
use crate::state::{Action, State, WsState};
use crate::ws::{Connection, Handlers};

fn switch(route: Route) -> Html {
    match route {
        Route::Peers => html! { <PeersPage /> },
        Route::Chat { peer } => html! { <ChatPage {peer} /> },
        Route::Rooms => html! { <Redirect<Route> to={Route::Peers} /> },
        Route::Room { id } => html! { <RoomPage {id} /> },
        Route::Trainings => html! { <TrainingsPage /> },
        Route::Training { uuid } => html! { <TrainingPage {uuid} /> },
        Route::Files => html! { <FilesPage /> },
        Route::Search => html! { <SearchPage /> },
        Route::NotFound => html! {
            <section class="card"><h2>{ "Not found" }</h2>
                <p><Link<Route> to={Route::Peers}>{ "Back to the peers" }</Link<Route>></p>
            </section>
        },
    }
}

/// Fetches the node's current state and its file transfers; then the
/// newest page of each conversation that may hold unread messages.
async fn refresh(store: UseReducerDispatcher<State>) {
    // The snapshot's four requests at once: a page waits for the slowest,
    // not for their sum.
    let snapshot =
        futures::future::try_join4(api::me(), api::peers(), api::chats(), api::trainings());
    let Ok((me, peers, chats, trainings)) = snapshot.await else {
        return; // The socket drops too, and the next connection refetches.
    };
    // The render benchmark's mark: the snapshot is in (a training's page
    // shows it with the participants, whichever came last).
    crate::pages::mark("roundtable:snapshot");
    // The node keeps the read marks (for every browser of its user).
    let unread: Vec<String> = chats
        .iter()
        .filter(|c| c.unread > 0)
        .map(|c| c.peer.clone())
        .collect();
    store.dispatch(Action::Snapshot {
        me,
        peers,
        chats,
        trainings,
    });
    // Each training's participants, for the trainings list's counts
    // (merged: never older than the events that crossed the request).
    if let Ok(list) = api::participants().await {
        store.dispatch(Action::ParticipantsSummary(list));
    }
    // The rooms, then the newest page of each that may hold unread
    // messages (events that arrive meanwhile are newer than the list).
    store.dispatch(Action::RoomsRequested);
    let mut unread_rooms = Vec::new();
    if let Ok(rooms) = api::rooms().await {
        unread_rooms = rooms
            .iter()
            .filter(|r| r.unread > 0)
            .map(|r| r.id.clone())
            .collect();
        store.dispatch(Action::Rooms(rooms));
    }
    // Events that arrive while this runs are newer than its answer.
    store.dispatch(Action::TransfersRequested);
    if let Ok(list) = api::files().await {
        store.dispatch(Action::Transfers(list));
    }
    for peer in unread {
        if let Ok(messages) = api::history(&peer, None, api::PAGE).await {
            store.dispatch(Action::Latest {
                peer,
                messages,
                limit: api::PAGE,
            });
        }
    }
    for room in unread_rooms {
        if let Ok(messages) = api::room_history(&room, None, api::PAGE).await {
            store.dispatch(Action::RoomLatest {
                room,
                messages,
                limit: api::PAGE,
            });
        }
    }
}

/// The whole dashboard.
#[component(App)]
pub fn app() -> Html {
    let store = use_reducer(State::default);
    let version = use_state(|| None::<AttrValue>);

    // The health report's version.
    {
        let version = version.clone();
        use_effect_with((), move |_| {
            yew::platform::spawn_local(async move {
                if let Ok(h) = api::health().await {
                    version.set(Some(h.version.into()));
                }
            });
        });
    }
    // The newest state, for what notifications need (our name, the rooms).
    let latest = use_mut_ref(|| store.clone());
    *latest.borrow_mut() = store.clone();
    // One WebSocket for the page's lifetime; each (re)connection refetches.
    {
        let dispatch = store.dispatcher();
        use_effect_with((), move |_| {
            let on_open = {
                let dispatch = dispatch.clone();
                Callback::from(move |()| {
                    yew::platform::spawn_local(refresh(dispatch.clone()));
                })
            };
            let on_event = {
                let dispatch = dispatch.clone();
                // Rooms asked for once because a message came for them
                // before their summary.
                let asked = std::rc::Rc::new(std::cell::RefCell::new(std::collections::HashSet::<
                    String,
                >::new()));
                Callback::from(move |ev: ApiEvent| {
                    crate::notifications::show(&ev, &latest.borrow());
                    if let ApiEvent::Message { message } = &ev {
                        if let Some(id) = &message.room {
                            let unknown = !latest.borrow().rooms.contains_key(id);
                            if unknown && asked.borrow_mut().insert(id.clone()) {
                                let (dispatch, id) = (dispatch.clone(), id.clone());
                                yew::platform::spawn_local(async move {
                                    if let Ok(room) = api::room(&id).await {
                                        dispatch.dispatch(Action::Room(room));
                                    }
                                });
                            }
                        }
                    }
                    dispatch.dispatch(Action::Event(ev))
                })
            };
            let on_state = Callback::from(move |s: WsState| dispatch.dispatch(Action::Ws(s)));
            on_state.emit(WsState::Connecting);
            let conn = Connection::open(Handlers {
                on_open,
                on_event,
                on_state,
            });
            move || drop(conn)
        });
    }
    // The page title carries the unread count: "(3) Roundtable".
    {
        let total = store.unread_total();
        use_effect_with(total, |total| {
            if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
                doc.set_title(&match total {
                    0 => "Roundtable".to_owned(),
                    n => format!("({n}) Roundtable"),
                });
            }
        });
    }

    html! {
        <ContextProvider<Store> context={store}>
            <BrowserRouter>
                <Shell version={(*version).clone()} />
            </BrowserRouter>
        </ContextProvider<Store>>
    }
}

#[derive(Properties, PartialEq)]
struct ShellProps {
    version: Option<AttrValue>,
}

/// Header, navigation and the routed page.
#[component(Shell)]
fn shell(props: &ShellProps) -> Html {
    let store = use_store();
    let route = use_route::<Route>();
    let on_trainings = matches!(route, Some(Route::Trainings | Route::Training { .. }));
    let on_files = matches!(route, Some(Route::Files));
    let on_peers = matches!(
        route,
        Some(Route::Peers | Route::Chat { .. } | Route::Rooms | Route::Room { .. }) | None
    );
    let me = store.me.as_ref();
    html! {
        <>
            <Header
                name={me.map(|m| AttrValue::from(m.name.clone()))}
                chat={me.map(|m| AttrValue::from(m.chat.clone()))}
                directory={me.map(|m| AttrValue::from(m.directory.clone()))}
                ws={store.ws}
                directory_state={store.directory.filter(|_| store.ws == Some(WsState::Connected))}
                version={props.version.clone()}
                fingerprint={me.map(|m| AttrValue::from(m.fingerprint.clone())).filter(|f| !f.is_empty())}
                key_at_directory={me.map(|m| m.key_at_directory)}
                relay_only={me.is_some_and(|m| m.relay_only)}
                require_secure={me.is_some_and(|m| m.require_secure)}
            />
            <nav class="tabs" aria-label="Sections">
                <Link<Route> to={Route::Peers} classes={classes!("tab", on_peers.then_some("active"))}>
                    { "Peers & chats" }
                </Link<Route>>
                <Link<Route> to={Route::Trainings} classes={classes!("tab", on_trainings.then_some("active"))}>
                    { format!("Trainings ({})", store.trainings.len()) }
                </Link<Route>>
                <Link<Route> to={Route::Files} classes={classes!("tab", on_files.then_some("active"))}>
                    <span id="files-tab">{ format!("Files ({})", store.transfers.by_seq.len()) }</span>
                </Link<Route>>
                <NotificationsToggle />
                <SearchBox />
            </nav>
            <main class="content">
                <Switch<Route> render={switch} />
            </main>
        </>
    }
}

/// Opt-in desktop notifications for messages in other conversations.
#[component(NotificationsToggle)]
fn notifications_toggle() -> Html {
    let on = use_state(crate::notifications::enabled);
    let onclick = {
        let on = on.clone();
        Callback::from(move |_| {
            let on = on.clone();
            yew::platform::spawn_local(async move {
                on.set(crate::notifications::set(!*on).await);
            });
        })
    };
    html! {
        <button type="button" class="link notifications-toggle" id="notifications-toggle"
                aria-pressed={on.to_string()} {onclick}
                title="Desktop notifications for messages in conversations you are not looking at">
            { if *on { "Notifications: on" } else { "Notifications: off" } }
        </button>
    }
}
