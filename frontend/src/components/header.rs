use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct HeaderProps {
    /// The server's version, once known.
    #[prop_or_default]
    pub version: Option<AttrValue>,
}

/// The top bar: product name, and the server version once known.
#[component(Header)]
pub fn header(props: &HeaderProps) -> Html {
    html! {
        <header class="topbar">
            <h1 class="brand">{ "Roundtable" }</h1>
            if let Some(v) = &props.version {
                <span class="pill" title="Server version">{ format!("v{v}") }</span>
            }
        </header>
    }
}
