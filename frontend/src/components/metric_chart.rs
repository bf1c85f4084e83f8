//! The training page's metric charts: one SVG line chart per (metric,
//! train|test), drawn here (no chart library, nothing loaded from outside
//! the node): x the round, y the value, a line per participant in its own
//! colour, and the values of the round under the pointer.

use std::rc::Rc;

use yew::prelude::*;

use crate::collab::MetricSeries;
use crate::view;

const W: f64 = 420.0;
const H: f64 = 220.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 36.0;
/// Points drawn as dots (with their value as a tooltip) up to this many
/// in a chart; past it, lines only (the pointer's readout still reads them).
const MAX_DOTS: usize = 300;

/// Where a chart's values land, computed once per change of its series.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartGeometry {
    x_lo: f64,
    x_hi: f64,
    y_lo: f64,
    y_hi: f64,
    /// (x px, label).
    pub x_ticks: Vec<(f64, String)>,
    /// (y px, label).
    pub y_ticks: Vec<(f64, String)>,
    /// Per line: participant, colour, the polyline's points, their count.
    pub lines: Vec<(String, &'static str, String, usize)>,
    /// The rounds with a value, in order, and their x (px): the pointer
    /// reads the nearest.
    pub rounds: Vec<(u32, f64)>,
    pub dots: bool,
}

impl ChartGeometry {
    /// The round nearest to `x` (px in the chart's own units).
    pub fn nearest(&self, x: f64) -> Option<u32> {
        let i = self.rounds.partition_point(|(_, rx)| *rx < x);
        let before = i.checked_sub(1).map(|j| self.rounds[j]);
        let after = self.rounds.get(i).copied();
        match (before, after) {
            (Some(a), Some(b)) => Some(if x - a.1 <= b.1 - x { a.0 } else { b.0 }),
            (Some(a), None) => Some(a.0),
            (None, Some(b)) => Some(b.0),
            (None, None) => None,
        }
    }

    pub fn x(&self, round: u32) -> f64 {
        LEFT + (f64::from(round) - self.x_lo) / (self.x_hi - self.x_lo) * (W - LEFT - RIGHT)
    }

    pub fn y(&self, v: f64) -> f64 {
        TOP + (self.y_hi - v) / (self.y_hi - self.y_lo) * (H - TOP - BOTTOM)
    }
}

/// Appends `v` to a tenth (`12.3`), through integers (`itoa`): float
/// formatting, even `format!` of integers, is slow in wasm, and a chart
/// has thousands of points.
fn push_tenths(out: &mut String, v: f64) {
    let t = (v * 10.0).round() as i64;
    if t < 0 {
        out.push('-');
    }
    let mut num = itoa::Buffer::new();
    out.push_str(num.format(t.unsigned_abs() / 10));
    out.push('.');
    out.push_str(num.format(t.unsigned_abs() % 10));
}

