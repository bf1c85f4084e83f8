//! The root component: page layout and the data it loads.

use roundtable_shared::api::Health;
use yew::prelude::*;

use crate::api::{self, Remote};
use crate::components::{Header, ServerStatus};

/// The whole dashboard.
#[component(App)]
pub fn app() -> Html {
    let health = use_state(|| Remote::<Health>::Loading);
    // Bumped by "Retry" to fetch again.
    let attempt = use_state(|| 0u32);
    {
        let health = health.clone();
        use_effect_with(*attempt, move |_| {
            health.set(Remote::Loading);
            yew::platform::spawn_local(async move {
                health.set(api::health().await.into());
            });
        });
    }
    let on_retry = {
        let attempt = attempt.clone();
        Callback::from(move |()| attempt.set(*attempt + 1))
    };
    let version = match &*health {
        Remote::Ready(h) => Some(AttrValue::from(h.version.clone())),
        _ => None,
    };

    html! {
        <>
            <Header {version} />
            <main class="content">
                <section class="card" aria-labelledby="server-title">
                    <h2 id="server-title">{ "Server" }</h2>
                    <ServerStatus health={(*health).clone()} {on_retry} />
                </section>
            </main>
        </>
    }
}
