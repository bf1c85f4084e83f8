//! The collaboration's view of a training: one lane per participant (this
//! node first) on a common time axis, each phase a bar, with the lane's
//! round, phase, run and last metrics in words, and its stand-outs
//! (straggler, failed, offline) as badges.

use std::rc::Rc;

use roundtable_shared::progress::PhaseReport;
use roundtable_shared::training::{Phase, RunStatus};
use yew::prelude::*;

use crate::collab::{lane_bars, LaneBar, LaneSummary};
use crate::view;

/// The width a track is drawn for, px (it stretches to the lane's width):
/// sets the stripes' spacing.
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
        RunStatus::Running if offline && until > run.started_at => {
            format!("run was running ({} when last heard)", took(until))
        }
        RunStatus::Running if offline => "run was running when last heard".into(),
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

#[derive(Properties, PartialEq)]
pub struct LaneRowProps {
    pub lane: LaneSummary,
    /// Its place in the list (unique ids in the page).
    pub index: usize,
    pub span: (i64, i64),
    pub now: i64,
    pub offset_min: i64,
}

/// The path of `bars` as rectangles, in the track's units (ms since the
/// axis's start), open bars reaching `until`: one element for any number
/// of phases.
///
/// Integers go in through `itoa`, not `format!`: a lane has hundreds of
/// bars.
fn bars_path<'a>(bars: impl Iterator<Item = &'a LaneBar>, t0: i64, until: i64) -> (String, usize) {
    let mut d = String::new();
    let mut n = 0;
    let mut num = itoa::Buffer::new();
    for b in bars {
        let w = b.end(until) - b.start;
        d.push('M');
        d.push_str(num.format(b.start - t0));
        d.push_str(" 2h");
        d.push_str(num.format(w));
        d.push_str("v14h-");
        d.push_str(num.format(w));
        d.push('Z');
        n += 1;
    }
    (d, n)
}

/// The finished phases' paths of a lane: one per phase kind that occurred,
/// then the failed runs' (phase `None`), as (phase, d, count)
/// ([`bars_path`]).
#[inline(never)] // a loop over every phase: see `crate::collab`
fn finished_paths(bars: &[LaneBar], t0: i64, until: i64) -> Vec<(Option<Phase>, String, usize)> {
    let mut out: Vec<_> = Phase::ALL
        .into_iter()
        .map(|phase| {
            let done = bars
                .iter()
                .filter(move |b| !b.live && b.phase == phase && b.run != Some(RunStatus::Failed));
            let (d, n) = bars_path(done, t0, until);
            (Some(phase), d, n)
        })
        .collect();
    let failed = bars
        .iter()
        .filter(|b| !b.live && b.run == Some(RunStatus::Failed));
    let (d, n) = bars_path(failed, t0, until);
    out.push((None, d, n));
    out.retain(|(.., n)| *n > 0);
    out
}

/// Whether a finished bar of `bars` has no end yet (it then reaches now).
#[inline(never)] // a loop over every phase: see `crate::collab`
fn any_open(bars: &[LaneBar]) -> bool {
    bars.iter().any(|b| !b.live && b.end.is_none())
}

/// The bars of `bars` still running (drawn one by one: they grow).
#[inline(never)] // a loop over every phase: see `crate::collab`
fn live_bars(bars: &[LaneBar]) -> Vec<&LaneBar> {
    bars.iter().filter(|b| b.live).collect()
}

