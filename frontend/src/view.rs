//! Pure helpers for what the views draw: times, durations, the chat's
//! virtual window, the training timeline, the words of the peer marks
//! (trust, path, check results) and of file transfers (sizes, rates,
//! states). Tested natively.

use roundtable_shared::api::{
    Direction, PeerInfo, PeerPath, PeerTrust, PinSource, TransferInfo, TransferState,
};
use roundtable_shared::training::{Phase, RunStatus, Training, TrainingState};

/// `1.2 s`, `3 min 04 s`, `2 h 05 min`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// `HH:MM:SS` of Unix ms `at`, shifted by `offset_min` minutes (local time).
pub fn clock(at: i64, offset_min: i64) -> String {
    let s = (at / 1000 + offset_min * 60).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// "just now", "5 min ago", "3 h ago", "2 d ago" for `at` seen from `now`.
pub fn ago(at: i64, now: i64) -> String {
    let s = ((now - at) / 1000).max(0);
    match s {
        0..=9 => "just now".into(),
        10..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A mark shown next to a peer: its CSS class (also the end-to-end
/// test's hook), the words on screen, and the longer explanation for the
/// tooltip and screen readers. Words, never only a symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub class: &'static str,
    pub label: &'static str,
    pub title: String,
}

/// How a pin came to be, in the user's words.
pub fn pin_source(p: PinSource) -> &'static str {
    match p {
        PinSource::FirstUse => "pinned on first contact",
        PinSource::Accepted => "accepted by you",
    }
}

/// What the node has proven about a peer's identity, as the peer list and
/// the conversation show it.
pub fn trust_mark(trust: PeerTrust, pinned: Option<&str>, pinned_by: Option<PinSource>) -> Mark {
    match trust {
        PeerTrust::Verified => {
            let how = pinned_by.map_or("pinned", pin_source);
            let title = match pinned {
                Some(fp) => format!(
                    "Verified: a Roundtable node that proved the key this node pinned ({how}). Fingerprint {fp}"
                ),
                None => format!("Verified: a Roundtable node that proved its pinned key ({how})"),
            };
            Mark {
                class: "verified",
                label: "✓ verified",
                title,
            }
        }
        PeerTrust::Unverified => Mark {
            class: "unverified",
            label: "unverified",
            title: "Unverified: a classic eurechat peer without an identity key, so the sender of its messages is only claimed".into(),
        },
        PeerTrust::KeyChanged => Mark {
            class: "key-changed",
            label: "⚠ key changed",
            title: "Key changed: this peer now presents another identity key than the pinned one; messages from and to it are held until you accept the new key".into(),
        },
        PeerTrust::Unknown => Mark {
            class: "unknown",
            label: "not yet verified",
            title: "Not yet verified: no authenticated contact with this peer so far".into(),
        },
    }
}

/// Whether a peer is online only through the directory's relay (it runs
/// with `--chat none`: a relay session and no chat address).
pub fn relay_only(p: &PeerInfo) -> bool {
    p.relay && p.address.is_none()
}

/// How messages reach a peer (how the last exchange went); `None` when
/// nothing went yet.
pub fn path_mark(path: Option<PeerPath>) -> Option<Mark> {
    Some(match path? {
        PeerPath::Direct => Mark {
            class: "direct",
            label: "direct",
            title: "Direct: the last exchange went over a connection to its chat port".into(),
        },
        PeerPath::Relayed => Mark {
            class: "relayed",
            label: "relayed via directory",
            title: "Relayed: sealed frames forwarded by the directory server, which cannot read or alter them".into(),
        },
    })
}

/// The mark of a peer online only through the relay ([`relay_only`]).
pub fn relay_only_mark() -> Mark {
    Mark {
        class: "relay-only",
        label: "relay only",
        title: "Relay only: no chat address; it is online only through the directory's relay"
            .into(),
    }
}

/// A round-trip time, to a tenth of a millisecond: `12.3 ms`.
pub fn rtt(ms: f64) -> String {
    format!("{ms:.1} ms")
}

/// `YYYY-MM-DD HH:MM:SS` of Unix ms `at`, shifted by `offset_min` minutes.
pub fn date_time(at: i64, offset_min: i64) -> String {
    let secs = at.div_euclid(1000) + offset_min * 60;
    let days = secs.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {}", clock(at, offset_min))
}

/// A day divider's words for local day `day` seen on local day `today`
/// (days since 1970-01-01): "Today", "Yesterday", "Tuesday 24 November",
/// with the year when it is not this year's.
pub fn day_label(day: i64, today: i64) -> String {
    if day == today {
        return "Today".into();
    }
    if day == today - 1 {
        return "Yesterday".into();
    }
    const WEEKDAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let date = |d: i64| {
        let s = date_time(d * 86_400_000, 0);
        let y: i64 = s[0..4].parse().unwrap_or(1970);
        let m: usize = s[5..7].parse().unwrap_or(1);
        let dd: u32 = s[8..10].parse().unwrap_or(1);
        (y, m, dd)
    };
    let (y, m, d) = date(day);
    let weekday = WEEKDAYS[day.rem_euclid(7) as usize];
    let month = MONTHS[m.saturating_sub(1).min(11)];
    if y == date(today).0 {
        format!("{weekday} {d} {month}")
    } else {
        format!("{weekday} {d} {month} {y}")
    }
}

/// Height of a day divider row, px.
pub const DAY_ROW_HEIGHT: f64 = 36.0;

/// `HH:MM:SS` for a moment of the local day of `now`, else the date too:
/// what a table column needs to be read at a glance.
pub fn when(at: i64, now: i64, offset_min: i64) -> String {
    let day = |t: i64| (t.div_euclid(1000) + offset_min * 60).div_euclid(86_400);
    if day(at) == day(now) {
        clock(at, offset_min)
    } else {
        date_time(at, offset_min)
    }
}

/// A size in bytes for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `100 MiB`,
/// `2.0 GiB` (three significant digits at most, binary units).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    // Rounding up to 1024 moves to the next unit.
    if v >= 1023.95 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 99.95 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A transfer rate: `45.6 MiB/s`.
pub fn rate(bytes_per_s: f64) -> String {
    format!("{}/s", size(bytes_per_s.max(0.0) as u64))
}

/// Time left for `remaining` bytes at `bytes_per_s`: `2 s left`,
/// `3 min 04 s left`, `1 h 05 min left`; `None` without a usable rate.
pub fn time_left(remaining: u64, bytes_per_s: f64) -> Option<String> {
    if !(bytes_per_s.is_finite() && bytes_per_s > 0.0) {
        return None;
    }
    let s = (remaining as f64 / bytes_per_s)
        .ceil()
        .min(i64::MAX as f64 / 2.0) as i64;
    Some(if s < 60 {
        format!("{s} s left")
    } else if s < 3600 {
        format!("{} min {:02} s left", s / 60, s % 60)
    } else {
        format!("{} h {:02} min left", s / 3600, (s / 60) % 60)
    })
}

/// Where a transfer is: `12.3 MiB of 100 MiB · 45.6 MiB/s · 2 s left`
/// while bytes move, `12.3 MiB of 100 MiB` otherwise, the size alone once
/// delivered.
pub fn progress(t: &TransferInfo) -> String {
    if t.state == TransferState::Delivered {
        return size(t.size);
    }
    let mut out = format!("{} of {}", size(t.bytes.min(t.size)), size(t.size));
    if t.state == TransferState::Sending {
        if let Some(r) = t.rate {
            out.push_str(&format!(" · {}", rate(r)));
            if let Some(left) = time_left(t.size.saturating_sub(t.bytes), r) {
                out.push_str(&format!(" · {left}"));
            }
        }
    }
    out
}

/// The state's name: the files page's filter values and the `data-state`
/// attribute the end-to-end test reads.
pub fn transfer_state_name(s: TransferState) -> &'static str {
    match s {
        TransferState::Queued => "queued",
        TransferState::Sending => "sending",
        TransferState::Waiting => "waiting",
        TransferState::Delivered => "delivered",
        TransferState::Failed => "failed",
    }
}

/// Every state, in the order they happen (the files page's filter).
pub const TRANSFER_STATES: [TransferState; 5] = [
    TransferState::Queued,
    TransferState::Sending,
    TransferState::Waiting,
    TransferState::Delivered,
    TransferState::Failed,
];

/// The state in words, as seen from this side.
pub fn transfer_state_label(s: TransferState, d: Direction) -> &'static str {
    match (s, d) {
        (TransferState::Queued, _) => "◷ queued",
        (TransferState::Sending, Direction::Out) => "↑ sending",
        (TransferState::Sending, Direction::In) => "↓ receiving",
        (TransferState::Waiting, Direction::Out) => "◷ waiting for the peer",
        (TransferState::Waiting, Direction::In) => "◷ waiting for the sender",
        (TransferState::Delivered, Direction::Out) => "✓✓ delivered, verified",
        (TransferState::Delivered, Direction::In) => "✓✓ received, verified",
        (TransferState::Failed, _) => "✗ failed",
    }
}

