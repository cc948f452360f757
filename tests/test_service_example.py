"""examples/service.py served by uvicorn in a real process: an order over the
approval limit waits (suspended, no worker slot held), a second process approves
it over HTTP, another order is refused from the CLI, and the service stopped and
started again between the steps loses nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, db: Path) -> None:
        self.port = free_port()
        env = dict(os.environ, ORDERS_DB=str(db), PORT=str(self.port))
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "service.py")],
            env=env,
            cwd=str(db.parent),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/orders/0")
                return
            except (urllib.error.URLError, ConnectionError):
                assert self.proc.poll() is None, self.proc.communicate()[0]
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.1)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return out


def wait_status(svc: Service, order: int, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        _, body = svc.call("GET", f"/orders/{order}")
        if body.get("status") == status:
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_an_order_waits_for_approval_sent_from_another_process(tmp_path: Path) -> None:
    db = tmp_path / "orders.db"
    svc = Service(db)
    try:
        assert svc.call("POST", "/orders/7", {"item": "piano", "amount": 4200}) == (
            202,
            {"job": "order-7"},
        )
        assert svc.call("POST", "/orders/8", {"item": "organ", "amount": 900}) == (
            202,
            {"job": "order-8"},
        )
        wait_status(svc, 7, "suspended")  # waiting, holding no worker slot
        wait_status(svc, 8, "suspended")
    finally:
        svc.stop()
    # The service is down; a second one (another process) takes the decisions.
    other = Service(db)
    try:
        assert other.call("POST", "/orders/7/approve", True) == (
            202,
            {"approval": True},
        )
        assert other.call("POST", "/orders/7/approve", "maybe") == (
            422,
            {"error": "send true or false"},
        )
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "duron",
                "jobs",
                "send",
                "--import",
                "service",
                f"sqlite:///{db}",
                "order-8",
                "approval",
                "false",
            ],
            cwd=str(ROOT / "examples"),
            env=dict(os.environ, ORDERS_DB=str(db)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 0, refused.stderr
        _, body = other.call("GET", "/orders/7?wait=20")
        assert body["status"] == "completed"
        assert body["receipt"]["order_id"] == 7
        body = wait_status(other, 8, "failed")
        assert body["error"] == "order 8 was not approved"
    finally:
        out = other.stop()
    assert out.count("charged 4200.0 for order 7") == 1
    assert "for order 8" not in out
