//! The collaboration's view of a training: one lane per participant (this
//! node first) on a common time axis, each phase a bar, with the lane's
//! round, phase, run and last metrics in words, and its stand-outs
//! (straggler, failed, offline) as badges.

use std::rc::Rc;

use roundtable_shared::progress::PhaseReport;
use roundtable_shared::training::RunStatus;
use yew::prelude::*;

use crate::collab::{lane_bars, LaneSummary};
use crate::view;

/// The track's drawing width (the SVG stretches to the lane's width).
const TRACK: f64 = 1000.0;

#[derive(Properties, PartialEq)]
pub struct LanesProps {
    /// In lane order, with their stand-outs ([`crate::collab::lane_summaries`]).
    pub lanes: Rc<Vec<LaneSummary>>,
    /// The common axis: Unix ms from, to ([`crate::collab::lanes_span`]).
    pub span: (i64, i64),
    /// Now, Unix ms (running phases reach it).
    pub now: i64,
    pub offset_min: i64,
}

/// Tick spacing for a span of `ms`: at most about six ticks.
fn tick_step(ms: i64) -> i64 {
    const STEPS: [i64; 17] = [
        1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
        1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    ];
    STEPS
        .into_iter()
        .find(|s| ms / s <= 6)
        .unwrap_or(86_400_000)
}

/// Its run in words: `run running for 12.0 s`, `run succeeded in 4.2 s`,
/// `run failed (exit 2) after 1.0 s`; `until` bounds a running run.
fn run_words(p: &PhaseReport, until: i64, offline: bool) -> String {
    let Some(run) = &p.run else {
        return "no local run".into();
    };
    let took = |end: i64| view::duration(end - run.started_at);
    match run.status {
        RunStatus::Running if offline => {
            format!("run was running ({} when last heard)", took(until))
        }
        RunStatus::Running => format!("run running for {}", took(until)),
        RunStatus::Succeeded => format!("run succeeded in {}", took(run.ended_at.unwrap_or(until))),
        RunStatus::Failed => format!(
            "run failed{} after {}",
            run.exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default(),
            took(run.ended_at.unwrap_or(until))
        ),
        RunStatus::Skipped => "run skipped (a newer phase came first)".into(),
    }
}

/// `loss 0.4123 · accuracy 0.8712 (round 3 update)`.
fn metrics_words(p: &PhaseReport) -> String {
    let values: Vec<String> = p
        .metrics
        .iter()
        .map(|m| format!("{} {}", m.name, view::metric_value(m.value)))
        .collect();
    format!(
        "{} (round {} {})",
        values.join(" · "),
        p.round,
        view::phase_word(p.phase)
    )
}

