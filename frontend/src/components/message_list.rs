use std::collections::HashMap;
use std::rc::Rc;

use roundtable_shared::api::{ChatMessage, Direction, MessageState, TransferInfo};
use wasm_bindgen::JsCast;
use web_sys::{Element, HtmlElement};
use yew::prelude::*;

use super::file_message::{FileMessage, UploadMessage};
use super::now_ms;
use crate::state::{local_day, timeline, with_days, Chat, Item, RowKey, Upload};
use crate::view;

/// Rows rendered above and below the visible ones.
const OVERSCAN: usize = 8;
/// Within this many px of the top, older history is loaded.
const LOAD_MARGIN: f64 = 300.0;
/// Within this many px of the bottom, the view follows new messages.
const FOLLOW_MARGIN: f64 = 40.0;

#[derive(Properties, PartialEq)]
pub struct MessageListProps {
    pub chat: Rc<Chat>,
    /// The peer's file transfers (any order): shown among the messages by time.
    #[prop_or_default]
    pub transfers: Rc<Vec<Rc<TransferInfo>>>,
    /// A room's posted files: each shown number's transfers to the members
    /// (`RoomFiles::recipients`).
    #[prop_or_default]
    pub recipients: Rc<HashMap<i64, Vec<Rc<TransferInfo>>>>,
    /// Files on their way to the node for this peer, or refused by it.
    #[prop_or_default]
    pub uploads: Rc<Vec<Rc<Upload>>>,
    /// The user dismisses a refused upload.
    #[prop_or_default]
    pub on_dismiss_upload: Callback<u64>,
    /// Asks for the page before the first loaded message.
    #[prop_or_default]
    pub on_load_older: Callback<()>,
    /// The newest `seq` the user has had on screen.
    #[prop_or_default]
    pub on_seen: Callback<i64>,
    /// Local time offset, minutes.
    #[prop_or_default]
    pub offset_min: i64,
    /// A room: each received message shows who wrote it.
    #[prop_or_default]
    pub show_sender: bool,
    /// The message to open at (a search hit, by `seq`): once loaded, it is
    /// scrolled into the middle of the view and marked `hit`. Until then
    /// the view does not count as read (the page is loading up to it).
    #[prop_or_default]
    pub hit: Option<i64>,
}

fn state_label(s: MessageState) -> &'static str {
    match s {
        MessageState::Queued => "queued",
        MessageState::Sent => "sent",
        MessageState::Delivered => "delivered",
    }
}

/// Row heights measured in the page, for one width. A row is first placed
/// with a height estimated from its text; once rendered its real height
/// (fonts, emoji, wide glyphs) replaces the estimate, so no text is clipped.
#[derive(Default)]
struct Measured {
    width: i64,
    heights: HashMap<RowKey, f64>,
}

/// The rows of a conversation and where each starts.
struct Layout {
    items: Vec<Item>,
    /// `offsets[i]` is where row i starts; the last entry is the total height.
    offsets: Vec<f64>,
    index: HashMap<RowKey, usize>,
}

