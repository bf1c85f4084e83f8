//! Choosing files for a conversation: the attach button (a hidden file
//! input behind a visible button) and the drop zone around the messages.

use std::cell::Cell;

use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{DragEvent, File, FileList, HtmlInputElement};
use yew::prelude::*;

/// The files of a `FileList`, in order.
fn files_of(list: Option<FileList>) -> Vec<File> {
    let Some(list) = list else { return vec![] };
    (0..list.length()).filter_map(|i| list.item(i)).collect()
}

/// Whether a drag carries files (not text or a link dragged from the page).
fn carries_files(e: &DragEvent) -> bool {
    e.data_transfer().is_some_and(|dt| {
        dt.types()
            .iter()
            .any(|t| t.as_string().as_deref() == Some("Files"))
    })
}

#[derive(Properties, PartialEq)]
pub struct AttachFilesProps {
    /// Who the files go to (for the label).
    pub peer: AttrValue,
    /// Called with the chosen files (never empty).
    pub on_files: Callback<Vec<File>>,
}

/// "Attach": opens the browser's file picker (several files at once).
///
/// Hooks for tests: `button.attach-file` (id `attach-file`),
/// `input[type=file].attach-input` (id `attach-input`).
#[component(AttachFiles)]
pub fn attach_files(props: &AttachFilesProps) -> Html {
    let input = use_node_ref();
    let onclick = {
        let input = input.clone();
        Callback::from(move |_: MouseEvent| {
            if let Some(i) = input.cast::<HtmlInputElement>() {
                i.click();
            }
        })
    };
    let onchange = {
        let on_files = props.on_files.clone();
        Callback::from(move |e: Event| {
            let i: HtmlInputElement = e.target_unchecked_into();
            let files = files_of(i.files());
            // Choosing the same file again must fire `change` again.
            i.set_value("");
            if !files.is_empty() {
                on_files.emit(files);
            }
        })
    };
    html! {
        <>
            <button type="button" class="attach-file" id="attach-file" {onclick}
                    title={format!("Send files to {} (or drop them on the conversation)", props.peer)}>
                { "Attach file" }
            </button>
            <input type="file" multiple=true ref={input} {onchange}
                   class="attach-input visually-hidden" id="attach-input" tabindex="-1"
                   aria-label={format!("Files to send to {}", props.peer)} />
        </>
    }
}

#[derive(Properties, PartialEq)]
pub struct FileDropProps {
    /// Who the files go to (for the hint).
    pub peer: AttrValue,
    /// Called with the dropped files (never empty).
    pub on_files: Callback<Vec<File>>,
    /// Takes no files (a room with nobody else in it, or one we left):
    /// a drop is refused like anywhere else on the page.
    #[prop_or_default]
    pub disabled: bool,
    #[prop_or_default]
    pub children: Html,
}

/// While mounted, a file dropped anywhere else on the page does nothing
/// (the browser would otherwise leave the dashboard to show the file).
#[hook]
fn use_no_stray_drops() {
    use_effect_with((), |_| {
        let guard = Closure::<dyn FnMut(web_sys::Event)>::new(|e: web_sys::Event| {
            let Some(e) = e.dyn_ref::<DragEvent>() else {
                return;
            };
            // The drop zone already took it.
            if e.default_prevented() || !carries_files(e) {
                return;
            }
            e.prevent_default();
            if let Some(dt) = e.data_transfer() {
                dt.set_drop_effect("none");
            }
        });
        let window = web_sys::window();
        if let Some(w) = &window {
            for kind in ["dragover", "drop"] {
                let _ = w.add_event_listener_with_callback(kind, guard.as_ref().unchecked_ref());
            }
        }
        move || {
            if let Some(w) = &window {
                for kind in ["dragover", "drop"] {
                    let _ =
                        w.remove_event_listener_with_callback(kind, guard.as_ref().unchecked_ref());
                }
            }
        }
    });
}

/// Wraps the conversation: files dropped on it are sent; while files are
/// dragged over it, it is highlighted (`.file-drop.dragging`).
#[component(FileDrop)]
pub fn file_drop(props: &FileDropProps) -> Html {
    use_no_stray_drops();
    let dragging = use_state(|| false);
    // dragenter/dragleave fire for every child crossed: count them.
    let depth = use_mut_ref(|| Cell::new(0u32));
    let disabled = props.disabled;
    let ondragenter = {
        let dragging = dragging.clone();
        let depth = depth.clone();
        Callback::from(move |e: DragEvent| {
            if !disabled && carries_files(&e) {
                e.prevent_default();
                let d = depth.borrow();
                d.set(d.get() + 1);
                dragging.set(true);
            }
        })
    };
    let ondragover = Callback::from(move |e: DragEvent| {
        if !disabled && carries_files(&e) {
            // Allows the drop.
            e.prevent_default();
            if let Some(dt) = e.data_transfer() {
                dt.set_drop_effect("copy");
            }
        }
    });
    let ondragleave = {
        let dragging = dragging.clone();
        let depth = depth.clone();
        Callback::from(move |_: DragEvent| {
            let d = depth.borrow();
            d.set(d.get().saturating_sub(1));
            if d.get() == 0 {
                dragging.set(false);
            }
        })
    };
    let ondrop = {
        let dragging = dragging.clone();
        let on_files = props.on_files.clone();
        Callback::from(move |e: DragEvent| {
            depth.borrow().set(0);
            dragging.set(false);
            if disabled {
                return;
            }
            let files = files_of(e.data_transfer().and_then(|dt| dt.files()));
            if !files.is_empty() {
                e.prevent_default();
                on_files.emit(files);
            }
        })
    };
    html! {
        <div class={classes!("file-drop", dragging.then_some("dragging"))} id="file-drop"
             {ondragenter} {ondragover} {ondragleave} {ondrop}>
            { props.children.clone() }
            if *dragging {
                <div class="drop-hint" aria-hidden="true">
                    { format!("Drop files to send them to {}", props.peer) }
                </div>
            }
        </div>
    }
}
