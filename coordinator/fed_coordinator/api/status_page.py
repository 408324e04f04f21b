"""The HTML status page: fleet table and per-round server accuracy, rendered on the server.

Each agent's row has its stored images per label and by who labeled them (human, pseudo,
review, unlabeled), its field numbers and a sparkline of its low-confidence share per hour
(api.field_history), and a drifting agent says so in its problem cell. The charts are inline
SVG made here (presentation attributes only, no style attribute, so the CSP below stays as it
is): the page must work on a coordinator with no internet (no
CDN scripts) and in any browser, and a person reading it needs nothing interactive.
Every string on it comes from somewhere else (agent names and heartbeats, campaign and
model reasons), so every one goes through `html.escape`, numbers are formatted, and the
page is served with a Content-Security-Policy that allows no script at all and only the
one stylesheet below (by its hash): even a missed escape could not run anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import time
from typing import Optional

from fed_coordinator.api.field_history import HourPoint, hourly_low_confidence
from fed_coordinator.api.fleet import AgentRow, fleet_view, labels_used
from fed_coordinator.api.pi_health_view import declined_text
from fed_coordinator.config import MonitoringSection
from fed_coordinator.state import State

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
STYLE = ("body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;margin-bottom:1.5em}"
         " td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px} .online{color:#080}"
         " .offline{color:#b00} .legend{list-style:none;padding:0;font-size:13px}"
         " .drift{color:#b00;font-weight:bold}"
         + "".join(f" .c{i}{{color:{color}}}" for i, color in enumerate(COLORS)))
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def accuracy_chart(campaigns: list[dict], width: int = 640, height: int = 260) -> str:
    pad_l, pad_b, pad_t, pad_r = 48, 32, 16, 16
    runs = [c for c in reversed(campaigns) if c.get("rounds")][-6:]
    max_round = max((r["round"] for c in runs for r in c["rounds"]), default=1) or 1
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(rnd: float, acc: float) -> tuple[float, float]:
        return pad_l + plot_w * rnd / max_round, pad_t + plot_h * (1 - acc)

    parts = [f'<svg id="accuracy-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" role="img" aria-label="server accuracy per round">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        _, y = xy(0, tick)
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{y}" y2="{y}" stroke="#eee"/>'
                     f'<text x="{pad_l - 6}" y="{y + 4}" font-size="11" text-anchor="end">{tick:.2f}</text>')
    for rnd in range(0, max_round + 1):
        x, _ = xy(rnd, 0)
        parts.append(f'<text x="{x}" y="{height - 12}" font-size="11" text-anchor="middle">{rnd}</text>')
    for i, c in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        points = [xy(r["round"], r["server_accuracy"] or 0) for r in c["rounds"]]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline class="series" data-campaign="{html.escape(c["id"])}" fill="none" '
                     f'stroke="{color}" stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]
    if not runs:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no rounds yet</text>')
    parts.append("</svg>")
    legend = "".join(f'<li><span class="c{i % len(COLORS)}">&#9632;</span> '
                     f'{html.escape(c["id"])} ({html.escape(c["status"])})</li>'
                     for i, c in enumerate(runs))
    return "".join(parts) + f'<ul class="legend">{legend}</ul>'


def field_chart(agent: str, points: list[HourPoint], now: float, days: float,
                baseline: Optional[float] = None, drifting: bool = False, width: int = 180, height: int = 40) -> str:
    """A sparkline of the share per hour over the last `days` (a gap where an hour had no
    images), with the drift baseline dashed when there is one."""
    hours = max(2, math.ceil(days * 24))
    first = math.floor(now / 3600) - hours + 1
    pad = 3

    def xy(hour: int, share: float) -> tuple[float, float]:
        return pad + (width - 2 * pad) * (hour - first) / (hours - 1), pad + (height - 2 * pad) * (1 - share)

    color = "#d62728" if drifting else "#1f77b4"
    parts = [f'<svg class="field-chart" data-agent="{html.escape(agent)}" data-hours="{len(points)}" '
             f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="low-confidence share per hour, last {days:g} days">'
             f'<title>low-confidence share per hour, last {days:g} days (0 to 1)</title>'
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>']
    if baseline is not None:
        _, y = xy(first, baseline)
        parts.append(f'<line class="baseline" x1="{pad}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#999" stroke-dasharray="3,2"/>')
    runs: list[list[HourPoint]] = []
    for point in points:
        if runs and point.hour == runs[-1][-1].hour + 1:
            runs[-1].append(point)
        else:
            runs.append([point])
    for run in runs:
        if len(run) == 1:
            x, y = xy(run[0].hour, run[0].share)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}"/>')
        else:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(p.hour, p.share) for p in run))
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
    if not points:
        parts.append(f'<text x="{width / 2}" y="{height / 2 + 4}" font-size="11" text-anchor="middle">'
                     'no field images</text>')
    return "".join(parts) + "</svg>"


def _field_cells(agent: AgentRow, points: list[HourPoint], now: float, days: float) -> str:
    esc = html.escape
    view = agent.field_view
    if view is None:
        return '<td class="field">-</td><td>-</td>'
    mean = view.totals.mean_confidence
    conf = "" if mean is None else f"mean conf {mean:.2f}, "
    numbers = f'{esc(view.text())}<br>{conf}{_version(view.totals.model_version)}, last {view.window_hours:g} h'
    baseline = view.drift.baseline.share if view.drift.compared else None
    chart = field_chart(agent.name, points, now, days, baseline, view.drift.drifting)
    return f'<td class="field">{numbers}</td><td>{chart}</td>'


def _problem_cell(agent: AgentRow) -> str:
    text = html.escape("; ".join(agent.problems) or "-")
    return f'<td class="drift">{text}</td>' if agent.drifting else f"<td>{text}</td>"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _version(version: int | None) -> str:
    return "-" if version is None else f"v{int(version)}"


def _last_round_labels(campaign: dict) -> str:
    rounds = campaign.get("rounds") or []
    return (labels_used(rounds[-1].get("agents") or []) if rounds else None) or "-"


def _agent_row(agent: AgentRow, points: list[HourPoint], now: float, days: float) -> str:
    esc = html.escape
    beat = agent.heartbeat
    per_label = ", ".join(f"{label} {counts.total}" for label, counts in beat.images.labels.items()) if beat else ""
    last = beat.last_training if beat else None
    acc = last.local_test_accuracy if last else None
    state = "online" if agent.online else "offline"
    return (f'<tr class="agent" data-agent="{esc(agent.name)}"><td>{esc(agent.name)}</td>'
            f'<td class="{state}">{state}</td>'
            f'<td>{esc(agent.supernode_state or "-")}</td><td>{_age(agent.heartbeat_age_seconds)}</td>'
            f'<td>{esc(agent.model_detail or "-")}</td>'
            f'<td class="images">{esc(per_label or "-")}<br>{esc(agent.images_text or "-")}</td>'
            f'<td>{int(beat.images.quarantined) if beat else "-"}</td>'
            f'<td>{esc((last.campaign if last else "") or "-")}</td>'
            f'<td>{"-" if acc is None else f"{acc:.2f}"}</td>{_field_cells(agent, points, now, days)}'
            f'{_problem_cell(agent)}</tr>')


def render_status_page(fleet: list[AgentRow], campaigns: list[dict], models: list[dict],
                       champion: int | None, charts: dict[str, list[HourPoint]] | None = None,
                       chart_days: float = 3, now: float | None = None) -> str:
    """The page; `charts`: each agent's low-confidence share per hour (none: empty charts)."""
    esc = html.escape
    now = now or time.time()
    rows = [_agent_row(agent, (charts or {}).get(agent.name, []), now, chart_days) for agent in fleet]
    camp_rows = "".join(
        f'<tr><td>{esc(c["id"])}</td><td>{esc(c["trigger"])}</td><td>{esc(c["status"])}</td>'
        f'<td>{esc(c["reason"] or "")}</td><td>{_version(c["model_version"])}</td>'
        f'<td class="labels">{esc(_last_round_labels(c))}</td>'
        f'<td class="declined">{esc(declined_text(c.get("rounds") or []) or "-")}</td></tr>' for c in campaigns)
    def score(m: dict) -> str:
        return "-" if m["score"] is None else f"{m['score']:.3f}"

    model_rows = "".join(
        f'<tr><td>v{int(m["version"])}{" (champion)" if m["version"] == champion else ""}</td>'
        f'<td>{esc(m["status"])}</td><td>{score(m)}</td>'
        f'<td>{esc(m["reason"] or "")}</td></tr>' for m in models[:10])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>fed-coordinator</title>