fn lane(l: &LaneSummary, index: usize, props: &LanesProps) -> Html {
    let p = &l.participant;
    let (t0, t1) = props.span;
    let scale = TRACK / (t1 - t0).max(1) as f64;
    let until = l.offline.unwrap_or(props.now);
    let bars = lane_bars(p, until);
    let stripes = format!("lane-stripes-{index}");
    let where_ = if p.lane.state.is_terminal() {
        view::state_words(p.lane.state).to_owned()
    } else {
        match &l.latest {
            Some(ph) => format!("Round {} · {}", ph.round, view::phase_word(ph.phase)),
            None => "Waiting for the first round".into(),
        }
    };
    html! {
        <div key={p.name.clone()}
             class={classes!("lane", p.local.then_some("local"), l.offline.map(|_| "offline"),
                             l.straggler.then_some("straggler"), l.failed.then_some("failed"))}
             data-participant={p.name.clone()}
             data-round={l.latest.as_ref().map(|ph| ph.round.to_string())}
             data-phase={l.latest.as_ref().map(|ph| ph.phase.as_str())}
             data-state={p.lane.state.as_str()}>
            <div class="lane-head">
                <span class="lane-name">
                    <span class="swatch" style={format!("background:{}", view::participant_colour(&p.name))}></span>
                    { &p.name }
                    if p.local {
                        <span class="you">{ " (you)" }</span>
                    }
                </span>
                if l.straggler {
                    <span class="badge badge-straggler" title="Still in a phase the other participants have finished">{ "straggler" }</span>
                }
                if l.failed {
                    <span class="badge badge-failed" title="The local run of its latest phase failed">{ "failed" }</span>
                }
                if let Some(at) = l.offline {
                    <span class="badge badge-offline" title="Its node is offline or has not been heard from for long; its last known state is shown">
                        { format!("offline · last heard {}", view::short_when(at, props.now, props.offset_min)) }
                    </span>
                }
                <span class="lane-where">{ where_ }</span>
            </div>
            <svg class="lane-track" viewBox={format!("0 0 {TRACK} 18")} preserveAspectRatio="none"
                 role="img" aria-label={format!("{}'s phases", p.name)}>
                <defs>
                    <pattern id={stripes.clone()} patternUnits="userSpaceOnUse" width="8" height="8"
                             patternTransform="rotate(45)">
                        <rect width="4" height="8" class="stripe" />
                    </pattern>
                </defs>
                { for bars.iter().map(|b| {
                    let x = (b.start - t0) as f64 * scale;
                    let w = ((b.end - b.start) as f64 * scale).max(2.0);
                    let live = b.live && l.offline.is_none();
                    let words = if b.live {
                        if live { format!("running {}", view::duration(b.end - b.start)) } else { "state unknown since last heard".into() }
                    } else {
                        view::duration(b.end - b.start)
                    };
                    html! {
                        <g class={classes!("lane-bar", b.phase.as_str(), live.then_some("live"),
                                           (b.live && !live).then_some("unknown"),
                                           (b.run == Some(RunStatus::Failed)).then_some("failed"))}
                           data-round={b.round.to_string()} data-phase={b.phase.as_str()}>
                            <title>{ format!("round {} {}: {}", b.round, view::phase_word(b.phase), words) }</title>
                            <rect x={format!("{x:.1}")} y="2" width={format!("{w:.1}")} height="14" />
                            if live {
                                <rect class="stripes" x={format!("{x:.1}")} y="2" width={format!("{w:.1}")} height="14"
                                      fill={format!("url(#{stripes})")} />
                            }
                        </g>
                    }
                }) }
            </svg>
            <p class="lane-summary">
                if let Some(ph) = &l.latest {
                    <span class={classes!("lane-run", ph.run.as_ref().map(|r| r.status.as_str()))}>
                        { run_words(ph, until, l.offline.is_some()) }
                    </span>
                }
                if let Some(m) = &l.last_metrics {
                    <span class="lane-metrics">{ metrics_words(m) }</span>
                }
            </p>
        </div>
    }
}

/// One lane per participant on a common time axis.
#[component(Lanes)]
pub fn lanes(props: &LanesProps) -> Html {
    let (t0, t1) = props.span;
    let step = tick_step(t1 - t0);
    let first = (t0 + step - 1).div_euclid(step) * step;
    let ticks: Vec<i64> = (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= t1)
        .take(12)
        .collect();
    let label = |t: i64| {
        if step < 60_000 {
            view::clock(t, props.offset_min)
        } else {
            view::short_when(t, props.now, props.offset_min)
        }
    };
    let running = props
        .lanes
        .iter()
        .any(|l| !l.participant.lane.state.is_terminal());
    html! {
        <div class="lanes" id="lanes">
            { for props.lanes.iter().enumerate().map(|(i, l)| lane(l, i, props)) }
            <div class="lanes-axis" aria-hidden="true">
                { for ticks.iter().map(|t| html! {
                    <span class="tick" style={format!("left:{:.2}%", (t - t0) as f64 * 100.0 / (t1 - t0).max(1) as f64)}>
                        { label(*t) }
                    </span>
                }) }
                if running {
                    <span class="tick now">{ "now" }</span>
                }
            </div>
        </div>
    }
}
