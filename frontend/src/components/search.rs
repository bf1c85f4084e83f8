//! Search: the box in the tab bar and the list of hits. The search page
//! (`pages.rs`) fetches; these only render.

use std::collections::BTreeMap;
use std::rc::Rc;

use roundtable_shared::api::{Direction, RoomSummary, SearchHit, SNIPPET_END, SNIPPET_START};
use serde::{Deserialize, Serialize};
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

use crate::route::{At, Route};
use crate::view;

/// The search page's query string: `/search?q=words`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    pub q: String,
}

/// The search box: Enter opens the search page for what was typed.
#[component(SearchBox)]
pub fn search_box() -> Html {
    let navigator = use_navigator();
    let input = use_node_ref();
    let onsubmit = {
        let input = input.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(q) = input.cast::<HtmlInputElement>().map(|i| i.value()) else {
                return;
            };
            if q.trim().is_empty() {
                return;
            }
            if let Some(nav) = &navigator {
                let _ = nav.push_with_query(&Route::Search, &SearchQuery { q });
            }
        })
    };
    html! {
        <form class="search-box" id="search-form" role="search" {onsubmit}>
            <label for="search-input" class="visually-hidden">{ "Search all conversations" }</label>
            <input id="search-input" type="search" ref={input} placeholder="Search messages" />
        </form>
    }
}

/// `snippet` with its matches (between [`SNIPPET_START`] and
/// [`SNIPPET_END`]) in `<mark>`.
pub fn marked(snippet: &str) -> Html {
    let mut parts = Vec::new();
    let mut rest = snippet;
    while let Some(start) = rest.find(SNIPPET_START) {
        parts.push(html! { { rest[..start].to_owned() } });
        let after = &rest[start + SNIPPET_START.len_utf8()..];
        let (hit, tail) = match after.find(SNIPPET_END) {
            Some(end) => (&after[..end], &after[end + SNIPPET_END.len_utf8()..]),
            None => (after, ""),
        };
        parts.push(html! { <mark>{ hit.to_owned() }</mark> });
        rest = tail;
    }
    parts.push(html! { { rest.to_owned() } });
    parts.into_iter().collect()
}

#[derive(Properties, PartialEq)]
pub struct SearchResultsProps {
    pub hits: Vec<SearchHit>,
    /// Now, Unix ms, and the local offset, for the times.
    pub now: i64,
    pub offset_min: i64,
    /// The rooms known, by id: a hit in a room says the room's name.
    #[prop_or_default]
    pub rooms: Rc<BTreeMap<String, Rc<RoomSummary>>>,
}

/// The hits, newest first, each with its conversation, time and context,
/// linking to the conversation opened at the message (`?at=SEQ`).
#[component(SearchResults)]
pub fn search_results(props: &SearchResultsProps) -> Html {
    if props.hits.is_empty() {
        return html! { <p class="empty" id="no-hits">{ "No message matches." }</p> };
    }
    html! {
        <ul class="search-hits" id="search-hits">
            { for props.hits.iter().map(|h| {
                let m = &h.message;
                let out = m.direction == Direction::Out;
                let (who, to) = match &m.room {
                    Some(id) => {
                        let room = props.rooms.get(id).map_or("a room", |r| r.name.as_str());
                        let who = if out { format!("you in {room}") } else { format!("{} in {room}", m.peer) };
                        (who, Route::Room { id: id.clone() })
                    }
                    None if out => (format!("you to {}", m.peer), Route::Chat { peer: m.peer.clone() }),
                    None => (m.peer.clone(), Route::Chat { peer: m.peer.clone() }),
                };
                html! {
                    <li key={m.seq} class="search-hit" data-peer={m.peer.clone()} data-seq={m.seq.to_string()}
                        data-room={m.room.clone()}>
                        <Link<Route, At> {to} query={Some(At { at: Some(m.seq) })} classes="hit-link">
                            <span class="hit-who">{ who }</span>
                            <time class="hit-when">{ view::when(m.at, props.now, props.offset_min) }</time>
                            <span class="hit-text">{ marked(&h.snippet) }</span>
                        </Link<Route, At>>
                    </li>
                }
            }) }
        </ul>
    }
}
