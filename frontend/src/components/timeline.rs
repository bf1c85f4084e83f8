use roundtable_shared::training::{Phase, Training};
use yew::prelude::*;

use crate::view;

#[derive(Properties, PartialEq)]
pub struct TimelineProps {
    pub training: Training,
    /// Now, Unix ms (the running phase's bar reaches it).
    pub now: i64,
}

const ROW: f64 = 26.0;
const LABEL: f64 = 44.0;
const WIDTH: f64 = 760.0;

fn phase_class(p: Phase) -> &'static str {
    match p {
        Phase::Update => "update",
        Phase::Test => "test",
        Phase::Swag => "swag",
    }
}

/// The rounds as rows of bars, one bar per phase, placed at its start and as
/// long as it lasted (inline SVG).
#[component(Timeline)]
pub fn timeline(props: &TimelineProps) -> Html {
    let bars = view::bars(&props.training, props.now);
    if bars.is_empty() {
        return html! { <p class="empty">{ "No rounds yet." }</p> };
    }
    let mut rounds: Vec<u32> = bars.iter().map(|b| b.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    let span = bars.iter().map(|b| b.x + b.width).max().unwrap_or(1).max(1) as f64;
    let scale = (WIDTH - LABEL - 8.0) / span;
    let height = ROW * rounds.len() as f64 + 24.0;
    let row_of = |r: u32| rounds.iter().position(|&x| x == r).unwrap_or(0) as f64;
    html! {
        <figure class="timeline">
            <svg viewBox={format!("0 0 {WIDTH} {height}")} role="img" id="timeline"
                 aria-label={format!("Timeline of {} rounds", rounds.len())}
                 preserveAspectRatio="xMinYMin meet">
                { for rounds.iter().map(|&r| html! {
                    <text x="4" y={(row_of(r) * ROW + 17.0).to_string()} class="axis">
                        { format!("r{r}") }
                    </text>
                }) }
                { for bars.iter().map(|b| {
                    let x = LABEL + b.x as f64 * scale;
                    let w = (b.width as f64 * scale).max(2.0);
                    let y = row_of(b.round) * ROW + 4.0;
                    let label = match b.duration {
                        Some(d) => view::duration(d),
                        None => "running".into(),
                    };
                    html! {
                        <g class={classes!("bar", phase_class(b.phase), b.duration.is_none().then_some("live"))}
                           data-round={b.round.to_string()} data-phase={phase_class(b.phase)}>
                            <title>{ format!("round {} {}: {}", b.round, b.phase, label) }</title>
                            <rect x={x.to_string()} y={y.to_string()} width={w.to_string()}
                                  height={(ROW - 8.0).to_string()} rx="3" />
                            if w > 60.0 {
                                <text x={(x + 4.0).to_string()} y={(y + 13.0).to_string()}>
                                    { format!("{} {}", b.phase, label) }
                                </text>
                            }
                        </g>
                    }
                }) }
                <text x={LABEL.to_string()} y={(height - 6.0).to_string()} class="axis">{ "0" }</text>
                <text x={(WIDTH - 8.0).to_string()} y={(height - 6.0).to_string()} class="axis end">
                    { view::duration(span as i64) }
                </text>
            </svg>
            <figcaption class="legend">
                <span class="key update">{ "update" }</span>
                <span class="key test">{ "test" }</span>
                <span class="key swag">{ "SWAG" }</span>
            </figcaption>
        </figure>
    }
}