/// Who the other party is: `to bob`, `from bob`, or for a bare NVFlare
/// exchange `from 127.0.0.1:5555 (NVFlare)`.
pub fn transfer_peer(t: &TransferInfo) -> String {
    match (t.bare, t.direction) {
        (true, _) => format!("from {} (NVFlare)", t.peer),
        (false, Direction::Out) => format!("to {}", t.peer),
        (false, Direction::In) => format!("from {}", t.peer),
    }
}

/// Whether to offer the download link: the node serves the bytes, and a
/// received file only once it is whole and verified.
pub fn downloadable(t: &TransferInfo) -> bool {
    t.downloadable && (t.direction == Direction::Out || t.state == TransferState::Delivered)
}

/// Where the bytes are served (a plain link: the cookie carries the token).
pub fn content_url(seq: i64) -> String {
    format!("/api/files/{seq}/content")
}

/// The first 12 hex digits of a SHA-256 and an ellipsis (the full one
/// goes in a tooltip).
pub fn short_sha(sha: &str) -> String {
    match sha.get(..12) {
        Some(head) if sha.len() > 12 => format!("{head}…"),
        _ => sha.to_owned(),
    }
}

/// One file sent to several members (a room's post): the bytes they hold
/// together, of all they are to hold, and a line saying how many have it.
pub fn group_progress(group: &[std::rc::Rc<TransferInfo>]) -> (u64, u64, String) {
    let held: u64 = group.iter().map(|t| t.bytes.min(t.size)).sum();
    let total: u64 = group.iter().map(|t| t.size).sum();
    let done = group
        .iter()
        .filter(|t| t.state == TransferState::Delivered)
        .count();
    let mut line = format!("{done} of {} have it", group.len());
    if done < group.len() && group.iter().any(|t| t.state == TransferState::Sending) {
        line.push_str(&format!(" · {} of {}", size(held), size(total)));
    }
    (held, total, line)
}