<meta http-equiv="refresh" content="30">
<style>{STYLE}</style></head><body>
<h1>Federated fleet</h1><p>Updated {stamp}</p>
<h2>Agents</h2><table id="fleet"><tr><th>agent</th><th>heartbeat</th><th>SuperNode</th><th>last seen</th>
<th>model</th><th>images</th><th>quarantined</th><th>last campaign</th><th>local acc</th><th>field</th>
<th>low-confidence share per hour</th><th>problem</th></tr>{"".join(rows)}</table>
<h2>Server accuracy per round</h2>{accuracy_chart(campaigns)}
<h2>Campaigns</h2><table id="campaigns"><tr><th>id</th><th>trigger</th><th>status</th><th>reason</th><th>model</th>
<th>trained on (last round)</th><th>declined</th></tr>{camp_rows}</table>
<h2>Models</h2><table id="models"><tr><th>version</th><th>status</th><th>score</th><th>reason</th></tr>{model_rows}</table>
</body></html>"""


def status_page_html(state: State, online_after: float, monitoring: MonitoringSection) -> str:
    """The page from the state as it is now (the `/` route)."""
    now = time.time()
    fleet = fleet_view(state, online_after, now, monitoring)
    charts = {row.name: hourly_low_confidence(state, row.name, now, monitoring.chart_days) for row in fleet}
    return render_status_page(fleet, state.campaigns(10), state.models(), state.champion(), charts,
                              monitoring.chart_days, now)
