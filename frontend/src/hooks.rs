//! The hooks pages and the shell share: the state's context and a clock.

use yew::prelude::*;

use crate::state::State;

/// The shared state: read it, or `dispatch` an [`Action`](crate::state::Action).
pub type Store = UseReducerHandle<State>;

/// The state provided by the root component.
#[hook]
pub fn use_store() -> Store {
    use_context::<Store>().expect("the store context")
}

/// Re-renders every second while `active` (running phases grow on screen).
#[hook]
pub fn use_tick(active: bool) {
    let tick = use_state(|| 0u32);
    use_effect_with(active, move |active| {
        let interval = active.then(|| {
            gloo_timers::callback::Interval::new(1000, move || tick.set(tick.wrapping_add(1)))
        });
        move || drop(interval)
    });
}
