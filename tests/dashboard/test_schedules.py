"""The schedule page (issue 24): a PBT study's members, jumps, lineage and the best
member's hyperparameter schedule; a promotion-ASHA study's rungs and promotions. The
studies are made through the trial protocol (no training); what the API answers is
checked against Optuna's own record of the trials (user attributes, params)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dashboard.conftest import api, chart
from tests.dashboard.schedule_data import (
    ASHA_VALUES,
    PBT_VALUES,
    asha_study,
    finish_promoted,
    pbt_study,
)
from tests.service.lease_helpers import create_study, optuna_trials

DASH = "/api/v1/dashboard/studies"


def _expected_lineage(ctx: Any, name: str) -> tuple[int, list[Any]]:
    """Optuna's best trial and its parents (``pbt_parent``) back to a first segment."""
    by_number = {t.number: t for t in optuna_trials(ctx, name)}
    best = max((t for t in by_number.values() if t.state.name == "COMPLETE"), key=lambda t: t.value)
    chain = [best]
    while chain[-1].user_attrs["pbt_parent"] is not None:
        chain.append(by_number[chain[-1].user_attrs["pbt_parent"]])
    return best.number, chain[::-1]


def test_pbt_segments_jumps_and_the_best_members_schedule(viewer, tokens, ctx) -> None:
    made = pbt_study(viewer, tokens, ctx)
    data = api(viewer, f"/dashboard/studies/{made.study_id}/schedule/pbt")
    frozen = {t.number: t for t in optuna_trials(ctx, made.name)}
    segs = {s["number"]: s for s in data["segments"]}
    assert sorted(segs) == sorted(frozen) == list(range(6))
    for number, s in segs.items():
        attrs = frozen[number].user_attrs
        assert (s["member"], s["segment"]) == (attrs["pbt_member"], attrs["pbt_segment"])
        assert s["parent_number"] == attrs["pbt_parent"]
        assert s["start_step"] == attrs["pbt_start_step"] and s["state"] == "done"
        changed = dict(attrs["pbt_changed"])
        assert s["exploited_member"] == changed.pop("exploited_member", None)
        assert s["changed"] == changed and s["params"] == frozen[number].params
        values = PBT_VALUES[(s["member"], s["segment"])]
        steps = [s["start_step"] + i + 1 for i in range(len(values))]
        assert s["points"] == [list(p) for p in zip(steps, values, strict=True)]

    # A jump wherever a segment's parent is another member's trial: from the parent's
    # report at the child's start step to the child's first report.
    expected = []
    for number, t in sorted(frozen.items()):
        parent = t.user_attrs["pbt_parent"]
        if (
            parent is not None
            and frozen[parent].user_attrs["pbt_member"] != t.user_attrs["pbt_member"]
        ):
            start = t.user_attrs["pbt_start_step"]
            expected.append((parent, number, [start, frozen[parent].intermediate_values[start]]))
    assert len(expected) == 2  # member 1 copies member 0 at step 2, member 0 copies 1 at 4
    got = [(j["from_number"], j["to_number"], j["start"]) for j in data["jumps"]]
    assert sorted(got) == sorted(expected)
    for j in data["jumps"]:
        assert j["end"] == segs[j["to_number"]]["points"][0]
        assert j["member"] == segs[j["to_number"]]["member"] != j["from_member"]

    # The best trial's schedule: the params of each trial along its lineage, from its start.
    best_number, chain = _expected_lineage(ctx, made.name)
    best = data["best"]
    assert best["number"] == best_number and best["lineage"] == [t.number for t in chain]
    assert len({t.user_attrs["pbt_member"] for t in chain}) == 2  # it crossed members
    for name in ("lr", "momentum"):
        steps = [[t.user_attrs["pbt_start_step"], t.params[name]] for t in chain]
        assert best["schedule"][name] == [*steps, [6, chain[-1].params[name]]]
    assert data["params"] == ["lr", "momentum"] and data["log_params"] == ["lr"]


def test_asha_rung_occupancy_and_promotions(viewer, tokens, ctx) -> None:
    made = asha_study(viewer, tokens)
    url = f"/dashboard/studies/{made.study_id}/schedule/asha"
    data = api(viewer, url)
    best = max(made.trials, key=lambda n: made.trials[n]["rung0"])
    assert data["rung_steps"] == [1, 3]
    assert data["rungs"] == [
        {"rung": 0, "step": 1, "reached": 3, "paused": 2, "promoted": 1, "ended": 0},
        {"rung": 1, "step": 3, "reached": 0, "paused": 0, "promoted": 0, "ended": 0},
    ]
    assert data["paused"] == sorted(n for n in made.trials if n != best)
    [promotion] = data["promotions"]
    assert (promotion["number"], promotion["from_rung"], promotion["to_rung"]) == (best, 0, 1)
    assert promotion["value"] == max(ASHA_VALUES) and promotion["resumed_at"] is not None
    assert promotion["next_value"] is None  # not at the top rung yet

    finish_promoted(made, 0.9)  # fills the top rung: the others end pruned at rung 0
    data = api(viewer, url)
    assert data["rungs"][0] | {"paused": 0} == data["rungs"][0]
    assert data["rungs"][0]["ended"] == 2 and data["rungs"][1]["reached"] == 1
    assert data["paused"] == []
    assert [(p["number"], p["next_value"]) for p in data["promotions"]] == [(best, 0.9)]
    bars = chart_of(viewer, made.study_id, "asha-rungs")["figure"]["data"]
    assert [b["name"] for b in bars] == ["reached", "paused", "promoted"]
    assert [list(b["y"]) for b in bars] == [[3, 1], [0, 0], [1, 0]]


