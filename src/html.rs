//! A picture of a run: one self-contained HTML file (inline CSS and SVG, no
//! script, nothing fetched) showing the trace as a sequence diagram.
//!
//! A lane per node and external system; every delivered event an arrow from
//! its sender's lane to its receiver's (a timer loops on its lane); dropped
//! events dashed; faults, crashes, restarts and the heal phase marked; the
//! violating step highlighted with the invariant's message; virtual time and
//! step down the left side. Hover an arrow for its full text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use simcast_sim::engine::{TraceLine, Violation};

const ROW: usize = 18;
const LEFT: usize = 170;
const LANE: usize = 150;
const TOP: usize = 10;

/// What the header says about the run.
pub struct Header<'a> {
    /// e.g. `scenario locks-contended, seed 7, mutant lost-wakeup`.
    pub title: String,
    /// Events, digest, stop reason...
    pub facts: Vec<(&'a str, String)>,
    /// The violation, if any.
    pub violation: Option<&'a Violation>,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Whether a lane is a node (it can crash) rather than an external system.
fn is_node(lane: &str) -> bool {
    lane.starts_with("coord-") || lane.starts_with("client-") || lane == "server"
}

/// Renders the page.
pub fn render(header: &Header<'_>, trace: &[TraceLine]) -> String {
    // Lanes in order of first appearance, nodes first.
    let mut lanes: Vec<String> = Vec::new();
    let mut see = |l: &str| {
        if !lanes.iter().any(|x| x == l) {
            lanes.push(l.to_owned());
        }
    };
    for line in trace {
        if let Some((from, to)) = &line.route {
            see(from);
            see(to);
        }
        if let Some(n) = &line.node {
            see(n);
        }
    }
    lanes.sort_by_key(|l| !is_node(l));
    let x_of: BTreeMap<&str, usize> = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), LEFT + LANE / 2 + i * LANE))
        .collect();
    let rows: Vec<&TraceLine> = trace.iter().filter(|l| l.kind != "options").collect();
    let width = LEFT + lanes.len().max(1) * LANE + 420;
    let height = TOP * 2 + rows.len().max(1) * ROW;

    let mut svg = String::new();
    // Lanes, red and dashed while their node is down.
    let mut down: BTreeMap<&str, usize> = BTreeMap::new();
    let mut down_spans: Vec<(&str, usize, usize)> = Vec::new();
    for (i, l) in rows.iter().enumerate() {
        if let Some(n) = &l.node {
            match l.kind {
                "crash" => {
                    down.insert(n.as_str(), i);
                }
                "restart" => {
                    if let Some(start) = down.remove(n.as_str()) {
                        down_spans.push((n.as_str(), start, i));
                    }
                }
                _ => {}
            }
        }
    }
    for (n, start) in down {
        down_spans.push((n, start, rows.len()));
    }
    for (lane, x) in &x_of {
        let class = if is_node(lane) {
            "lane node"
        } else {
            "lane sys"
        };
        let _ = write!(
            svg,
            r#"<line class="{class}" x1="{x}" y1="0" x2="{x}" y2="{height}"/>"#
        );
    }
    for (n, a, b) in &down_spans {
        let x = x_of[n];
        let (y1, y2) = (TOP + a * ROW + ROW / 2, TOP + b * ROW);
        let _ = write!(
            svg,
            r#"<line class="down" x1="{x}" y1="{y1}" x2="{x}" y2="{y2}"/>"#
        );
    }
    let mut last_to: Option<&str> = None;
    let mut last_time = None;
    for (i, l) in rows.iter().enumerate() {
        let y = TOP + i * ROW + ROW / 2;
        let anchor = l
            .route
            .as_ref()
            .map(|(_, to)| to.as_str())
            .or(l.node.as_deref())
            .or(last_to)
            .and_then(|lane| x_of.get(lane).copied())
            .unwrap_or(LEFT + 10);
        let time = if last_time == Some(l.time) {
            String::new()
        } else {
            l.time.to_string()
        };
        last_time = Some(l.time);
        let _ = write!(
            svg,
            r#"<text class="axis" x="8" y="{}">{:>6}</text><text class="axis" x="60" y="{}">{}</text>"#,
            y + 4,
            l.step,
            y + 4,
            esc(&time)
        );
        let full = esc(&l.to_string());
        match (l.kind, &l.route) {
            ("deliver" | "drop", Some((from, to))) => {
                let (x1, x2) = (x_of[from.as_str()], x_of[to.as_str()]);
                let class = if l.kind == "drop" {
                    "msg dropped"
                } else {
                    "msg"
                };
                let label = if l.kind == "drop" {
                    format!("✗ {} (dropped: node down)", l.text)
                } else {
                    l.text.clone()
                };
                if x1 == x2 {
                    let _ = write!(
                        svg,
                        r#"<g><title>{full}</title><path class="{class}" d="M{x1},{} c24,0 24,{} 0,{}" marker-end="url(#arrow)"/><text class="label" x="{}" y="{}">{}</text></g>"#,
                        y - 6,
                        12,
                        12,
                        x1 + 26,
                        y + 4,
                        esc(&clip(&label, 70))
                    );
                } else {
                    let (lx, anchor_attr) = if x2 > x1 {
                        (x1 + 6, "start")
                    } else {
                        (x1 - 6, "end")
                    };
                    let _ = write!(
                        svg,
                        r#"<g><title>{full}</title><line class="{class}" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" marker-end="url(#arrow)"/><text class="label" x="{lx}" y="{}" text-anchor="{anchor_attr}">{}</text></g>"#,
                        y - 3,
                        esc(&clip(&label, 60))
                    );
                }
                last_to = Some(to.as_str());
            }
            ("fault", _) => {
                let _ = write!(
                    svg,
                    r#"<g><title>{full}</title><circle class="fault" cx="{anchor}" cy="{y}" r="5"/><text class="fault" x="{}" y="{}">⚡ {}</text></g>"#,
                    anchor + 9,
                    y + 4,
                    esc(&l.text)
                );
            }
            ("crash", _) => {
                let _ = write!(
                    svg,
                    r#"<text class="crash" x="{}" y="{}" text-anchor="middle">✖</text><text class="crash" x="{}" y="{}">crashed</text>"#,
                    anchor,
                    y + 5,
                    anchor + 10,
                    y + 4
                );
            }
            ("restart", _) => {
                let _ = write!(
                    svg,
                    r#"<text class="restart" x="{}" y="{}" text-anchor="middle">↻</text><text class="restart" x="{}" y="{}">restarted</text>"#,
                    anchor,
                    y + 5,
                    anchor + 10,
                    y + 4
                );
            }
            ("phase", _) => {
                let _ = write!(
                    svg,
                    r#"<line class="phase" x1="{LEFT}" y1="{y}" x2="{width}" y2="{y}"/><text class="phase" x="{}" y="{}">{}</text>"#,
                    LEFT + 4,
                    y - 3,
                    esc(&l.text)
                );
            }
            ("violation", _) => {
                let _ = write!(
                    svg,
                    r#"<g id="violation"><rect class="violation" x="0" y="{}" width="{width}" height="{ROW}"/><text class="violation" x="{}" y="{}">✘ {}</text></g>"#,
                    y - ROW / 2,
                    LEFT + 4,
                    y + 4,
                    esc(&l.text)
                );
            }
            _ => {
                let _ = write!(
                    svg,
                    r#"<g><title>{full}</title><text class="note" x="{}" y="{}">· {}</text></g>"#,
                    anchor + 8,
                    y + 4,
                    esc(&clip(&l.text, 90))
                );
            }
        }
    }

    let mut head = String::new();
    for (lane, x) in &x_of {
        let class = if is_node(lane) { "node" } else { "sys" };
        let _ = write!(
            head,
            r#"<span class="{class}" style="left:{}px">{}</span>"#,
            x - LANE / 2 + 4,
            esc(lane)
        );
    }
    let mut facts = String::new();
    for (k, v) in &header.facts {
        let _ = write!(facts, "<span><b>{}</b> {}</span> ", esc(k), esc(v));
    }
    let options = trace
        .iter()
        .find(|l| l.kind == "options")
        .map(|l| esc(&l.text))
        .unwrap_or_default();
    let verdict = match header.violation {
        None => r#"<p class="ok">Every invariant held.</p>"#.to_owned(),
        Some(v) => format!(
            r##"<p class="bad"><a href="#violation">✘ {} violated at step {} ({})</a>: {}</p>"##,
            esc(&v.invariant),
            v.step,
            esc(&v.time.to_string()),
            esc(&v.message)
        ),
    };
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>simcast: {title}</title>
<style>
body {{ font: 13px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2330; }}
header {{ padding: 12px 16px; border-bottom: 1px solid #d8dde6; background: #f7f8fa; }}
header h1 {{ font-size: 16px; margin: 0 0 6px; }}
header span {{ margin-right: 14px; }}
header .options {{ color: #5a6475; font-family: ui-monospace, Menlo, monospace; font-size: 12px; }}
.ok {{ color: #1a7f37; margin: 6px 0 0; }} .bad {{ color: #c62828; margin: 6px 0 0; font-weight: 600; }}
.bad a {{ color: inherit; }}
.legend span {{ margin-right: 16px; color: #5a6475; }}
.lanes {{ position: sticky; top: 0; height: 26px; background: #fff; border-bottom: 1px solid #d8dde6; z-index: 1; width: {width}px; }}
.lanes span {{ position: absolute; top: 5px; width: {lw}px; font-weight: 600; overflow: hidden; white-space: nowrap; }}
.lanes .node {{ color: #1d2330; }} .lanes .sys {{ color: #2f5fb3; }}
svg text {{ font: 11px ui-monospace, Menlo, monospace; }}
.axis {{ fill: #8a93a3; }}
.lane.node {{ stroke: #b8c0cc; stroke-width: 1.5; }} .lane.sys {{ stroke: #c9d8f2; stroke-width: 1.5; }}
.down {{ stroke: #e57373; stroke-width: 3; stroke-dasharray: 4 3; }}
.msg {{ stroke: #3d4a5c; stroke-width: 1.2; fill: none; }}
.msg.dropped {{ stroke: #b0b6c0; stroke-dasharray: 5 3; }}
.label {{ fill: #1d2330; }}
.note {{ fill: #6b7485; font-style: italic; }}
circle.fault {{ fill: #f9a825; }} text.fault {{ fill: #b26a00; font-weight: 600; }}
.crash {{ fill: #c62828; font-weight: 700; }} .restart {{ fill: #1a7f37; font-weight: 700; }}
line.phase {{ stroke: #1a7f37; stroke-dasharray: 8 4; }} text.phase {{ fill: #1a7f37; }}
rect.violation {{ fill: #fde7e7; }} text.violation {{ fill: #c62828; font-weight: 700; }}
g:hover .msg {{ stroke: #d2691e; stroke-width: 2; }}
</style></head>
<body>
<header>
<h1>simcast: {title}</h1>
<div>{facts}</div>
<div class="options">{options}</div>
{verdict}
<div class="legend"><span>→ event delivered</span><span>⇢ dropped (node down)</span><span>⚡ fault</span><span>✖ crash</span><span>↻ restart</span><span>red lane: node down</span><span>hover an arrow for details</span></div>
</header>
<div class="lanes">{head}</div>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#3d4a5c"/></marker></defs>
{svg}
</svg>
</body></html>
"##,
        title = esc(&header.title),
        lw = LANE - 8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcast_sim::engine::RunOptions;
    use simcast_sim::runner::{RunSpec, run};
    use simcast_sim::scenario::Scenario;

    #[test]
    fn a_failing_run_renders_lanes_arrows_faults_and_the_violation() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sim-scenarios");
        let scenario = Scenario::from_file(&dir.join("broadcast-chaos.toml")).unwrap();
        let mutant = scenario.protocol().mutant("store-no-dedup");
        let o = (0..200)
            .map(|seed| {
                run(
                    &RunSpec {
                        scenario: &scenario,
                        mutant,
                        seed,
                        choices: None,
                    },
                    RunOptions {
                        keep_trace: true,
                        record_steps: false,
                        skip_decisions: false,
                        skip_digest: false,
                    },
                )
            })
            .find(|o| o.violation.is_some())
            .expect("the mutant is caught");
        let page = render(
            &Header {
                title: "t <&>".to_owned(),
                facts: vec![("events", o.events.to_string())],
                violation: o.violation.as_ref(),
            },
            &o.trace,
        );
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("t &lt;&amp;&gt;"), "escaped");
        for lane in ["coord-a", "store-a", "wal-a", "client-1"] {
            assert!(page.contains(&format!(">{lane}</span>")), "{lane}");
        }
        assert!(page.contains("marker-end=\"url(#arrow)\""));
        assert!(page.contains("id=\"violation\""));
        assert!(page.contains("broadcast.callback_exactly_once"));
        assert!(page.contains("class=\"fault\""));
        assert!(!page.contains("<script"), "no script");
        assert!(!page.contains("src="), "nothing fetched");
        assert!(!page.contains("href=\"http"), "no links out");
    }
}