/// A conversation, rendering only the rows in view: rows (messages, and
/// file transfers among them by time) are placed absolutely at their
/// offsets, with measured heights where known and estimates elsewhere.
#[component(MessageList)]
pub fn message_list(props: &MessageListProps) -> Html {
    let node = use_node_ref();
    let scroll_top = use_state(|| f64::MAX);
    let viewport = use_state(|| (600.0f64, 640.0f64)); // (height, width)
                                                       // Whether the view follows new messages (the user has not scrolled up).
    let follow = use_mut_ref(|| true);
    // The first row at the last render (to keep the view on prepend).
    // (And where it was then: a day divider may sit above it.)
    let anchor = use_mut_ref(|| None::<(RowKey, f64)>);
    // The hit the view was last scrolled to (each is scrolled to once),
    // and where the list put the view for it since: the scroll events of
    // those moves are not the user's, and do not make the view follow.
    let aimed = use_mut_ref(|| None::<i64>);
    let held = use_mut_ref(|| None::<i32>);

    let measured = use_mut_ref(Measured::default);
    // Bumped when measuring changed a height: lays the rows out again.
    let remeasured = use_state(|| 0u32);

    let width = viewport.1;
    let day_offset = props.offset_min;
    let show_sender = props.show_sender;
    let layout = {
        let measured = measured.clone();
        use_memo(
            (
                props.chat.clone(),
                props.transfers.clone(),
                props.uploads.clone(),
                width as i64,
                *remeasured,
            ),
            move |(chat, transfers, uploads, w, _)| {
                let mut m = measured.borrow_mut();
                if m.width != *w {
                    *m = Measured {
                        width: *w,
                        heights: HashMap::new(),
                    };
                }
                let items = with_days(timeline(chat, transfers, uploads), day_offset);
                let offsets = view::offsets(items.iter().map(|item| {
                    m.heights
                        .get(&item.key())
                        .copied()
                        .unwrap_or_else(|| match item {
                            Item::Message(msg) if msg.event => view::EVENT_ROW_HEIGHT,
                            Item::Message(msg) => {
                                let sender = show_sender && msg.direction == Direction::In;
                                view::row_height(&msg.text, *w as f64)
                                    + if sender {
                                        view::SENDER_LINE_HEIGHT
                                    } else {
                                        0.0
                                    }
                            }
                            Item::Transfer(_) | Item::Upload(_) => view::FILE_ROW_HEIGHT,
                            Item::Day(_) => view::DAY_ROW_HEIGHT,
                        })
                }));
                let index = items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| (it.key(), i))
                    .collect();
                Layout {
                    items,
                    offsets,
                    index,
                }
            },
        )
    };
    let offsets = &layout.offsets;
    let total = *offsets.last().unwrap_or(&0.0);
    // Older rows came in above since the last render: shift the view
    // by their height, in this very render, so the same rows stay on screen.
    // (Dividers change key when older rows of their day come in: anchor
    // on the first real row.)
    let first = layout
        .items
        .iter()
        .find(|i| !matches!(i, Item::Day(_)))
        .map(Item::key);
    let shift = match (*anchor.borrow(), first) {
        (Some((prev, was_at)), Some(first)) if first != prev && !*follow.borrow() => layout
            .index
            .get(&prev)
            .map_or(0.0, |&i| offsets[i] - was_at),
        _ => 0.0,
    };
    // A hit not scrolled to yet: once it is loaded, this render shows the
    // rows around it (the effect below moves the view there).
    let hit_row = props
        .hit
        .and_then(|seq| layout.index.get(&RowKey::Message(seq)).copied());
    let waiting_hit = props.hit.is_some() && *aimed.borrow() != props.hit;
    let aim = hit_row.filter(|_| waiting_hit);
    let top = if let Some(row) = aim {
        view::centered(offsets, row, viewport.0)
    } else if *scroll_top == f64::MAX {
        (total - viewport.0).max(0.0)
    } else {
        *scroll_top + shift
    };
    let range = view::window(offsets, top, viewport.0, OVERSCAN);

    let onscroll = {
        let scroll_top = scroll_top.clone();
        let follow = follow.clone();
        let on_load_older = props.on_load_older.clone();
        let has_more = props.chat.has_more;
        let held = held.clone();
        Callback::from(move |e: Event| {
            let el: Element = e.target_unchecked_into();
            let top = el.scroll_top() as f64;
            let at_bottom =
                top + el.client_height() as f64 >= el.scroll_height() as f64 - FOLLOW_MARGIN;
            // Where the list put the view for a hit: it stays there (even
            // at the bottom) until the user scrolls.
            let ours = held
                .borrow()
                .is_some_and(|h| (h - el.scroll_top()).abs() <= 1);
            if !ours {
                *held.borrow_mut() = None;
                *follow.borrow_mut() = at_bottom;
            }
            scroll_top.set(top);
            if top < LOAD_MARGIN && has_more {
                on_load_older.emit(());
            }
        })
    };

    // After each render: measure, keep position when history was prepended,
    // follow new messages, report what was seen.
    {
        let node = node.clone();
        let viewport = viewport.clone();
        let follow = follow.clone();
        let anchor = anchor.clone();
        let layout = layout.clone();
        let chat = props.chat.clone();
        let on_seen = props.on_seen.clone();
        let on_load_older = props.on_load_older.clone();
        let scroll_top = scroll_top.clone();
        let measured = measured.clone();
        let remeasured = remeasured.clone();
        let (aimed, held) = (aimed.clone(), held.clone());
        let hit = props.hit;
        use_effect(move || {
            let Some(el) = node.cast::<Element>() else {
                return;
            };
            let size = (el.client_height() as f64, el.client_width() as f64);
            let resized =
                size.0 > 0.0 && (size.0 - viewport.0).abs() + (size.1 - viewport.1).abs() > 1.0;
            if resized {
                viewport.set(size);
            }
            *anchor.borrow_mut() = first.map(|k| {
                let at = layout.index.get(&k).map_or(0.0, |&i| layout.offsets[i]);
                (k, at)
            });
            // Real heights of the rows on screen; rows above the view that
            // changed move what is shown, so the view moves with them.
            let mut above = 0.0;
            let mut changed = false;
            if let Ok(rows) = el.query_selector_all("[data-row]") {
                let offsets = &layout.offsets;
                let mut m = measured.borrow_mut();
                for i in 0..rows.length() {
                    let Some(row) = rows.item(i).and_then(|n| n.dyn_into::<Element>().ok()) else {
                        continue;
                    };
                    let Some(key) = row
                        .get_attribute("data-row")
                        .and_then(|s| s.parse::<RowKey>().ok())
                    else {
                        continue;
                    };
                    let Some(bubble) = row
                        .first_element_child()
                        .and_then(|b| b.dyn_into::<HtmlElement>().ok())
                    else {
                        continue;
                    };
                    // The bubble sits at the row's top padding; the bottom
                    // padding is the same.
                    let natural = (2 * bubble.offset_top() + bubble.offset_height()) as f64;
                    let Some(&idx) = layout.index.get(&key) else {
                        continue;
                    };
                    let placed = offsets[idx + 1] - offsets[idx];
                    if natural > 0.0 && (natural - placed).abs() > 1.0 {
                        m.heights.insert(key, natural);
                        changed = true;
                        if offsets[idx] < top {
                            above += natural - placed;
                        }
                    }
                }
            }
            if changed {
                remeasured.set(*remeasured + 1);
            }
            if aim.is_some() {
                // At the hit, with the rows above it that changed height
                // counted. Once the view's real size is known (else the next
                // render centres it again), the hit is done: scrolling is the
                // user's, and new messages do not move the view.
                el.set_scroll_top((top + above) as i32);
                let at = el.scroll_top();
                scroll_top.set(at as f64);
                *follow.borrow_mut() = false;
                *held.borrow_mut() = Some(at);
                if !resized {
                    *aimed.borrow_mut() = hit;
                }
            } else if waiting_hit && *follow.borrow() {
                // Loading up to the hit: at the bottom meanwhile, not read.
                let total = *layout.offsets.last().unwrap_or(&0.0);
                el.set_scroll_top(total as i32);
            } else if *follow.borrow() {
                let total = *layout.offsets.last().unwrap_or(&0.0);
                el.set_scroll_top(total as i32);
                if let Some(last) = chat.messages.last() {
                    on_seen.emit(last.seq);
                }
            } else if shift > 0.0 || above != 0.0 {
                el.set_scroll_top((top + above) as i32);
                scroll_top.set(top + above);
                if held.borrow().is_some() {
                    *held.borrow_mut() = Some(el.scroll_top());
                }
            }
            // A short history that does not fill the view: load more right away.
            if chat.has_more && (el.scroll_height() <= el.client_height() + 1) {
                on_load_older.emit(());
            }
        });
    }

    let offset_min = props.offset_min;
    let hit = props.hit;
    let now = now_ms();
    let today = local_day(now, offset_min);
    let rows = range.map(|i| {
        let h = offsets[i + 1] - offsets[i];
        let style = format!("top:{}px;height:{}px", offsets[i], h);
        let item = &layout.items[i];
        let key = item.key().to_string();
        match item {
            Item::Message(m) if m.event => {
                event_row(m, key, style, offset_min, now, hit == Some(m.seq))
            }
            Item::Message(m) => {
                let is_hit = hit == Some(m.seq);
                message_row(m, key, style, offset_min, now, show_sender, is_hit)
            }
            Item::Day(d) => html! {
                <div key={key.clone()} class="day-divider" data-row={key} {style} role="separator">
                    <span>{ view::day_label(*d, today) }</span>
                </div>
            },
            Item::Transfer(t) => {
                let out = t.direction == Direction::Out;
                html! {
                    <div key={key.clone()} class={classes!("file-item", if out { "out" } else { "in" })}
                         data-row={key} {style} role="listitem">
                        <FileMessage transfer={t.clone()} {offset_min}
                            recipients={props.recipients.get(&t.seq).cloned()}
                            show_sender={props.show_sender} />
                    </div>
                }
            }
            Item::Upload(u) => html! {
                <div key={key.clone()} class="file-item out" data-row={key} {style} role="listitem">
                    <UploadMessage upload={u.clone()} on_dismiss={props.on_dismiss_upload.clone()} />
                </div>
            },
        }
    });

    html! {
        <div class="messages" ref={node} {onscroll} tabindex="0" role="list" aria-label="Messages"
             id="messages" data-count={props.chat.messages.len().to_string()}>
            if props.chat.has_more {
                <p class="older">{ "loading older messages…" }</p>
            }
            <div class="spacer" style={format!("height:{total}px")}>
                { for rows }
            </div>
        </div>
    }
}

