//! A file in a conversation: a transfer the node holds, or one still being
//! uploaded to it.

use std::rc::Rc;

use roundtable_shared::api::{Direction, TransferInfo, TransferState};
use yew::prelude::*;

use crate::state::Upload;
use crate::view;

#[derive(Properties, PartialEq)]
pub struct FileMessageProps {
    pub transfer: Rc<TransferInfo>,
    /// A file we posted into a room: its transfer to each member, by name
    /// (`transfer` is the first, its state summed up for all).
    #[prop_or_default]
    pub recipients: Option<Vec<Rc<TransferInfo>>>,
    /// A room: a received file shows who sent it.
    #[prop_or_default]
    pub show_sender: bool,
    /// Local time offset, minutes.
    #[prop_or_default]
    pub offset_min: i64,
}

/// A transfer as a chat message: name, size, state in words, a progress
/// bar with bytes, rate and time left while it moves, the reason when it
/// fails or waits, and the download link once the bytes can be had.
///
/// A room's post shows one line per member (`.file-recipient[data-peer]
/// [data-state]`) under a bar for them all.
///
/// Hooks for tests: `.file-message[data-seq][data-state][data-direction]`,
/// `.file-progress[data-bytes][data-size]`, `.file-download`.
#[component(FileMessage)]
pub fn file_message(props: &FileMessageProps) -> Html {
    let t = &props.transfer;
    let Some(group) = props.recipients.as_ref().filter(|g| !g.is_empty()) else {
        return single(props);
    };
    let state = view::transfer_state_name(t.state);
    let (held, total, line) = view::group_progress(group);
    html! {
        <div class={classes!("file-message", "room-file", state)} data-seq={t.seq.to_string()}
             data-state={state} data-direction="out">
            { file_head(&t.name, t.size) }
            <progress class="file-progress" max={total.max(1).to_string()} value={held.to_string()}
                      data-bytes={held.to_string()} data-size={total.to_string()}
                      aria-label={line.clone()} />
            <p class="file-progress-text" aria-live="polite">{ line }</p>
            <ul class="file-recipients">
                { for group.iter().map(|r| recipient(r)) }
            </ul>
            <p class="meta file-meta">
                <time>{ view::clock(t.created_at, props.offset_min) }</time>
                { sha_code(t) }
                { download_link(t) }
            </p>
        </div>
    }
}

/// A file's first line: its name (whole in a tooltip) and size.
fn file_head(name: &str, size: u64) -> Html {
    html! {
        <p class="file-head">
            <span class="file-icon" aria-hidden="true"></span>
            <span class="file-name" title={name.to_owned()}>{ name }</span>
            <span class="file-size" data-size={size.to_string()}>{ view::size(size) }</span>
        </p>
    }
}

/// The file's SHA-256, shortened (whole in a tooltip).
fn sha_code(t: &TransferInfo) -> Html {
    html! {
        <code class="file-sha256" title={t.sha256.clone()}>{ view::short_sha(&t.sha256) }</code>
    }
}

/// The download link, once the node serves the bytes.
fn download_link(t: &TransferInfo) -> Html {
    if !view::downloadable(t) {
        return Html::default();
    }
    html! {
        <a class="file-download" href={view::content_url(t.seq)} download={t.name.clone()}>
            { "⤓ download" }
        </a>
    }
}

/// One member's line under a room's post: who, where it stands, and why
/// when it waits or failed.
fn recipient(r: &TransferInfo) -> Html {
    let state = view::transfer_state_name(r.state);
    let trouble = matches!(r.state, TransferState::Failed | TransferState::Waiting);
    html! {
        <li class={classes!("file-recipient", state)} data-peer={r.peer.clone()} data-state={state}>
            <span class="recipient-name">{ &r.peer }</span>
            <span class={classes!("file-state", state)}>
                { view::transfer_state_label(r.state, Direction::Out) }
            </span>
            if r.state == TransferState::Sending {
                <span class="recipient-progress">{ view::progress(r) }</span>
            }
            if let Some(e) = r.error.as_ref().filter(|_| trouble) {
                <span class={classes!("file-error", (r.state == TransferState::Failed).then_some("error"))}>{ e }</span>
            }
        </li>
    }
}

/// A file to or from one peer.
fn single(props: &FileMessageProps) -> Html {
    let t = &props.transfer;
    let state = view::transfer_state_name(t.state);
    let direction = match t.direction {
        Direction::Out => "out",
        Direction::In => "in",
    };
    let trouble = matches!(t.state, TransferState::Failed | TransferState::Waiting);
    let from = t.bare || (props.show_sender && t.direction == Direction::In);
    html! {
        <div class={classes!("file-message", state)} data-seq={t.seq.to_string()}
             data-state={state} data-direction={direction}>
            { file_head(&t.name, t.size) }
            <progress class="file-progress" max={t.size.max(1).to_string()}
                      value={if t.size == 0 { (view::fraction(t) as u64).to_string() } else { t.bytes.min(t.size).to_string() }}
                      data-bytes={t.bytes.to_string()} data-size={t.size.to_string()}
                      aria-label={format!("{} of {}", view::size(t.bytes.min(t.size)), view::size(t.size))} />
            <p class="file-progress-text" aria-live="polite">{ view::progress(t) }</p>
            if let Some(e) = t.error.as_ref().filter(|_| trouble) {
                <p class={classes!("file-error", (t.state == TransferState::Failed).then_some("error"))}
                   role={(t.state == TransferState::Failed).then_some("alert")}>{ e }</p>
            }
            <p class="meta file-meta">
                if from {
                    <span class="file-peer">{ view::transfer_peer(t) }</span>
                }
                <time>{ view::clock(t.created_at, props.offset_min) }</time>
                { sha_code(t) }
                <span class={classes!("file-state", state)} data-state={state}>
                    { view::transfer_state_label(t.state, t.direction) }
                </span>
                { download_link(t) }
            </p>
        </div>
    }
}

#[derive(Properties, PartialEq)]
pub struct UploadMessageProps {
    pub upload: Rc<Upload>,
    /// The user dismisses a failed upload.
    #[prop_or_default]
    pub on_dismiss: Callback<u64>,
}

/// A file on its way to the node ("uploading…"), or refused by it with the
/// node's sentence, kept until dismissed.
///
/// Hooks for tests: `.file-message.upload[data-upload][data-state=uploading|refused]`,
/// `.file-error`, `.upload-dismiss`.
#[component(UploadMessage)]
pub fn upload_message(props: &UploadMessageProps) -> Html {
    let u = &props.upload;
    let state = if u.error.is_some() {
        "refused"
    } else {
        "uploading"
    };
    let onclick = {
        let on_dismiss = props.on_dismiss.clone();
        let id = u.id;
        Callback::from(move |_: MouseEvent| on_dismiss.emit(id))
    };
    html! {
        <div class={classes!("file-message", "upload", state)} data-upload={u.id.to_string()}
             data-state={state} data-direction="out">
            { file_head(&u.name, u.size) }
            if let Some(e) = &u.error {
                <p class="file-error error" role="alert">{ format!("Not sent: {e}") }</p>
                <p class="meta file-meta">
                    <button type="button" class="upload-dismiss" {onclick}
                            aria-label={format!("Dismiss {}", u.name)}>{ "Dismiss" }</button>
                </p>
            } else {
                <progress class="file-progress uploading" aria-label="uploading to this node" />
                <p class="file-progress-text" role="status">{ "uploading…" }</p>
            }
        </div>
    }
}
