"""A small in-process HTTP client for ASGI applications (the web view's tests).

It calls the application directly, on the test's own event loop (so a store the
application uses lives on that loop), runs its lifespan around the ``async with``,
and never follows redirects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import anyio

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import TaskGroup


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: dict[str, str]
    text: str


class ASGIClient:
    def __init__(self, app: Any, host: str = "testserver") -> None:
        self.app = app
        self.host = host
        self._group: TaskGroup | None = None
        self._to_app, self._from_client = anyio.create_memory_object_stream[
            dict[str, Any]
        ](4)
        self._to_client, self._from_app = anyio.create_memory_object_stream[
            dict[str, Any]
        ](4)

    async def __aenter__(self) -> ASGIClient:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(
            self.app,
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            self._from_client.receive,
            self._to_client.send,
        )
        await self._to_app.send({"type": "lifespan.startup"})
        started = await self._from_app.receive()
        assert started["type"] == "lifespan.startup.complete", started
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        await self._to_app.send({"type": "lifespan.shutdown"})
        done = await self._from_app.receive()
        assert done["type"] == "lifespan.shutdown.complete", done
        await self._group.__aexit__(kind, exc, tb)

    async def get(
        self,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        return await self.request("GET", url, b"", headers or {})

    async def post(
        self, url: str, *, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> Response:
        body = urlencode(data).encode()
        form = {"content-type": "application/x-www-form-urlencoded"}
        return await self.request("POST", url, body, {**form, **(headers or {})})

    async def request(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> Response:
        parts = urlsplit(url)
        sent = {"host": self.host, "content-length": str(len(body)), **headers}
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in sent.items()],
            "client": ("127.0.0.1", 50000),
            "server": (self.host, 80),
            "state": {},
        }
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        status = 0
        out_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    out_headers[k.decode().lower()] = v.decode()
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return Response(status, out_headers, b"".join(chunks).decode())