/// Progress as a fraction in [0, 1] (an empty file counts as done once delivered).
pub fn fraction(t: &TransferInfo) -> f64 {
    if t.size == 0 {
        return if t.state == TransferState::Delivered {
            1.0
        } else {
            0.0
        };
    }
    (t.bytes as f64 / t.size as f64).clamp(0.0, 1.0)
}

/// Estimated pixel height of a room's line about itself (one line).
pub const EVENT_ROW_HEIGHT: f64 = 26.0;

/// Pixels the sender's name adds to a received message in a room.
pub const SENDER_LINE_HEIGHT: f64 = 16.0;

/// Estimated pixel height of a file row in a conversation (name, bar,
/// progress line, meta line): measured once rendered, like text rows.
pub const FILE_ROW_HEIGHT: f64 = 112.0;

/// Estimated pixel height of a chat row showing `text` in a column `width`
/// px wide: where a row is placed before it has been rendered and measured.
/// Exact for one line of text in the dashboard's stylesheet, so that most
/// rows need no second layout once measured.
pub fn row_height(text: &str, width: f64) -> f64 {
    const CHAR_W: f64 = 8.6;
    const LINE_H: f64 = 20.0;
    const CHROME: f64 = 30.0; // row and bubble padding (8 + 8), meta line (14)
                              // Bubbles take up to 80% of the row, minus their padding.
    let per_line = ((width * 0.8 - 40.0) / CHAR_W).floor().max(8.0) as usize;
    let lines: usize = text
        .split('\n')
        .map(|l| l.chars().count().div_ceil(per_line).max(1))
        .sum();
    CHROME + LINE_H * lines as f64
}

