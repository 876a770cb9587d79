"""The explorer's web application (Starlette, Jinja2 templates) and its server (uvicorn on
127.0.0.1).

Pages: ``/`` the task, ``/rounds`` the timeline, ``/rounds/N`` one round, ``/accuracy``,
``/rewards``, ``/network``. JSON: ``/api/version`` (what the page polls for live updates: it
reloads its content when the version changes), ``/api/rounds`` (the timeline), ``POST
/api/rounds/N/audit`` (round N recomputed by :meth:`fedledger.audit.Auditor.audit_round`, each
check with its verdict). Everything the page needs is served from the package (templates,
one stylesheet, one small script): it works offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fedledger.cli.task import ether
from fedledger.errors import ConfigError, FedledgerError
from fedledger.explorer import charts
from fedledger.explorer.data import Snapshot, Source
from fedledger.explorer.views import (
    accuracy_view,
    network_view,
    rewards_view,
    round_view,
    short,
    task_view,
    timeline,
)

__all__ = ["HOST", "create_app", "listen", "running", "serve"]

HOST = "127.0.0.1"
"""The explorer listens on the loopback interface only."""

_HERE = Path(__file__).parent
POLL_MS = 2000
"""How often the page asks whether the data changed (milliseconds)."""


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:g} s"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    env = templates.env
    env.filters["ether"] = ether
    env.filters["short"] = short
    env.filters["seconds"] = _seconds
    env.filters["pct"] = _pct
    env.globals["poll_ms"] = POLL_MS
    return templates


class _Audits:
    """Round audits, one at a time, remembered per data version."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._done: dict[tuple[str, int], dict[str, Any]] = {}

    def audit(self, rnd: int) -> dict[str, Any]:
        with self._lock:
            key = (self.source.version(), rnd)
            if key not in self._done:
                verdict = self.source.auditor().audit_round(rnd)
                self._done[key] = {
                    "round": verdict.round,
                    "status": verdict.status,
                    "ok": verdict.ok,
                    "checks": [dataclasses.asdict(c) for c in verdict.checks],
                    "failures": [f"{c.name}: {c.detail}" for c in verdict.failures],
                }
            return self._done[key]


def create_app(source: Source) -> Starlette:
    """The explorer on ``source`` (a run directory or a task on a chain)."""
    templates = _templates()
    audits = _Audits(source)

    def page(request: Request, name: str, **context: Any) -> Response:
        try:
            snap = source.snapshot()
        except FedledgerError as exc:
            return templates.TemplateResponse(
                request,
                "error.html",
                {
                    "message": str(exc),
                    "source": source.description,
                    "active": "",
                    "version": "",
                    "in_progress": False,
                },
                status_code=503,
            )
        extra = context.pop("build")(snap) if "build" in context else {}
        if extra is None:
            return templates.TemplateResponse(
                request,
                "error.html",
                {
                    "message": "no such round",
                    "source": source.description,
                    "active": "",
                    "version": snap.version,
                    "in_progress": snap.in_progress,
                },
                status_code=404,
            )
        return templates.TemplateResponse(
            request,
            name,
            {
                "source": snap.source,
                "version": snap.version,
                "in_progress": snap.in_progress,
                "notes": snap.notes,
                **context,
                **extra,
            },
        )

    def task_page(request: Request) -> Response:
        return page(request, "task.html", active="task", build=lambda s: {"task": task_view(s)})

    def rounds_page(request: Request) -> Response:
        def build(s: Snapshot) -> dict[str, Any]:
            rows = timeline(s)
            bars = {
                r.round: Markup(charts.stake_bar(r.stake, r.quorum, r.active_stake)) for r in rows
            }
            return {"rows": rows, "bars": bars, "ledger": s.status is not None}

        return page(request, "rounds.html", active="rounds", build=build)

    def round_page(request: Request) -> Response:
        rnd = int(request.path_params["round"])

        def build(s: Snapshot) -> dict[str, Any] | None:
            view = round_view(s, rnd)
            if view is None:
                return None
            bar = Markup(
                charts.stake_bar(view.stake, view.quorum, view.active_stake, width=320, height=18)
            )
            return {"r": view, "bar": bar, "ledger": s.status is not None}

        return page(request, "round.html", active="rounds", build=build)

    def accuracy_page(request: Request) -> Response:
        def build(s: Snapshot) -> dict[str, Any]:
            view = accuracy_view(s)
            return {
                "acc": view,
                "chart": Markup(charts.accuracy_chart(view)),
                "local_chart": Markup(charts.accuracy_chart(view, local=True)),
            }

        return page(request, "accuracy.html", active="accuracy", build=build)

    def rewards_page(request: Request) -> Response:
        def build(s: Snapshot) -> dict[str, Any]:
            view = rewards_view(s)
            return {
                "rw": view,
                "chart": Markup(charts.rewards_chart(view)),
                "ledger": s.status is not None,
            }

        return page(request, "rewards.html", active="rewards", build=build)

    def network_page(request: Request) -> Response:
        def build(s: Snapshot) -> dict[str, Any]:
            view = network_view(s)
            return {"net": view, "graph": Markup(charts.network_graph(view))}

        return page(request, "network.html", active="network", build=build)

    def api_version(request: Request) -> Response:
        try:
            snap = source.snapshot()
        except FedledgerError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"version": snap.version, "in_progress": snap.in_progress})

    def api_rounds(request: Request) -> Response:
        try:
            rows = timeline(source.snapshot())
        except FedledgerError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse([dataclasses.asdict(r) for r in rows])

    def api_audit(request: Request) -> Response:
        rnd = int(request.path_params["round"])
        try:
            return JSONResponse(audits.audit(rnd))
        except ConfigError as exc:
            return JSONResponse({"round": rnd, "error": str(exc)}, status_code=404)
        except FedledgerError as exc:
            return JSONResponse({"round": rnd, "error": str(exc)}, status_code=503)

    routes = [
        Route("/", task_page),
        Route("/rounds", rounds_page),
        Route("/rounds/{round:int}", round_page),
        Route("/accuracy", accuracy_page),
        Route("/rewards", rewards_page),
        Route("/network", network_page),
        Route("/api/version", api_version),
        Route("/api/rounds", api_rounds),
        Route("/api/rounds/{round:int}/audit", api_audit, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(_HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes)


def listen(port: int, host: str = HOST) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port the OS picks); a busy or forbidden
    port is a :class:`~fedledger.errors.ConfigError`."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"must be a port number in [0, 65535], got {port}", field="port")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="port"
        ) from None
    return sock


def _server(app: Starlette) -> uvicorn.Server:
    # log_config=None: uvicorn leaves the process's logging alone (its default dictConfig would
    # replace every handler of the process and bind its own to whatever sys.stderr is now).
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", log_config=None
    )
    return uvicorn.Server(config)


def serve(app: Starlette, sock: socket.socket, *, ready: Callable[[str], None]) -> None:
    """Serve ``app`` on ``sock`` until interrupted; ``ready`` gets the page's URL first."""
    host, port = sock.getsockname()[:2]
    ready(f"http://{host}:{port}/")
    _server(app).run(sockets=[sock])


@contextlib.contextmanager
def running(app: Starlette, *, port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` in a background thread for the block; yields its URL (tests, scripts)."""
    sock = listen(port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:  # a condition with a deadline: uvicorn sets it once serving
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the explorer did not start within {timeout} s")
        time.sleep(0.02)
    host, bound = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{bound}/"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
