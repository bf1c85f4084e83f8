use web_sys::HtmlTextAreaElement;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct ComposerProps {
    /// Who the message goes to (for the label).
    pub peer: AttrValue,
    /// Called with the text to send (never empty).
    pub on_send: Callback<String>,
    /// Why the last send failed, if it did.
    #[prop_or_default]
    pub error: Option<AttrValue>,
    /// The text of the send that failed: put back into the box (unless
    /// something new was typed meanwhile), so nothing typed is lost.
    #[prop_or_default]
    pub unsent: Option<AttrValue>,
    /// Nothing can be sent (a room we left): the box and its button are
    /// disabled.
    #[prop_or_default]
    pub disabled: bool,
}

/// The send box: Enter sends, Shift+Enter starts a new line.
#[component(Composer)]
pub fn composer(props: &ComposerProps) -> Html {
    let text = use_state(String::new);
    {
        let text = text.clone();
        use_effect_with(props.unsent.clone(), move |unsent| {
            if let Some(t) = unsent {
                if text.trim().is_empty() {
                    text.set(t.to_string());
                }
            }
        });
    }
    let send = {
        let text = text.clone();
        let on_send = props.on_send.clone();
        let disabled = props.disabled;
        move || {
            if disabled {
                return;
            }
            let t = (*text).trim_end().to_string();
            if !t.trim().is_empty() {
                on_send.emit(t);
                text.set(String::new());
            }
        }
    };
    let oninput = {
        let text = text.clone();
        Callback::from(move |e: InputEvent| {
            let area: HtmlTextAreaElement = e.target_unchecked_into();
            text.set(area.value());
        })
    };
    let onkeydown = {
        let send = send.clone();
        Callback::from(move |e: KeyboardEvent| {
            if e.key() == "Enter" && !e.shift_key() && !e.is_composing() {
                e.prevent_default();
                send();
            }
        })
    };
    let onsubmit = Callback::from(move |e: SubmitEvent| {
        e.prevent_default();
        send();
    });
    html! {
        <form class="composer" {onsubmit}>
            <label for="composer-text" class="visually-hidden">
                { format!("Message to {}", props.peer) }
            </label>
            <textarea id="composer-text" rows="2" value={(*text).clone()} {oninput} {onkeydown}
                disabled={props.disabled}
                placeholder={format!("Message {} (Enter sends, Shift+Enter for a new line)", props.peer)} />
            <button type="submit" id="send" disabled={props.disabled || text.trim().is_empty()}>{ "Send" }</button>
            if let Some(err) = &props.error {
                <p class="error" id="send-error" role="alert">{ err }</p>
            }
        </form>
    }
}
