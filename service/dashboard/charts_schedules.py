"""The schedule page's charts (issue 24), drawn from :mod:`schedule_pbt` and
:mod:`schedule_asha`'s data, each a cartesian Plotly figure (served lazily, like the
study page's charts, under ``/studies/{id}/schedule/charts/{name}``):

* ``pbt-members``: the objective per step of every segment, one colour per member;
  a member's segments join where it continued its own line, and a dashed connector
  in its colour goes from the copied parent's end point to its first point where it
  exploited another member;
* ``pbt-schedule``: the best trial's params along its lineage, a step chart per param;
* ``asha-rungs``: per rung, the trials that reached it, are paused there and were
  promoted from it.

Every point carries its trial number (``customdata``): a click opens the trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from service.dashboard.charts_base import PALETTE, ChartResult, empty, esc, fmt, layout

#: One colour per member (cycled past the palette).
MEMBER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#17becf", *PALETTE)


def member_color(member: int) -> str:
    return MEMBER_COLORS[member % len(MEMBER_COLORS)]


def _member_line(member: int, segs: list[dict[str, Any]], by_number: dict[Any, Any]) -> go.Scatter:
    """One member's segments; a segment continuing its own parent joins its end point,
    one that copied another member starts a new piece (its jump is drawn apart)."""
    xs: list[Any] = []
    ys: list[Any] = []
    nums: list[Any] = []
    for s in segs:
        if not s["points"]:
            continue
        parent = by_number.get(s["parent_number"]) or {}
        own = parent.get("member") == member
        if xs and not own:
            xs, ys, nums = [*xs, None], [*ys, None], [*nums, None]
        if own and parent["points"]:
            start = next((p for p in parent["points"] if p[0] == s["start_step"]), None)
            if start is not None and (not xs or xs[-1] != start[0]):
                xs, ys, nums = [*xs, start[0]], [*ys, start[1]], [*nums, parent["number"]]
        for step, value in s["points"]:
            xs.append(step)
            ys.append(value)
            nums.append(s["number"])
    return _member_trace(
        member,
        xs,
        ys,
        {"width": 2},
        customdata=nums,
        mode="lines+markers",
        name=f"member {member}",
        marker={"size": 5},
        connectgaps=False,
        hovertemplate=f"member {member}<br>step %{{x}}: %{{y:.4g}}<br>trial #%{{customdata}}"
        "<extra></extra>",
    )


def _member_trace(
    member: int, xs: list[Any], ys: list[Any], line: dict[str, Any], **trace: Any
) -> go.Scatter:
    """A trace of one PBT member: in the member's legend group and colour (``line`` adds
    width and dash, ``trace`` the rest), so its own line and its exploit jumps go together."""
    return go.Scatter(
        x=xs,
        y=ys,
        legendgroup=f"m{member}",
        line={"color": member_color(member)} | line,
        **trace,
    )


def _jump_line(member: int, jumps: list[dict[str, Any]]) -> go.Scatter:
    xs: list[Any] = []
    ys: list[Any] = []
    text: list[Any] = []
    for j in jumps:
        words = (
            f"member {member} copies member {j['from_member']} (trial #{j['from_number']}) "
            f"at step {j['step']}: trial #{j['to_number']}"
        )
        xs += [j["start"][0], j["end"][0], None]
        ys += [j["start"][1], j["end"][1], None]
        text += [words, words, None]
    return _member_trace(
        member,
        xs,
        ys,
        {"width": 1.5, "dash": "dash"},
        text=text,
        mode="lines",
        name=f"member {member}: exploit",
        showlegend=False,
        hovertemplate="%{text}<extra></extra>",
    )


def pbt_members(data: dict[str, Any]) -> ChartResult:
    """Members over time (see the module docstring)."""
    segs = data["segments"]
    if not any(s["points"] for s in segs):
        return empty("No segment has reported yet: the chart appears with the first report.")
    by_number = {s["number"]: s for s in segs if s["number"] is not None}
    fig = go.Figure()
    for member in data["members"]:
        fig.add_trace(_member_line(member, [s for s in segs if s["member"] == member], by_number))
    for member in data["members"]:
        mine = [j for j in data["jumps"] if j["member"] == member]
        if mine:
            fig.add_trace(_jump_line(member, mine))
    jumps = len(data["jumps"])
    note = f"{jumps} exploit jump{'s' if jumps != 1 else ''} (dashed: a member copies another)"
    layout(
        fig,
        "Members over time",
        xaxis_title="step (epoch)",
        yaxis_title=esc(data["objective"]),
        hovermode="closest",
    )
    return ChartResult(fig, note=note)


def pbt_schedule(data: dict[str, Any]) -> ChartResult:
    """The best trial's hyperparameter schedule: one step chart per param."""
    best = data["best"]
    if best is None:
        return empty("No segment has ended yet: the best member's schedule appears then.")
    names = [n for n in data["params"] if any(v is not None for _, v in best["schedule"][n])]
    if not names:
        return empty("The best trial's lineage has no recorded params.")
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    numbers = best["lineage"]
    log = set(data["log_params"])
    for i, name in enumerate(names, start=1):
        steps = best["schedule"][name]
        fig.add_trace(
            go.Scatter(
                x=[s for s, _ in steps],
                y=[v for _, v in steps],
                customdata=[*numbers, numbers[-1]],
                mode="lines+markers",
                line={"shape": "hv", "color": member_color(best["member"])},
                name=esc(name),
                hovertemplate=f"{esc(name)} = %{{y:.4g}} from step %{{x}}<br>trial #%{{customdata}}"
                "<extra></extra>",
            ),
            row=i,
            col=1,
        )
        fig.update_yaxes(title_text=esc(name), row=i, col=1, type="log" if name in log else None)
    fig.update_xaxes(title_text="step (epoch)", row=len(names), col=1)
    chain = " → ".join(f"#{n}" for n in numbers)
    title = f"Schedule of the best trial #{best['number']} ({fmt(best['value'])})"
    layout(fig, title, showlegend=False, height=max(260, 170 * len(names)))
    return ChartResult(fig, note=f"lineage {chain}")


def asha_rungs(data: dict[str, Any]) -> ChartResult:
    """Rung occupancy: reached, paused and promoted per rung."""
    rungs = data["rungs"]
    if not any(r["reached"] for r in rungs):
        return empty("No trial has reached a rung yet.")
    labels = [f"rung {r['rung']} (step {r['step']})" for r in rungs]
    fig = go.Figure()
    for key, color in (("reached", "#1f77b4"), ("paused", "#ff7f0e"), ("promoted", "#2ca02c")):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[r[key] for r in rungs],
                name=key,
                marker_color=color,
                hovertemplate=f"%{{x}}: %{{y}} {key}<extra></extra>",
            )
        )
    promoted = len(data["promotions"])
    layout(fig, "Rung occupancy", barmode="group", yaxis_title="trials")
    return ChartResult(fig, note=f"{promoted} promotion{'s' if promoted != 1 else ''}")


@dataclass(frozen=True)
class ScheduleChart:
    """A chart of the schedule page: for studies whose schedule is ``kind``."""

    name: str
    title: str
    kind: str
    build: Callable[[dict[str, Any]], ChartResult]
    wide: bool = True


SCHEDULE_CHARTS: dict[str, ScheduleChart] = {
    c.name: c
    for c in [
        ScheduleChart("pbt-members", "Members over time", "pbt", pbt_members),
        ScheduleChart(
            "pbt-schedule", "Hyperparameter schedule of the best member", "pbt", pbt_schedule
        ),
        ScheduleChart("asha-rungs", "Rung occupancy", "asha", asha_rungs),
    ]
}
