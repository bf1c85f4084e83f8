//! A training's name on its page, with an inline form to set it.

use web_sys::HtmlInputElement;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct TrainingNameProps {
    /// What is shown: the name set, or the default.
    pub shown: AttrValue,
    /// The name a person set, if any (the form starts from it).
    pub name: Option<AttrValue>,
    /// The training's full UUID, shown beneath.
    pub uuid: AttrValue,
    /// The user saved `name` (empty: back to the default).
    pub on_rename: Callback<String>,
    /// The request is out.
    #[prop_or_default]
    pub busy: bool,
    /// Why the node refused the last name (its sentence).
    #[prop_or_default]
    pub error: Option<AttrValue>,
    /// The form opened (a previous refusal no longer applies).
    #[prop_or_default]
    pub on_open: Callback<()>,
}

/// The heading `#training-title` with a "Rename" button; the form sends on
/// Enter or Save, Escape or Cancel closes it.
#[component(TrainingName)]
pub fn training_name(props: &TrainingNameProps) -> Html {
    let editing = use_state(|| false);
    let input = use_node_ref();
    // Close the form once a save went through (not busy, no error).
    {
        let editing = editing.clone();
        let done = !props.busy && props.error.is_none();
        use_effect_with((props.name.clone(), done), move |(_, done)| {
            if *done {
                editing.set(false);
            }
        });
    }
    let open = {
        let editing = editing.clone();
        let on_open = props.on_open.clone();
        Callback::from(move |_: MouseEvent| {
            on_open.emit(());
            editing.set(true);
        })
    };
    let close = {
        let editing = editing.clone();
        Callback::from(move |_: MouseEvent| editing.set(false))
    };
    let onsubmit = {
        let input = input.clone();
        let on_rename = props.on_rename.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if let Some(el) = input.cast::<HtmlInputElement>() {
                on_rename.emit(el.value().trim().to_owned());
            }
        })
    };
    let onkeydown = {
        let editing = editing.clone();
        Callback::from(move |e: KeyboardEvent| {
            if e.key() == "Escape" {
                editing.set(false);
            }
        })
    };
    let reset = {
        let on_rename = props.on_rename.clone();
        Callback::from(move |_: MouseEvent| on_rename.emit(String::new()))
    };
    html! {
        <div class="training-name">
            if *editing {
                <form class="rename-form" id="rename-form" {onsubmit}>
                    <label>
                        <span class="visually-hidden">{ "Training name" }</span>
                        <input id="training-name-input" ref={input} type="text" maxlength="80"
                               placeholder={props.shown.clone()} autofocus=true {onkeydown}
                               value={props.name.clone().unwrap_or_default()} disabled={props.busy} />
                    </label>
                    <button type="submit" id="rename-save" disabled={props.busy}>{ "Save" }</button>
                    if props.name.is_some() {
                        <button type="button" id="rename-reset" onclick={reset} disabled={props.busy}
                                title="Show the first characters of its UUID and its start time again">
                            { "Use default" }
                        </button>
                    }
                    <button type="button" class="link" onclick={close}>{ "Cancel" }</button>
                    if let Some(e) = &props.error {
                        <p class="error" id="rename-error" role="alert">{ e }</p>
                    }
                </form>
            } else {
                <h2 id="training-title">
                    { &props.shown }
                    <code class="training-uuid" id="training-uuid">{ &props.uuid }</code>
                </h2>
                <button type="button" class="link rename" id="rename" onclick={open}
                        title="Give this training a name">{ "Rename" }</button>
            }
        </div>
    }
}