/// Offsets of rows of heights `heights`: `offsets[i]` is where row i
/// starts; the last entry is the total height.
pub fn offsets(heights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut out = vec![0.0];
    let mut y = 0.0;
    for h in heights {
        y += h;
        out.push(y);
    }
    out
}

/// The rows to render to fill `[top, top + height)`, plus `overscan`
/// rows on each side: a range of row indices.
pub fn window(offsets: &[f64], top: f64, height: f64, overscan: usize) -> std::ops::Range<usize> {
    let rows = offsets.len().saturating_sub(1);
    if rows == 0 {
        return 0..0;
    }
    // First row ending after `top`, last row starting before the bottom.
    let first = offsets[1..].partition_point(|&end| end <= top);
    let last = offsets[..rows].partition_point(|&start| start < top + height);
    first.saturating_sub(overscan)..(last + overscan).min(rows).max(first.min(rows))
}

/// The scroll position that puts row `row`'s middle in the middle of a
/// view `height` px high (as far as the ends allow): where a conversation
/// opened at a search hit is scrolled to.
pub fn centered(offsets: &[f64], row: usize, height: f64) -> f64 {
    let total = offsets.last().copied().unwrap_or(0.0);
    let (Some(&start), Some(&end)) = (offsets.get(row), offsets.get(row + 1)) else {
        return (total - height).max(0.0);
    };
    ((start + end) / 2.0 - height / 2.0).clamp(0.0, (total - height).max(0.0))
}

/// A training's state in the words a person knows.
pub fn state_words(s: TrainingState) -> &'static str {
    match s {
        TrainingState::Started => "Starting",
        TrainingState::InRound => "In an update round",
        TrainingState::Testing => "Testing the model",
        TrainingState::Swag => "SWAG round",
        TrainingState::Finished => "Finished",
        TrainingState::Removed => "Removed from the training",
    }
}

/// A phase as the pages name it: `update`, `test`, `SWAG`.
pub fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Update => "update",
        Phase::Test => "test",
        Phase::Swag => "SWAG",
    }
}

/// A local run's status in words.
pub fn run_words(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Skipped => "skipped (a newer phase came first)",
    }
}

/// `HH:MM` of Unix ms `at` on the local day of `now`, else
/// `YYYY-MM-DD HH:MM`: "last heard" and the lanes' axis.
pub fn short_when(at: i64, now: i64, offset_min: i64) -> String {
    let full = when(at, now, offset_min);
    // Drop the seconds (`:SS` at the end).
    full[..full.len() - 3].to_owned()
}

/// The name to show for a training: the one a person gave it, else the
/// first eight characters of its UUID and when it started (with the date
/// when not today).
pub fn training_name(t: &Training, now: i64, offset_min: i64) -> String {
    match &t.name {
        Some(n) if !n.trim().is_empty() => n.clone(),
        _ => default_training_name(t, now, offset_min),
    }
}

/// The default name of a training ([`training_name`] without a name set).
pub fn default_training_name(t: &Training, now: i64, offset_min: i64) -> String {
    format!(
        "{} · {}",
        t.short_id(),
        short_when(t.started_at, now, offset_min)
    )
}

/// Where `GET /api/trainings/{uuid}/metrics.csv` is (a plain link).
pub fn metrics_csv_url(uuid: &str) -> String {
    format!("/api/trainings/{uuid}/metrics.csv")
}

/// About `n` evenly spaced round values covering `[lo, hi]`, each a
/// multiple of 1, 2 or 5 times a power of ten: an axis's labelled ticks.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || n == 0 {
        return vec![];
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let raw = (hi - lo) / n as f64;
    let exp = raw.log10().floor() as i32;
    // A value `k * m * 10^exp`, computed so that 3 * 0.2 is 0.6 (a division
    // by an exact power of ten rounds correctly; a product does not).
    let scaled = |k: f64| {
        if exp < 0 {
            k / 10f64.powi(-exp)
        } else {
            k * 10f64.powi(exp)
        }
    };
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| scaled(*m) >= raw)
        .unwrap_or(10.0);
    let step = scaled(m);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .take(50)
        .map(|i| scaled(i as f64 * m))
        .collect()
}