/// The geometry of `s`: linear in O(points), one pass per line.
#[inline(never)] // a loop over every point: see `crate::collab`
pub fn chart_geometry(s: &MetricSeries) -> ChartGeometry {
    let rounds = s.rounds();
    let (r_lo, r_hi) = match (rounds.first(), rounds.last()) {
        (Some(a), Some(b)) => (f64::from(*a), f64::from(*b)),
        _ => (0.0, 1.0),
    };
    let (x_lo, x_hi) = if r_hi > r_lo {
        (r_lo, r_hi)
    } else {
        (r_lo - 1.0, r_hi + 1.0)
    };
    let values = s.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (v_lo, v_hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (v_lo, v_hi) = if v_lo.is_finite() {
        (v_lo, v_hi)
    } else {
        (0.0, 1.0)
    };
    let pad = if v_hi > v_lo {
        (v_hi - v_lo) * 0.06
    } else {
        v_lo.abs().max(1.0) * 0.1
    };
    let mut g = ChartGeometry {
        x_lo,
        x_hi,
        y_lo: v_lo - pad,
        y_hi: v_hi + pad,
        x_ticks: vec![],
        y_ticks: vec![],
        lines: vec![],
        rounds: vec![],
        dots: s.lines.iter().map(|l| l.points.len()).sum::<usize>() <= MAX_DOTS,
    };
    let yt = view::nice_ticks(g.y_lo, g.y_hi, 4);
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    g.y_ticks = yt
        .iter()
        .map(|v| (g.y(*v), view::tick_label(*v, ystep)))
        .collect();
    g.x_ticks = view::nice_ticks(r_lo, r_hi.max(r_lo + 1.0), 5)
        .into_iter()
        .filter(|r| r.fract() == 0.0 && *r >= x_lo && *r <= x_hi && *r >= 0.0)
        .map(|r| (g.x(r as u32), format!("{r}")))
        .collect();
    g.lines = s
        .lines
        .iter()
        .map(|l| {
            let mut pts = String::with_capacity(l.points.len() * 14);
            for (r, v) in &l.points {
                push_tenths(&mut pts, g.x(*r));
                pts.push(',');
                push_tenths(&mut pts, g.y(*v));
                pts.push(' ');
            }
            (
                l.participant.clone(),
                l.colour,
                pts.trim_end().to_owned(),
                l.points.len(),
            )
        })
        .collect();
    g.rounds = rounds.iter().map(|r| (*r, g.x(*r))).collect();
    g
}

#[cfg(test)]
mod tests {
    #[test]
    fn tenths() {
        let mut s = String::new();
        for v in [12.34, 0.05, -3.26, 0.0, -0.04] {
            super::push_tenths(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "12.3 0.1 -3.3 0.0 0.0 ");
    }
}

#[derive(Properties, PartialEq)]
pub struct MetricChartProps {
    pub series: Rc<MetricSeries>,
}

/// One metric of one kind against the round, a line per participant.
#[component(MetricChart)]
pub fn metric_chart(props: &MetricChartProps) -> Html {
    let s = &props.series;
    let geometry = use_memo(props.series.clone(), |s| chart_geometry(s));
    let hover = use_state_eq(|| None::<u32>);
    let g = &*geometry;
    let title = s.title();
    let svg = use_node_ref();
    let on_leave = {
        let hover = hover.clone();
        Callback::from(move |_: MouseEvent| hover.set(None))
    };
    // One listener for the whole chart: the round nearest the pointer.
    let on_move = {
        let hover = hover.clone();
        let svg = svg.clone();
        let geometry = geometry.clone();
        Callback::from(move |e: MouseEvent| {
            let Some(el) = svg.cast::<web_sys::Element>() else {
                return;
            };
            let r = el.get_bounding_client_rect();
            if r.width() > 0.0 {
                let x = (f64::from(e.client_x()) - r.left()) / r.width() * W;
                hover.set(geometry.nearest(x));
            }
        })
    };
    let readout = match *hover {
        Some(r) => {
            let values: Vec<String> = s
                .lines
                .iter()
                .filter_map(|l| {
                    l.at(r)
                        .map(|v| format!("{} {}", l.participant, view::metric_value(v)))
                })
                .collect();
            format!("round {r}: {}", values.join(" · "))
        }
        None => "Point at the chart for the values of a round.".to_owned(),
    };
    html! {
        <figure class="metric-card">
            <figcaption class="chart-title">{ &title }</figcaption>
            <svg class="metric-chart" data-metric={s.metric.clone()} data-kind={s.kind.as_str()}
                 viewBox={format!("0 0 {W} {H}")} role="img"
                 aria-label={format!("{title} by round, {} participants", s.lines.len())}
                 ref={svg} onmousemove={on_move} onmouseleave={on_leave}>
                <g class="axis y">
                    { for g.y_ticks.iter().map(|(y, label)| html! {
                        <>
                            <line class="grid" x1={LEFT.to_string()} x2={(W - RIGHT).to_string()}
                                  y1={format!("{y:.1}")} y2={format!("{y:.1}")} />
                            <text x={(LEFT - 6.0).to_string()} y={format!("{:.1}", y + 4.0)} class="tick y">{ label }</text>
                        </>
                    }) }
                </g>
                <g class="axis x">
                    <line class="base" x1={LEFT.to_string()} x2={(W - RIGHT).to_string()}
                          y1={(H - BOTTOM).to_string()} y2={(H - BOTTOM).to_string()} />
                    { for g.x_ticks.iter().map(|(x, label)| html! {
                        <text x={format!("{x:.1}")} y={(H - BOTTOM + 16.0).to_string()} class="tick x">{ label }</text>
                    }) }
                    <text x={(W - RIGHT).to_string()} y={(H - 3.0).to_string()} class="axis-name">{ "round" }</text>
                </g>
                // Under the lines and dots, so that dots keep their tooltips.
                <rect class="hover-area" x={LEFT.to_string()} y={TOP.to_string()}
                      width={(W - LEFT - RIGHT).to_string()} height={(H - TOP - BOTTOM).to_string()} />
                { for g.lines.iter().map(|(name, colour, points, n)| html! {
                    <polyline key={name.clone()} class="metric-line" data-participant={name.clone()}
                              data-points={n.to_string()} points={points.clone()} stroke={*colour} />
                }) }
                if g.dots {
                    { for s.lines.iter().map(|l| {
                        let colour = l.colour;
                        html! {
                            <g class="metric-dots" data-participant={l.participant.clone()} fill={colour}>
                                { for l.points.iter().map(|(r, v)| html! {
                                    <circle cx={format!("{:.1}", g.x(*r))} cy={format!("{:.1}", g.y(*v))} r="2.5">
                                        <title>{ format!("{} · round {r}: {}", l.participant, view::metric_value(*v)) }</title>
                                    </circle>
                                }) }
                            </g>
                        }
                    }) }
                }
                if let Some(r) = *hover {
                    <g class="metric-hover" data-round={r.to_string()}>
                        <line x1={format!("{:.1}", g.x(r))} x2={format!("{:.1}", g.x(r))}
                              y1={TOP.to_string()} y2={(H - BOTTOM).to_string()} />
                        { for s.lines.iter().filter_map(|l| l.at(r).map(|v| html! {
                            <circle cx={format!("{:.1}", g.x(r))} cy={format!("{:.1}", g.y(v))} r="4"
                                    fill={l.colour} />
                        })) }
                    </g>
                }
            </svg>
            <p class="chart-readout" aria-live="polite">{ readout }</p>
            <ul class="chart-legend">
                { for s.lines.iter().map(|l| html! {
                    <li data-participant={l.participant.clone()}>
                        <span class="swatch" style={format!("background:{}", l.colour)}></span>
                        { &l.participant }
                        if let Some((_, v)) = l.points.last() {
                            <span class="last">{ format!(" {}", view::metric_value(*v)) }</span>
                        }
                    </li>
                }) }
            </ul>
        </figure>
    }
}

#[derive(Properties, PartialEq)]
pub struct MetricChartsProps {
    /// The training's UUID (the CSV link).
    pub uuid: AttrValue,
    pub series: Rc<Vec<Rc<MetricSeries>>>,
}

/// Every chart of a training and the CSV download of their values.
#[component(MetricCharts)]
pub fn metric_charts(props: &MetricChartsProps) -> Html {
    html! {
        <section class="metrics" aria-labelledby="metrics-title">
            <div class="section-head">
                <h3 id="metrics-title">{ "Metrics" }</h3>
                <a class="metrics-csv" id="metrics-csv" href={view::metrics_csv_url(&props.uuid)}
                   download={format!("{}-metrics.csv", props.uuid)}>{ "⤓ Download CSV" }</a>
            </div>
            if props.series.is_empty() {
                <p class="empty" id="no-metrics">
                    { "No metrics reported yet. A training command reports one by printing a line like " }
                    <code>{ r#"roundtable-metric {"name": "loss", "value": 0.41}"# }</code>
                    { " (train metrics from update rounds, test metrics from test rounds)." }
                </p>
            } else {
                <div class="metric-charts">
                    { for props.series.iter().map(|s| html! {
                        <MetricChart key={format!("{}/{}", s.metric, s.kind.as_str())} series={s.clone()} />
                    }) }
                </div>
            }
        </section>
    }
}