/// A room's line about itself ("alice added carol"): centered and muted,
/// not a bubble.
fn event_row(
    m: &ChatMessage,
    key: String,
    style: String,
    offset_min: i64,
    now: i64,
    hit: bool,
) -> Html {
    html! {
        <div key={key.clone()} class={classes!("room-event", hit.then_some("hit"))}
             data-seq={m.seq.to_string()} data-row={key} {style} role="listitem"
             aria-current={hit.then_some("true")}>
            <p class="event-text">
                <span class="event-words">{ &m.text }</span>
                <time title={view::date_time(m.at, offset_min)}>{ view::when(m.at, now, offset_min) }</time>
            </p>
        </div>
    }
}

/// One chat message's row (in a room, with `show_sender`, a received one
/// says who wrote it; the search hit the conversation opened at is `hit`).
fn message_row(
    m: &ChatMessage,
    key: String,
    style: String,
    offset_min: i64,
    now: i64,
    show_sender: bool,
    hit: bool,
) -> Html {
    let out = m.direction == Direction::Out;
    html! {
        <div key={key.clone()}
             class={classes!("msg", if out { "out" } else { "in" }, hit.then_some("hit"))}
             data-seq={m.seq.to_string()} data-row={key} {style} role="listitem"
             aria-current={hit.then_some("true")}>
            <div class="bubble">
                if show_sender && !out {
                    <p class="sender" data-sender={m.peer.clone()}>{ &m.peer }</p>
                }
                <p class="text">{ &m.text }</p>
                <p class="meta">
                    <time title={view::date_time(m.at, offset_min)}>{ view::when(m.at, now, offset_min) }</time>
                    if !out && !m.verified {
                        <span class="unverified" data-verified="false"
                              title={format!("Sent over a plain connection: \"{}\" is only what the sender claimed to be", m.peer)}>
                            { "⚠ unverified sender" }
                        </span>
                    }
                    if out {
                        <span class={classes!("state", state_label(m.state))}
                              data-state={state_label(m.state)}>
                            { match m.state {
                                MessageState::Queued => "◷ queued",
                                MessageState::Sent => "✓ sent",
                                MessageState::Delivered => "✓✓ delivered",
                            } }
                        </span>
                    }
                </p>
            </div>
        </div>
    }
}