/// One participant's lane: its name and badges, its phases as bars on the
/// common axis (finished ones merged into one path per phase, so a lane of
/// hundreds of phases is a handful of elements), and its state in words.
/// The phase under the pointer is named in the summary line.
#[component(LaneRow)]
pub fn lane_row(props: &LaneRowProps) -> Html {
    let l = &props.lane;
    let p = &l.participant;
    let (t0, t1) = props.span;
    let until = l.offline.unwrap_or(props.now);
    // Worked out once per change of the lane, not every second while the
    // training runs (as time passes, only the live bar and the axis move).
    let bars = use_memo(p.clone(), |p| lane_bars(p));
    let paths = {
        let bars = bars.clone();
        // A finished bar whose end is not known yet reaches now.
        let open = any_open(&bars).then_some(until);
        use_memo(
            (Rc::as_ptr(&bars) as usize, t0, open),
            move |&(_, t0, open)| finished_paths(&bars, t0, open.unwrap_or(until)),
        )
    };
    let hover = use_state_eq(|| None::<usize>);
    let svg = use_node_ref();
    let on_move = {
        let hover = hover.clone();
        let svg = svg.clone();
        let bars = bars.clone();
        Callback::from(move |e: MouseEvent| {
            let Some(el) = svg.cast::<web_sys::Element>() else {
                return;
            };
            let r = el.get_bounding_client_rect();
            if r.width() <= 0.0 {
                return;
            }
            let at =
                t0 + ((f64::from(e.client_x()) - r.left()) / r.width() * (t1 - t0) as f64) as i64;
            let i = bars.partition_point(|b| b.start <= at);
            hover.set(i.checked_sub(1).filter(|&i| bars[i].end(until) >= at));
        })
    };
    let on_leave = {
        let hover = hover.clone();
        Callback::from(move |_: MouseEvent| hover.set(None))
    };
    // Stripes about 8 px wide on a 1000 px track.
    let stripe_w = ((t1 - t0) as f64 / TRACK * 8.0).max(2.0);
    let stripes = format!("lane-stripes-{}", props.index);
    let live_ok = l.offline.is_none();
    let where_ = if p.lane.state.is_terminal() {
        view::state_words(p.lane.state).to_owned()
    } else {
        match &l.latest {
            Some(ph) => format!("Round {} · {}", ph.round, view::phase_word(ph.phase)),
            None => "Waiting for the first round".into(),
        }
    };
    let bar_words = |b: &LaneBar| {
        let took = b.end(until) - b.start;
        let how = if b.live && live_ok {
            format!("running {}", view::duration(took))
        } else if b.live {
            "state unknown since last heard".into()
        } else {
            view::duration(took)
        };
        let run = b
            .run
            .map(|r| format!(", run {}", view::run_words(r)))
            .unwrap_or_default();
        format!(
            "round {} {}: {how}{run}",
            b.round,
            view::phase_word(b.phase)
        )
    };
    html! {
        <div class={classes!("lane", p.local.then_some("local"), l.offline.map(|_| "offline"),
                             l.straggler.then_some("straggler"), l.failed.then_some("failed"))}
             data-participant={p.name.clone()}
             data-round={l.latest.as_ref().map(|ph| ph.round.to_string())}
             data-phase={l.latest.as_ref().map(|ph| ph.phase.as_str())}
             data-state={p.lane.state.as_str()}>
            <div class="lane-head">
                <span class="lane-name">
                    <span class="swatch" style={format!("background:{}", l.colour)}></span>
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
            // In ms since the axis's start: as time passes only the viewBox
            // and the running bar change.
            <svg class="lane-track" viewBox={format!("0 0 {} 18", (t1 - t0).max(1))} preserveAspectRatio="none"
                 role="img" aria-label={format!("{}'s phases", p.name)}
                 ref={svg} onmousemove={on_move} onmouseleave={on_leave}>
                <defs>
                    <pattern id={stripes.clone()} patternUnits="userSpaceOnUse" height="18"
                             width={format!("{stripe_w:.0}")}>
                        <rect width={format!("{:.0}", stripe_w / 2.0)} height="18" class="stripe" />
                    </pattern>
                </defs>
                { for paths.iter().map(|(phase, d, n)| html! {
                    <path class={classes!("lane-bars", phase.map_or("failed", Phase::as_str))}
                          data-phase={phase.map(Phase::as_str)}
                          data-count={n.to_string()} d={d.clone()} />
                }) }
                { for live_bars(&bars).into_iter().map(|b| {
                    let x = (b.start - t0).to_string();
                    let w = (b.end(until) - b.start).to_string();
                    html! {
                        <>
                            <rect class={classes!("lane-bar", b.phase.as_str(), if live_ok { "live" } else { "unknown" })}
                                  data-round={b.round.to_string()} data-phase={b.phase.as_str()}
                                  x={x.clone()} y="2" width={w.clone()} height="14">
                                <title>{ bar_words(b) }</title>
                            </rect>
                            if live_ok {
                                <rect class="stripes" {x} y="2" width={w} height="14"
                                      fill={format!("url(#{stripes})")} />
                            }
                        </>
                    }
                }) }
            </svg>
            <p class="lane-summary">
                if let Some(b) = hover.and_then(|i| bars.get(i)) {
                    <span class="lane-hover">{ bar_words(b) }</span>
                } else {
                    if let Some(ph) = &l.latest {
                        <span class={classes!("lane-run", ph.run.as_ref().map(|r| r.status.as_str()))}>
                            { run_words(ph, until, l.offline.is_some()) }
                        </span>
                    }
                    if let Some(m) = &l.last_metrics {
                        <span class="lane-metrics">{ metrics_words(m) }</span>
                    }
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
        // Clear of the "now" at the right end.
        .filter(|t| (t - t0) as f64 / ((t1 - t0).max(1) as f64) < 0.93)
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
            { for props.lanes.iter().enumerate().map(|(i, l)| html! {
                <LaneRow key={l.participant.name.clone()} lane={l.clone()} index={i}
                         span={props.span} now={props.now} offset_min={props.offset_min} />
            }) }
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
