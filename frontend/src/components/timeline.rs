use roundtable_shared::training::{Phase, Training};
use yew::prelude::*;

use crate::view;

#[derive(Properties, PartialEq)]
pub struct TimelineProps {
    pub training: Training,
    /// Now, Unix ms (the running phase's bar reaches it).
    pub now: i64,
    /// Draw only the rows of the latest this many rounds (the axis still
    /// covers the whole training); `None`: every round.
    #[prop_or_default]
    pub max_rounds: Option<usize>,
}

const ROW: f64 = 26.0;
const LABEL: f64 = 44.0;
const WIDTH: f64 = 760.0;
const RIGHT: f64 = 8.0;

fn phase_class(p: Phase) -> &'static str {
    match p {
        Phase::Update => "update",
        Phase::Test => "test",
        Phase::Swag => "swag",
    }
}

/// The rounds as rows of bars, one bar per phase, placed at its start and as
/// long as it lasted (inline SVG). The axis covers the whole training (to
/// now while it runs); a running phase is striped and open to now; the
/// last bar is always labelled; the legend lists the phases that occurred.
#[component(Timeline)]
pub fn timeline(props: &TimelineProps) -> Html {
    let t = &props.training;
    let mut bars = view::bars(t, props.now);
    if bars.is_empty() {
        return html! { <p class="empty">{ "No rounds yet." }</p> };
    }
    let mut rounds: Vec<u32> = bars.iter().map(|b| b.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    if let Some(n) = props.max_rounds {
        let from = rounds.len().saturating_sub(n);
        rounds.drain(..from);
        bars.retain(|b| rounds.binary_search(&b.round).is_ok());
    }
    let whole = t.finished_at.unwrap_or(if t.state.is_terminal() {
        t.started_at
    } else {
        props.now
    }) - t.started_at;
    let span = bars
        .iter()
        .map(|b| b.x + b.width)
        .max()
        .unwrap_or(1)
        .max(whole)
        .max(1) as f64;
    let scale = (WIDTH - LABEL - RIGHT) / span;
    let height = ROW * rounds.len() as f64 + 24.0;
    let row_of = |r: u32| rounds.iter().position(|&x| x == r).unwrap_or(0) as f64;
    let last = bars.len() - 1;
    let occurred: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|p| bars.iter().any(|b| b.phase == *p))
        .collect();
    let live = bars.iter().any(|b| b.duration.is_none());
    // Ticks at round durations inside the axis (the end is labelled apart).
    let ticks: Vec<f64> = view::nice_ticks(0.0, span / 1000.0, 4)
        .into_iter()
        .filter(|s| *s > 0.0 && s * 1000.0 * scale < WIDTH - LABEL - RIGHT - 130.0)
        .collect();
    html! {
        <figure class="timeline">
            <svg viewBox={format!("0 0 {WIDTH} {height}")} role="img" id="timeline"
                 aria-label={format!("Timeline of {} rounds", rounds.len())}
                 preserveAspectRatio="xMinYMin meet">
                <defs>
                    <pattern id="timeline-stripes" patternUnits="userSpaceOnUse" width="8" height="8"
                             patternTransform="rotate(45)">
                        <rect width="4" height="8" class="stripe" />
                    </pattern>
                </defs>
                { for rounds.iter().map(|&r| html! {
                    <text x="4" y={(row_of(r) * ROW + 17.0).to_string()} class="axis">
                        { format!("r{r}") }
                    </text>
                }) }
                { for bars.iter().enumerate().map(|(i, b)| {
                    let x = LABEL + b.x as f64 * scale;
                    let w = (b.width as f64 * scale).max(2.0);
                    let y = row_of(b.round) * ROW + 4.0;
                    let label = match b.duration {
                        Some(d) => view::duration(d),
                        None => format!("running {}", view::duration(b.width)),
                    };
                    let text = format!("{} {}", view::phase_word(b.phase), label);
                    // Inside when it fits; the last bar's label goes beside
                    // it when it does not (right if there is room, else left).
                    let inside = w > 7.0 * text.chars().count() as f64 + 8.0;
                    let beside = !inside && i == last;
                    let right_room = WIDTH - RIGHT - (x + w) > 7.0 * text.chars().count() as f64 + 6.0;
                    html! {
                        <g class={classes!("bar", phase_class(b.phase), b.duration.is_none().then_some("live"), (i == last).then_some("last"))}
                           data-round={b.round.to_string()} data-phase={phase_class(b.phase)}>
                            <title>{ format!("round {} {}: {}", b.round, view::phase_word(b.phase), label) }</title>
                            <rect x={x.to_string()} y={y.to_string()} width={w.to_string()}
                                  height={(ROW - 8.0).to_string()} rx="3" />
                            if b.duration.is_none() {
                                <rect class="stripes" x={x.to_string()} y={y.to_string()} width={w.to_string()}
                                      height={(ROW - 8.0).to_string()} rx="3" fill="url(#timeline-stripes)" />
                            }
                            if inside {
                                <text x={(x + 4.0).to_string()} y={(y + 13.0).to_string()}>{ text }</text>
                            } else if beside && right_room {
                                <text class="outside" x={(x + w + 4.0).to_string()} y={(y + 13.0).to_string()}>{ text }</text>
                            } else if beside {
                                <text class="outside end" x={(x - 4.0).to_string()} y={(y + 13.0).to_string()}>{ text }</text>
                            }
                        </g>
                    }
                }) }
                <text x={LABEL.to_string()} y={(height - 6.0).to_string()} class="axis">{ "0" }</text>
                { for ticks.iter().map(|s| html! {
                    <text x={(LABEL + s * 1000.0 * scale).to_string()} y={(height - 6.0).to_string()} class="axis mid">
                        { view::duration((s * 1000.0) as i64) }
                    </text>
                }) }
                <text x={(WIDTH - RIGHT).to_string()} y={(height - 6.0).to_string()} class="axis end">
                    { if t.state.is_terminal() { view::duration(span as i64) } else { format!("now · {}", view::duration(span as i64)) } }
                </text>
            </svg>
            <figcaption class="legend">
                { for occurred.iter().map(|p| html! {
                    <span class={classes!("key", phase_class(*p))}>{ view::phase_word(*p) }</span>
                }) }
                if live {
                    <span class="key live">{ "running (striped)" }</span>
                }
            </figcaption>
        </figure>
    }
}
