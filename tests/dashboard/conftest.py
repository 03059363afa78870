"""Dashboard fixtures: seeded studies, a viewer client, a live server and a headless browser."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic import compression, demo, seeding

BROWSER_ARGS = [
    "--no-sandbox",
    # WebGL on the CPU (SwiftShader), so that the WebGL charts (parallel coordinates)
    # really draw here: --disable-gpu would turn WebGL off altogether.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def viewer(client, tokens):  # type: ignore[no-untyped-def]
    """A TestClient that sends the viewer token (the least role that may read)."""
    client.headers.update({"Authorization": f"Bearer {tokens.viewer}"})
    return client


@pytest.fixture
def workers(ctx) -> list[str]:  # type: ignore[no-untyped-def]
    return seeding.register_workers(ctx, 4)


@pytest.fixture
def study_id(ctx, workers) -> int:  # type: ignore[no-untyped-def]
    """A finished 90-trial study over every optimizer (bulk-inserted, so cheap)."""
    return seeding.seed_bulk(ctx, demo.demo_spec("mnist-demo"), 90, seed=1, workers=workers)


@pytest.fixture
def compression_id(ctx, workers) -> int:  # type: ignore[no-untyped-def]
    """A finished 150-trial accuracy-against-bytes study (bulk-inserted)."""
    spec = compression.compression_spec("mnist-compression")
    return seeding.seed_bulk(ctx, spec, 150, seed=4, workers=workers, simulate=compression.simulate)


def api(client: Any, path: str) -> Any:
    """The JSON answer of ``/api/v1{path}`` (asserting a 200)."""
    response = client.get(f"/api/v1{path}")
    assert response.status_code == 200, response.text
    return response.json()


def values(data: Any) -> list[Any]:
    """A Plotly data array as a list (numpy arrays travel as base64 typed arrays)."""
    if isinstance(data, dict) and "bdata" in data:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def chart(client: Any, study: int, name: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/dashboard/studies/{study}/charts/{name}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- browser


def chromium_path() -> str:
    """Debian's chromium (never a browser downloaded by a test tool)."""
    path = os.environ.get("HPO_CHROMIUM") or shutil.which("chromium")
    if path is None:
        if os.environ.get("HPO_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "HPO_REQUIRE_BROWSER=1 but chromium is not installed (apt install chromium)"
            )
        pytest.skip("chromium not installed (apt install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("HPO_REQUIRE_BROWSER") == "1":
            pytest.fail("HPO_REQUIRE_BROWSER=1 but playwright is not installed")
        pytest.skip("playwright not installed")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    base: str
    app: Any
    ctx: Any
    token: str
    study_id: int
    xss_study_id: int
    empty_study_id: int
    #: a multi-objective compression study (accuracy against bytes), 3 trials still running
    compression_study_id: int
    #: worker ids: [busy GPU, under-used GPU running a pack, GPU without telemetry, CPU]
    workers: list[str]
    #: trial numbers of the compression study the pack worker holds leases on
    pack: list[int]


def start_server(app: Any, port: int | None = None) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="dashboard-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real uvicorn server (auth on) over a small study run through ask/tell."""
    from service.app import create_app
    from tests.conftest import make_settings, mint_tokens

    tmp: Path = tmp_path_factory.mktemp("live")
    app = create_app(make_settings(f"sqlite:///{tmp / 'hpo.db'}", tmp))
    ctx = app.state.ctx
    app.state.dashboard.poll_interval_s = 0.5
    names = seeding.register_workers(ctx, 3)
    sid = seeding.seed_ask_tell(
        ctx, demo.demo_spec("mnist-optimizers"), 30, seed=3, workers=names, running=2
    )
    xss = seeding.seed_ask_tell(
        ctx,
        demo.demo_spec("xss", ["adam", "<img src=x onerror=alert(2)>"]),
        14,
        seed=4,
        external_name="<script>alert(1)</script>",
    )
    empty = seeding.create_study(ctx, demo.demo_spec("no-trials-yet"))
    comp, names, pack = _fleet_with_a_pack(ctx, sid, names)
    server, thread, base = start_server(app)
    token = mint_tokens(ctx).viewer
    yield LiveServer(base, app, ctx, token, sid, xss, empty, comp, names, pack)
    server.should_exit = True
    thread.join(timeout=10)
    ctx.close()


def _fleet_with_a_pack(ctx: Any, sid: int, names: list[str]) -> tuple[int, list[str], list[int]]:
    """A compression study, 4 of its trials running: 3 in one worker's pack, 1 on a CPU
    worker; telemetry: a busy GPU (one trial of ``sid``), an under-used GPU (the pack),
    a GPU without telemetry (the other trial of ``sid``), an under-used CPU."""
    comp = seeding.seed_ask_tell(
        ctx,
        compression.compression_spec("mnist-compression"),
        40,
        seed=5,
        workers=names,
        running=4,
        simulate=compression.simulate,
    )
    cpu = seeding.register_cpu_worker(ctx)
    busy, packed, silent = names
    seeding.hold_leases(ctx, sid, busy, [28])
    seeding.hold_leases(ctx, sid, silent, [29])
    pack = seeding.hold_leases(ctx, comp, packed, [36, 37, 38])
    seeding.hold_leases(ctx, comp, cpu, [39])
    seeding.set_telemetry(
        ctx,
        busy,
        {
            "util_pct": 93.0,
            "device_memory_mb": 30_500.0,
            "cpu_pct": 40.0,
            "host_memory_mb": 2_100.0,
        },
    )
    seeding.set_telemetry(
        ctx,
        packed,
        {"util_pct": 20.0, "device_memory_mb": 3_200.0, "cpu_pct": 12.0, "host_memory_mb": 1_500.0},
    )
    seeding.set_telemetry(ctx, silent, None)
    seeding.set_telemetry(ctx, cpu, {"util_pct": 15.0, "cpu_pct": 15.0, "host_memory_mb": 800.0})
    return comp, [busy, packed, silent, cpu], pack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        yield instance
        instance.close()


@dataclass
class Watched:
    page: Any
    errors: list[str]
    dialogs: list[str]


@pytest.fixture
def page(browser, live_server) -> Iterator[Watched]:  # type: ignore[no-untyped-def]
    """A signed-in page that records console errors, page errors and dialogs."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    watched = Watched(tab, [], [])
    tab.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: watched.errors.append(str(e)))

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    tab.goto(f"{live_server.base}/dashboard/login")
    tab.fill("#token", live_server.token)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/dashboard/")
    yield watched
    context.close()