/// A tick's label: as few decimals as its step needs.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let s = format!("{v:.decimals$}");
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A metric value for people: four significant digits (`0.4123`,
/// `12.35`, `1235`), or an exponent for very large or small magnitudes.
pub fn metric_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    }
}

/// The colours of participants' lines, distinct for up to ten names.
pub const PALETTE: [&str; 10] = [
    "#3353d1", "#d9480f", "#1f9d55", "#9c36b5", "#c2255c", "#0c8599", "#b7791f", "#5c940d",
    "#7f5539", "#1c2a5e",
];

fn name_hash(name: &str) -> usize {
    // FNV-1a.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize
}

/// The colour of participant `name` alone: a hash of the name, not its
/// place in a list.
pub fn participant_colour(name: &str) -> &'static str {
    PALETTE[name_hash(name) % PALETTE.len()]
}

/// The colours of a training's participants: each its own
/// [`participant_colour`] unless another took it, then the next free one
/// (taken in order of the names' hashes, so the same names get the same
/// colours on every node and page); distinct for up to ten names.
pub fn colours<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<&'a str, &'static str> {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_by_key(|n| (name_hash(n) % PALETTE.len(), name_hash(n), *n));
    names.dedup();
    let mut taken = [false; PALETTE.len()];
    let mut out = std::collections::BTreeMap::new();
    for n in names {
        let want = name_hash(n) % PALETTE.len();
        let slot = (0..PALETTE.len())
            .map(|k| (want + k) % PALETTE.len())
            .find(|s| !taken[*s])
            .unwrap_or(want);
        taken[slot] = true;
        out.insert(n, PALETTE[slot]);
    }
    out
}

/// One bar of the timeline: a phase of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub round: u32,
    pub phase: Phase,
    pub start: i64,
    /// `None` while it is the latest phase of a running training.
    pub duration: Option<i64>,
    /// Where the bar is drawn: ms since the training started, and length.
    pub x: i64,
    pub width: i64,
}