def chart_of(client: Any, study: int, name: str) -> dict[str, Any]:
    response = client.get(f"{DASH}/{study}/schedule/charts/{name}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pbt_charts_draw_members_jumps_and_the_schedule(viewer, tokens, ctx) -> None:
    made = pbt_study(viewer, tokens, ctx)
    data = api(viewer, f"/dashboard/studies/{made.study_id}/schedule/pbt")
    members = chart_of(viewer, made.study_id, "pbt-members")
    traces = members["figure"]["data"]
    lines = [t for t in traces if t.get("showlegend") is not False]
    dashed = [t for t in traces if t.get("line", {}).get("dash") == "dash"]
    assert [t["name"] for t in lines] == ["member 0", "member 1"]
    assert len({t["line"]["color"] for t in lines}) == 2
    # every reported point is on its member's line, with its trial number
    for t, member in zip(lines, (0, 1), strict=True):
        drawn = {(x, y, n) for x, y, n in zip(t["x"], t["y"], t["customdata"], strict=True)}
        for s in data["segments"]:
            if s["member"] == member:
                assert {(p[0], p[1], s["number"]) for p in s["points"]} <= drawn
    # each jump dashed, in the colour of the member that copied
    segments = [
        (t["line"]["color"], x0, y0, x1, y1)
        for t in dashed
        for x0, y0, x1, y1 in zip(
            t["x"][0::3], t["y"][0::3], t["x"][1::3], t["y"][1::3], strict=True
        )
    ]
    colour = {t["name"]: t["line"]["color"] for t in lines}
    assert sorted(segments) == sorted(
        (colour[f"member {j['member']}"], *j["start"], *j["end"]) for j in data["jumps"]
    )
    assert "2 exploit jumps" in members["note"]

    schedule = chart_of(viewer, made.study_id, "pbt-schedule")
    by_name = {t["name"]: t for t in schedule["figure"]["data"]}
    for name in ("lr", "momentum"):
        steps = data["best"]["schedule"][name]
        assert list(by_name[name]["x"]) == [s for s, _ in steps] == [0, 2, 4, 6]
        assert list(by_name[name]["y"]) == [v for _, v in steps]
        assert by_name[name]["line"]["shape"] == "hv"
    assert schedule["figure"]["layout"]["yaxis"]["type"] == "log"  # lr is on a log scale


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unknown_studies_and_missing_schedules_are_4xx_naming_the_field(
    viewer, tokens, ctx
) -> None:
    made = asha_study(viewer, tokens)
    plain = create_study(viewer, tokens, name="plain")["study_id"]  # (after: nothing leased)
    missing = viewer.get(f"{DASH}/9999/schedule/pbt")
    assert missing.status_code == 404 and missing.json()["field"] == "study_id"
    for study, path, have in (
        (made.study_id, "pbt", "its schedule is asha"),
        (plain, "asha", "it has none"),
        (plain, "charts/pbt-members", "it has none"),
        (made.study_id, "charts/pbt-schedule", "its schedule is asha"),
    ):
        answer = viewer.get(f"{DASH}/{study}/schedule/{path}")
        assert answer.status_code == 409, (path, answer.text)
        assert answer.json()["field"] == "schedule" and have in answer.json()["detail"]
    unknown = viewer.get(f"{DASH}/{made.study_id}/schedule/charts/nope")
    assert unknown.status_code == 404 and unknown.json()["field"] == "name"
    assert viewer.get(f"/dashboard/studies/{plain}/schedule").status_code == 409
    assert viewer.get("/dashboard/studies/9999/schedule").status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_study_page_links_the_schedule_page_and_it_renders(viewer, tokens, ctx) -> None:
    pbt = pbt_study(viewer, tokens, ctx)
    asha = asha_study(viewer, tokens)
    plain = create_study(viewer, tokens, name="plain")["study_id"]
    assert 'id="schedule-link"' not in viewer.get(f"/dashboard/studies/{plain}").text
    for made, kind, charts, tables in (
        (pbt, "pbt", ["pbt-members", "pbt-schedule"], ["lineage-table"]),
        (asha, "asha", ["asha-rungs"], ["rungs-table", "promotions-table"]),
    ):
        study = viewer.get(f"/dashboard/studies/{made.study_id}")
        link = f'href="/dashboard/studies/{made.study_id}/schedule"'
        assert study.status_code == 200 and link in study.text
        assert f"schedule: {kind}" in study.text
        page = viewer.get(f"/dashboard/studies/{made.study_id}/schedule")
        assert page.status_code == 200 and page.headers["content-security-policy"]
        assert f'data-schedule="{kind}"' in page.text and 'data-page="schedule"' in page.text
        assert f'href="/dashboard/studies/{made.study_id}">{made.name}</a>' in page.text
        for name in charts:
            assert f'data-schedule-chart="{name}"' in page.text
        for table in tables:
            assert f'id="{table}"' in page.text
    assert (
        "Population-based training"
        in viewer.get(f"/dashboard/studies/{pbt.study_id}/schedule").text
    )
    # (the study page's own charts stay as they were)
    assert chart(viewer, pbt.study_id, "history")["chart"] == "history"
