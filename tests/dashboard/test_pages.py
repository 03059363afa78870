"""Pages, sign-in, the trials table, workers, the incremental trial frame (HTTP level)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from bench.synthetic import demo, seeding
from service.dashboard.pages import CSP, SHOWN_STATES

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_pages_redirect_to_login_without_a_token(client, study_id) -> None:
    for path in ("/dashboard/", f"/dashboard/studies/{study_id}", "/dashboard/workers"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/dashboard/login?next={path}"


def test_login_sets_an_httponly_strict_cookie_and_logout_clears_it(
    client, tokens, study_id
) -> None:
    page = client.get("/dashboard/login")
    assert page.status_code == 200 and 'type="password"' in page.text
    response = client.post(
        "/dashboard/login",
        data={"token": tokens.viewer, "next": f"/dashboard/studies/{study_id}"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/studies/{study_id}"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("hpo_token=") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower() and "Path=/" in cookie
    study = client.get(f"/dashboard/studies/{study_id}")
    assert study.status_code == 200
    assert tokens.viewer not in study.text  # the dashboard never shows tokens
    # the cookie also authorizes the dashboard's API calls
    assert client.get(f"/api/v1/dashboard/studies/{study_id}/version").status_code == 200
    out = client.post("/dashboard/logout", follow_redirects=False)
    assert out.status_code == 303 and 'hpo_token=""' in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/dashboard/", follow_redirects=False).status_code == 303


def test_login_rejects_bad_tokens_foreign_origins_and_open_redirects(client, tokens) -> None:
    bad = client.post("/dashboard/login", data={"token": "hpo_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers
    foreign = client.post(
        "/dashboard/login",
        data={"token": tokens.viewer},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
    for target in ("https://evil.example/", "//evil.example/", "/dashboard\\..\\x"):
        response = client.post(
            "/dashboard/login",
            data={"token": tokens.viewer, "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/dashboard/"


def test_no_login_when_auth_is_disabled(settings) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(settings.model_copy(update={"auth": False}))
    try:
        with TestClient(app) as open_client:
            page = open_client.get("/dashboard/")
            assert page.status_code == 200 and "Sign out" not in page.text
            login = open_client.get("/dashboard/login", follow_redirects=False)
            assert login.status_code == 303
    finally:
        app.state.ctx.close()


def test_study_page_escapes_names_and_sends_a_strict_csp(viewer, ctx) -> None:
    spec = demo.demo_spec("x", ["adam", "<img src=x onerror=alert(2)>"])
    sid = seeding.seed_ask_tell(ctx, spec, 6, seed=2, external_name="<script>alert(1)</script>")
    page = viewer.get(f"/dashboard/studies/{sid}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP.split("style-src")[0]
    assert "<script>" not in page.text.replace("<script src=", "")  # no inline scripts


def test_study_page_links_exports_and_lists_charts(viewer, study_id) -> None:
    text = viewer.get(f"/dashboard/studies/{study_id}").text
    assert f"/api/v1/studies/{study_id}/export?format=csv" in text
    assert f"/api/v1/studies/{study_id}/export?format=json" in text
    for name in ("optimizers", "lr", "curves", "regularization", "history", "contour"):
        assert f'data-chart="{name}"' in text
    # No plotly.js script tag: lib.js loads each chart family's bundle when it is needed,
    # and the page preloads the first chart's (the 2-D partial bundle).
    assert '<script src="/dashboard/static/plotly' not in text
    assert 'rel="preload" href="/dashboard/static/plotly-cartesian.min.js?v=' in text
    assert 'data-chart="parallel" data-bundle="strict"' in text
    assert 'data-chart="lr" data-bundle="cartesian"' in text


def test_static_assets_come_from_the_package_and_are_cacheable(viewer, study_id) -> None:
    from service.dashboard.static import asset_url

    js = viewer.get("/dashboard/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert js.headers["cache-control"].startswith("public")
    page = viewer.get(f"/dashboard/studies/{study_id}").text
    assert asset_url("plotly.min.js") in page and "?v=" in asset_url("plotly.min.js")
    assert viewer.get("/dashboard/static/../config.py").status_code == 404


def test_static_assets_brotli_immutable_when_versioned_and_revalidated_by_etag(viewer) -> None:

    from service.dashboard.static import PLOTLY_JS, asset_url

    versioned = asset_url("plotly.min.js")
    raw = viewer.get(versioned, headers={"Accept-Encoding": "gzip, br"})
    assert raw.headers["content-encoding"] == "br"
    assert raw.headers["cache-control"] == "public, max-age=31536000, immutable"
    gz = viewer.get(versioned, headers={"Accept-Encoding": "gzip"})
    assert int(raw.headers["content-length"]) < int(gz.headers["content-length"])
    assert raw.content == PLOTLY_JS.read_bytes()  # httpx decodes brotli back
    refused = viewer.get(versioned, headers={"Accept-Encoding": "br;q=0, gzip"})
    assert refused.headers["content-encoding"] == "gzip"
    stale = viewer.get("/dashboard/static/plotly.min.js?v=0123456789ab")
    assert stale.headers["cache-control"] == "public, no-cache"  # not this content's URL
    etag = stale.headers["etag"]
    again = viewer.get("/dashboard/static/plotly.min.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content


def _plotly_js_version(head: str) -> str:
    found = re.search(r"plotly\.js (?:\(strict - minified\) )?v(\d+\.\d+\.\d+)", head)
    assert found, head
    return found.group(1)


def test_plotly_is_the_strict_build_of_the_plotly_js_the_figures_are_built_for(viewer) -> None:
    # The dashboard's CSP has no 'unsafe-eval': the regular bundle's WebGL charts
    # (parallel coordinates) need it, the strict build does not.
    import plotly

    served = viewer.get("/dashboard/static/plotly.min.js").text[:200]
    assert "strict" in served
    assert "unsafe-eval" not in viewer.get("/dashboard/").headers["content-security-policy"]
    shipped = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").open().read(200)
    # Same major version as the plotly.js that plotly.py builds the figures for.
    assert _plotly_js_version(served).split(".")[0] == _plotly_js_version(shipped).split(".")[0]


def test_static_assets_are_gzipped_when_asked_and_prefetched_before_the_study_page(
    viewer, study_id
) -> None:
    from service.dashboard.static import PLOTLY_JS

    url = "/dashboard/static/plotly.min.js"
    packed = viewer.get(url, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < PLOTLY_JS.stat().st_size / 2
    assert packed.content == PLOTLY_JS.read_bytes()  # httpx decodes it back
    plain = viewer.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == PLOTLY_JS.read_bytes()
    studies = viewer.get("/dashboard/").text
    assert 'rel="prefetch" href="/dashboard/static/plotly-cartesian.min.js?v=' in studies
    assert 'rel="prefetch"' not in viewer.get(f"/dashboard/studies/{study_id}").text


def test_studies_overview(viewer, study_id, ctx) -> None:
    seeding.create_study(ctx, demo.demo_spec("empty"))
    studies = {s["name"]: s for s in viewer.get("/api/v1/dashboard/studies").json()}
    seeded = studies["mnist-demo"]
    assert seeded["run_state"] == "running" and seeded["sampler"] == "tpe"
    counts = seeded["counts"]  # the API's TrialCounts
    assert counts == viewer.get(f"/api/v1/studies/{study_id}").json()["counts"]
    assert counts["total"] == 90 == sum(counts[s] for s in SHOWN_STATES)
    assert seeded["best"]["value"] > 0.9 and "lr" in seeded["best"]["settings"]
    assert seeded["best"]["settings"]["epochs"] == 10  # fixed settings are part of it
    assert studies["empty"]["best"] is None and studies["empty"]["counts"]["total"] == 0


def test_trials_table_filters_sorts_and_paginates(viewer, study_id) -> None:
    url = f"/api/v1/dashboard/studies/{study_id}/trials"
    page = viewer.get(url, params={"limit": 10, "offset": 10}).json()
    assert page["total"] == 90 and len(page["rows"]) == 10
    assert [r["number"] for r in page["rows"]] == list(range(10, 20))
    best = viewer.get(url, params={"sort": "value", "order": "desc", "state": "COMPLETE"}).json()
    values = [r["value"] for r in best["rows"]]
    assert values == sorted(values, reverse=True)
    assert all(r["state"] == "complete" for r in best["rows"])
    adam = viewer.get(url, params={"optimizer": "adam", "sort": "lr"}).json()
    assert adam["total"] > 0 and all(r["settings"]["optimizer"] == "adam" for r in adam["rows"])
    lrs = [r["settings"]["lr"] for r in adam["rows"]]
    assert lrs == sorted(lrs)
    pruned = viewer.get(url, params={"state": "PRUNED"}).json()["rows"]
    assert pruned and all(r["diagnosis"].startswith("pruned at epoch") for r in pruned)
    assert all(r["worker"] for r in pruned)
    assert viewer.get(url, params={"sort": "nope"}).status_code == 422
    assert viewer.get(url, params={"limit": 5000}).status_code == 422


def test_trial_page_shows_settings_metrics_diagnosis_and_worker(viewer, study_id) -> None:
    url = f"/api/v1/dashboard/studies/{study_id}/trials"
    failed = viewer.get(url, params={"state": "FAIL"}).json()["rows"][0]
    page = viewer.get(f"/dashboard/studies/{study_id}/trials/{failed['number']}")
    assert page.status_code == 200
    text = page.text
    assert "diverged" in text and failed["worker"] in text
    for column in ("train_loss", "val_accuracy", "grad_norm", "samples_per_s", "peak_memory_mb"):
        assert column in text
    figure = viewer.get(f"/api/v1/dashboard/studies/{study_id}/trials/{failed['number']}/chart")
    names = {t["name"] for t in figure.json()["figure"]["data"]}
    assert {"train_loss", "val_accuracy"} <= names
    assert viewer.get(f"/dashboard/studies/{study_id}/trials/9999").status_code == 404


def test_workers_show_devices_current_trial_throughput_and_memory(viewer, ctx, study_id) -> None:
    workers = viewer.get("/api/v1/dashboard/workers").json()
    assert len(workers) == 4
    first = workers[0]
    assert first["devices"] and first["alive"] is True and first["recent_trials"] == 5
    assert 40_000 <= first["samples_per_s"] <= 90_000
    assert 300 <= first["peak_memory_mb"] <= 900
    assert viewer.get("/dashboard/workers").status_code == 200


def test_version_endpoint_and_incremental_frame(viewer, app, ctx, study_id) -> None:
    url = f"/api/v1/dashboard/studies/{study_id}/version"
    before = viewer.get(url).json()
    assert before["counts"]["complete"] > 0 and before["metrics"] > 0
    frame = app.state.dashboard.frames.peek((study_id,))
    study = optuna.load_study(study_name="mnist-demo", storage=ctx.store.storage)
    trial = study.ask()
    trial.suggest_categorical("optimizer", demo.OPTIMIZERS)
    running = viewer.get(url).json()
    assert running["trials"] != before["trials"] and running["counts"]["running"] == 1
    refreshed = app.state.dashboard.frames.peek((study_id,))
    assert refreshed is not frame
    assert refreshed.rows[0] is frame.rows[0]  # finished trials are kept, not reloaded
    study.tell(trial, 0.99)
    done = viewer.get(url).json()
    assert done["counts"]["running"] == 0
    assert done["best"]["number"] == 90 and done["best"]["value"] == 0.99


def test_compare_page_lists_the_studies(viewer, study_id) -> None:
    page = viewer.get("/dashboard/compare", params={"ids": f"{study_id},999,x"})
    assert page.status_code == 200 and "mnist-demo" in page.text
    assert 'data-compare="histories"' in page.text


def test_the_study_page_and_the_version_poll_share_one_cached_header(viewer, app, study_id) -> None:
    answers = app.state.dashboard.answers
    page = viewer.get(f"/dashboard/studies/{study_id}")
    assert page.status_code == 200 and 'data-count="queued"' in page.text
    misses = answers.misses
    polled = viewer.get(f"/api/v1/dashboard/studies/{study_id}/version").json()
    assert answers.misses == misses  # built once, by the page
    assert polled["counts"]["total"] == 90 and polled["best"]["value"] > 0.9


def test_the_study_page_carries_its_first_charts_cached_answer(viewer, ctx) -> None:
    """Once the first chart's answer is cached (start-up warming, an earlier visit), the
    page carries it in a JSON data block, no script, its ``<`` escaped; not before."""
    import json

    spec = demo.demo_spec("carried", ["adam", "<img src=x onerror=alert(3)>"])
    sid = seeding.seed_ask_tell(ctx, spec, 12, seed=5, external_name="</script><b>x")
    block = re.compile(r'<script type="application/json" id="first-chart" data-for="(\w+)">')
    viewer.app.state.dashboard.forget(sid)
    assert not block.search(viewer.get(f"/dashboard/studies/{sid}").text)
    first = re.findall(r'data-chart="(\w+)"', viewer.get(f"/dashboard/studies/{sid}").text)[0]
    answer = viewer.get(f"/api/v1/dashboard/studies/{sid}/charts/{first}").json()
    page = viewer.get(f"/dashboard/studies/{sid}").text
    found = block.search(page)
    assert found and found.group(1) == first
    carried = page[found.end() : page.index("</script>", found.end())]
    assert "<" not in carried and json.loads(carried) == answer