/// The timeline of `t`: each phase lasts until the next phase starts, or
/// until its run ended, or the training finished; the latest phase of a
/// running training lasts until `now` (and has no duration yet).
#[inline(never)] // a loop over every phase: see `crate::collab`
pub fn bars(t: &Training, now: i64) -> Vec<Bar> {
    let mut phases: Vec<_> = t.phases().collect();
    phases.sort_by_key(|(r, p)| (p.started_at, p.phase.position(*r)));
    let mut out = Vec::with_capacity(phases.len());
    for (i, (round, p)) in phases.iter().enumerate() {
        let end = match phases.get(i + 1) {
            Some((_, next)) => Some(next.started_at),
            None => p.run.as_ref().and_then(|r| r.ended_at).or(t.finished_at),
        };
        let duration = end.map(|e| (e - p.started_at).max(0));
        out.push(Bar {
            round: *round,
            phase: p.phase,
            start: p.started_at,
            duration,
            x: (p.started_at - t.started_at).max(0),
            width: duration.unwrap_or((now - p.started_at).max(0)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::training::{PhaseRecord, Round, Run, RunStatus, TrainingState};

    #[test]
    fn formats() {
        assert_eq!(duration(250), "250 ms");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(184_000), "3 min 04 s");
        assert_eq!(duration(7_500_000), "2 h 05 min");
        assert_eq!(clock(3_723_000, 0), "01:02:03");
        assert_eq!(clock(3_723_000, 60), "02:02:03");
        assert_eq!(clock(0, -60), "23:00:00");
        assert_eq!(ago(0, 5_000), "just now");
        assert_eq!(ago(0, 125_000), "2 min ago");
        assert_eq!(ago(0, 7_200_000), "2 h ago");
    }

    #[test]
    fn peer_marks_use_words_and_explain_themselves() {
        let fp = "abcd ef01 2345 6789 abcd ef01 2345 6789";
        let v = trust_mark(PeerTrust::Verified, Some(fp), Some(PinSource::FirstUse));
        assert_eq!((v.class, v.label), ("verified", "✓ verified"));
        assert!(
            v.title.contains(fp),
            "the full pinned fingerprint: {}",
            v.title
        );
        assert!(v.title.contains("pinned on first contact"), "{}", v.title);
        let v = trust_mark(PeerTrust::Verified, Some(fp), Some(PinSource::Accepted));
        assert!(v.title.contains("accepted by you"), "{}", v.title);
        let u = trust_mark(PeerTrust::Unverified, None, None);
        assert_eq!(u.class, "unverified");
        assert!(u.title.contains("claimed"), "{}", u.title);
        let k = trust_mark(PeerTrust::KeyChanged, Some(fp), Some(PinSource::FirstUse));
        assert_eq!((k.class, k.label), ("key-changed", "⚠ key changed"));
        assert!(k.title.contains("held"), "{}", k.title);
        assert_eq!(
            trust_mark(PeerTrust::Unknown, None, None).label,
            "not yet verified"
        );

        assert_eq!(path_mark(None), None);
        assert_eq!(path_mark(Some(PeerPath::Direct)).unwrap().label, "direct");
        assert_eq!(
            path_mark(Some(PeerPath::Relayed)).unwrap().label,
            "relayed via directory"
        );
        let mut p = PeerInfo::unknown("bob");
        p.relay = true;
        assert!(relay_only(&p), "a relay session and no address");
        p.address = Some("127.0.0.1".into());
        assert!(!relay_only(&p), "reachable directly too");
        p.relay = false;
        p.address = None;
        assert!(!relay_only(&p), "offline is not relay only");
        assert_eq!(rtt(12.345), "12.3 ms");
        assert_eq!(rtt(0.04), "0.0 ms");
    }

    fn file(state: TransferState, bytes: u64, rate: Option<f64>) -> TransferInfo {
        TransferInfo {
            seq: 4,
            id: "0".repeat(32),
            peer: "bob".into(),
            direction: Direction::Out,
            name: "model.pt".into(),
            size: 100 * 1024 * 1024,
            sha256: "0123456789abcdef".repeat(4),
            state,
            bytes,
            rate,
            error: None,
            created_at: 0,
            updated_at: 0,
            bare: false,
            downloadable: true,
            room: None,
        }
    }

    #[test]
    fn transfer_words() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12_897_484), "12.3 MiB");
        assert_eq!(size(100 * 1024 * 1024), "100 MiB");
        assert_eq!(size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(size(2 * 1024 * 1024 * 1024), "2.0 GiB");
        assert_eq!(size(u64::MAX), "16384 PiB");
        assert_eq!(rate(47_815_065.6), "45.6 MiB/s");
        assert_eq!(time_left(100, 50.0).as_deref(), Some("2 s left"));
        assert_eq!(time_left(101, 50.0).as_deref(), Some("3 s left"));
        assert_eq!(time_left(184, 1.0).as_deref(), Some("3 min 04 s left"));
        assert_eq!(time_left(3900, 1.0).as_deref(), Some("1 h 05 min left"));
        assert_eq!(time_left(1, 0.0), None);
        assert_eq!(time_left(1, f64::NAN), None);
        assert!(
            time_left(u64::MAX, f64::MIN_POSITIVE).is_some(),
            "no overflow"
        );

        let mib = 1024 * 1024;
        let moving = file(TransferState::Sending, 12_897_484, Some(47_815_065.6));
        assert_eq!(
            progress(&moving),
            "12.3 MiB of 100 MiB · 45.6 MiB/s · 2 s left"
        );
        assert_eq!(
            progress(&file(TransferState::Waiting, 50 * mib, None)),
            "50.0 MiB of 100 MiB"
        );
        assert_eq!(
            progress(&file(TransferState::Delivered, 100 * mib, None)),
            "100 MiB"
        );
        assert_eq!(fraction(&file(TransferState::Sending, 50 * mib, None)), 0.5);
        let empty = TransferInfo {
            size: 0,
            ..file(TransferState::Delivered, 0, None)
        };
        assert_eq!(fraction(&empty), 1.0);

        assert_eq!(transfer_peer(&moving), "to bob");
        let bare = TransferInfo {
            peer: "127.0.0.1:5555".into(),
            direction: Direction::In,
            bare: true,
            ..moving.clone()
        };
        assert_eq!(transfer_peer(&bare), "from 127.0.0.1:5555 (NVFlare)");
        assert_eq!(short_sha(&moving.sha256), "0123456789ab…");
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(content_url(4), "/api/files/4/content");

        // Our own file can be downloaded at once; a received one once delivered.
        assert!(downloadable(&moving));
        let incoming = TransferInfo {
            direction: Direction::In,
            ..moving
        };
        assert!(!downloadable(&incoming));
        let arrived = TransferInfo {
            state: TransferState::Delivered,
            ..incoming.clone()
        };
        assert!(downloadable(&arrived));
        assert!(!downloadable(&TransferInfo {
            downloadable: false,
            room: None,
            ..arrived
        }));
        assert_eq!(
            transfer_state_label(TransferState::Delivered, Direction::In),
            "✓✓ received, verified"
        );
        assert_eq!(transfer_state_name(TransferState::Waiting), "waiting");
    }

    #[test]
    fn today_reads_as_a_time_other_days_with_their_date() {
        // 2026-12-01 13:25:35 UTC.
        let now = 1_796_131_535_000;
        assert_eq!(when(now - 3_600_000, now, 0), "12:25:35");
        assert_eq!(when(now - 86_400_000, now, 0), "2026-11-30 13:25:35");
        // 00:30 local at UTC+1 is still the 1st there.
        assert_eq!(when(now - 13 * 3_600_000, now, 60), "01:25:35");
    }

    #[test]
    fn dates() {
        assert_eq!(date_time(0, 0), "1970-01-01 00:00:00");
        assert_eq!(date_time(0, -60), "1969-12-31 23:00:00");
        // 2026-12-01 13:25:35 UTC.
        assert_eq!(date_time(1_796_131_535_000, 0), "2026-12-01 13:25:35");
        assert_eq!(date_time(951_782_400_000, 0), "2000-02-29 00:00:00");
    }

    #[test]
    fn virtual_window() {
        let off = offsets([10.0; 100]);
        assert_eq!(off.len(), 101);
        assert_eq!(off[100], 1000.0);
        assert_eq!(window(&off, 0.0, 50.0, 0), 0..5);
        assert_eq!(window(&off, 105.0, 50.0, 0), 10..16);
        assert_eq!(window(&off, 105.0, 50.0, 3), 7..19);
        assert_eq!(window(&off, 990.0, 50.0, 5), 94..100);
        assert_eq!(window(&[0.0], 0.0, 50.0, 5), 0..0);
        // 10,000 rows: still only the visible ones.
        let off = offsets((0..10_000).map(|i| 40.0 + (i % 3) as f64 * 20.0));
        let w = window(&off, off[5000], 600.0, 10);
        assert!(w.len() < 40, "{w:?}");
        assert!(w.contains(&5000));
    }

    #[test]
    fn a_row_is_centered_within_the_ends() {
        let off = offsets([10.0; 100]);
        // Row 50 spans 500..510: its middle at the view's middle.
        assert_eq!(centered(&off, 50, 200.0), 405.0);
        let w = window(&off, centered(&off, 50, 200.0), 200.0, 0);
        assert!(w.contains(&50), "{w:?}");
        // Near the top or bottom, the view stops at the end.
        assert_eq!(centered(&off, 1, 200.0), 0.0);
        assert_eq!(centered(&off, 99, 200.0), 800.0);
        // A view taller than everything stays at the top.
        assert_eq!(centered(&off, 3, 5000.0), 0.0);
        // No such row: the bottom, as a conversation opens.
        assert_eq!(centered(&off, 100, 200.0), 800.0);
    }

    #[test]
    fn rows_grow_with_text() {
        let one = row_height("hi", 400.0);
        assert!(row_height(&"x".repeat(200), 400.0) > one);
        assert!(row_height("a\nb\nc", 400.0) > one);
    }

    fn phase(phase: Phase, at: i64, ended: Option<i64>) -> PhaseRecord {
        PhaseRecord {
            phase,
            started_at: at,
            model_id: "m".into(),
            run: ended.map(|e| Run {
                status: RunStatus::Succeeded,
                started_at: at,
                ended_at: Some(e),
                exit_code: Some(0),
                output_tail: vec![],
                metrics_ignored: 0,
            }),
        }
    }

    #[test]
    fn training_words() {
        assert_eq!(state_words(TrainingState::Swag), "SWAG round");
        assert_eq!(state_words(TrainingState::InRound), "In an update round");
        assert_eq!(phase_word(Phase::Swag), "SWAG");
        let mut t = Training {
            name: None,
            uuid: "0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5b".into(),
            state: TrainingState::Started,
            current_round: None,
            started_at: 1_796_131_535_000,
            finished_at: None,
            global_model_id: None,
            rounds: vec![],
        };
        let now = t.started_at + 60_000;
        assert_eq!(training_name(&t, now, 0), "0b8a3f4e · 13:25");
        assert_eq!(
            training_name(&t, now + 86_400_000, 0),
            "0b8a3f4e · 2026-12-01 13:25",
            "the date when not today"
        );
        t.name = Some("Lung CT, 4 sites".into());
        assert_eq!(training_name(&t, now, 0), "Lung CT, 4 sites");
        assert_eq!(
            metrics_csv_url(&t.uuid),
            "/api/trainings/0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5b/metrics.csv"
        );
    }

    #[test]
    fn chart_axes_and_colours() {
        assert_eq!(nice_ticks(0.0, 1.0, 4), [0.0, 0.5, 1.0]);
        assert_eq!(nice_ticks(0.31, 0.94, 4), [0.4, 0.6, 0.8]);
        assert_eq!(nice_ticks(0.0, 99.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0]);
        assert_eq!(nice_ticks(3.0, 3.0, 4), [2.0, 2.5, 3.0, 3.5, 4.0]);
        assert!(nice_ticks(f64::NAN, 1.0, 4).is_empty());
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(20.0, 20.0), "20");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(metric_value(0.412345), "0.4123");
        assert_eq!(metric_value(12.3456), "12.35");
        assert_eq!(metric_value(0.0), "0");
        assert_eq!(metric_value(2e9), "2.000e9");
        // Stable per name, distinct for the demo's three.
        assert_eq!(participant_colour("bob"), participant_colour("bob"));
        let c = ["alice", "bob", "carol"].map(participant_colour);
        assert!(c[0] != c[1] && c[1] != c[2] && c[0] != c[2], "{c:?}");
        // Ten participants: ten colours, whatever the order they come in.
        let ten = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        ];
        let m = colours(ten);
        let distinct: std::collections::BTreeSet<_> = m.values().collect();
        assert_eq!(distinct.len(), 10);
        let mut rev = ten;
        rev.reverse();
        assert_eq!(colours(rev), m);
        assert_eq!(colours(["bob"])["bob"], participant_colour("bob"));
    }

    #[test]
    fn timeline_durations() {
        let mut t = Training {
            name: None,
            uuid: "t".into(),
            state: TrainingState::InRound,
            current_round: Some(1),
            started_at: 1000,
            finished_at: None,
            global_model_id: None,
            rounds: vec![
                Round {
                    round: 0,
                    phases: vec![phase(Phase::Update, 1000, None)],
                },
                Round {
                    round: 1,
                    phases: vec![
                        phase(Phase::Test, 3000, None),
                        phase(Phase::Update, 4000, Some(4500)),
                    ],
                },
            ],
        };
        let b = bars(&t, 9000);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b[0].round, b[0].phase, b[0].duration),
            (0, Phase::Update, Some(2000))
        );
        assert_eq!(b[1].duration, Some(1000));
        assert_eq!(b[1].x, 2000);
        assert_eq!(b[2].duration, Some(500), "run end");
        t.rounds[1].phases[1].run = None;
        let b = bars(&t, 9000);
        assert_eq!((b[2].duration, b[2].width), (None, 5000), "still going");
        t.finished_at = Some(6000);
        assert_eq!(bars(&t, 9000)[2].duration, Some(2000));
    }

    #[test]
    fn day_labels_read_as_people_say_them() {
        // 2026-12-01 is day 20_788, a Tuesday.
        let today = 20_788;
        assert_eq!(date_time(today * 86_400_000, 0), "2026-12-01 00:00:00");
        assert_eq!(day_label(today, today), "Today");
        assert_eq!(day_label(today - 1, today), "Yesterday");
        assert_eq!(day_label(today - 7, today), "Tuesday 24 November");
        assert_eq!(day_label(today - 365, today), "Monday 1 December 2025");
    }
}
