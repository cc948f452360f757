"""The web view as a Starlette application.

Routes: ``/`` (the jobs list; ``?partial=1``: only the part that refreshes),
``/job?id=...`` (a job; ``from=N``: the window of its operations from row N),
``/action`` (POST; only with actions allowed), ``/static/ui.css`` and ``ui.js``.

Being a local server, it guards against what a web page elsewhere could make the
browser do: requests must name an allowed host (a DNS-rebinding page names its
own), and an action needs the server's form token, a same-origin request, and a
second, confirming POST.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from duron._cli._job_list import moment
from duron._errors import DuronError, JobNotFoundError, UsageError
from duron._redact import redact
from duron._ui import pages
from duron._ui.sources import ListQuery, StoreSource
from duron._ui.timeline import WINDOW, layout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from starlette.requests import Request

    from duron._ui.sources import FileSource

__all__ = ["make_app"]

_STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def make_app(
    source: StoreSource | FileSource,
    *,
    allow_actions: bool = False,
    allowed_hosts: Sequence[str] = ("127.0.0.1", "localhost", "testserver"),
    token: str | None = None,
) -> Starlette:
    """The application serving ``source``.

    Args:
        source: Where the jobs come from.
        allow_actions: Offer cancel, requeue, complete a future and send input
            (a store's jobs only), each confirmed before it is done.
        allowed_hosts: The host names requests may name (the ``Host`` header).
        token: The form token actions need (default: a random one).
    """
    form_token = token or secrets.token_urlsafe(24)
    label = source.label
    static = {
        name: resources.files("duron._ui").joinpath(name).read_bytes()
        for name in _STATIC
    }

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            text,
            status,
            headers={
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'self'; style-src 'self' "
                "'unsafe-inline'; frame-ancestors 'none'",
            },
        )

    def failure(exc: BaseException) -> HTMLResponse:
        if isinstance(exc, _BadRequest):
            status, message = exc.status, exc.message
        elif isinstance(exc, JobNotFoundError):
            status, message = 404, str(exc)
        elif isinstance(exc, UsageError):
            status, message = 400, str(exc)
        else:
            status, message = 500, f"{type(exc).__name__}: {exc}"
        dsn = source.url if isinstance(source, StoreSource) else None
        return html(
            pages.error_page(status, redact(message, dsn=dsn), source=label), status
        )

    async def jobs(request: Request) -> Response:
        try:
            q, form = _list_query(request, source.statuses)
            lp = await source.list(q)
        except (DuronError, _BadRequest) as exc:
            return failure(exc)
        if request.query_params.get("partial"):
            return html(pages.list_live(lp, q, source.statuses))
        return html(pages.list_page(lp, q, source.statuses, source=label, form=form))

    async def job(request: Request) -> Response:
        params = request.query_params
        try:
            job_id = params.get("id")
            if not job_id:
                raise _BadRequest(400, "which job? /job?id=JOB-ID")
            start = _whole(params.get("from", "0"), "from")
            jp = await source.job(job_id)
        except (DuronError, _BadRequest) as exc:
            return failure(exc)
        info = jp.info
        wake = info.wake_at.timestamp() if info is not None and info.wake_at else None
        lay = layout(jp.timeline, start=start, window=WINDOW, wake_at=wake)
        if params.get("partial"):
            return html(pages.job_live(jp, lay))
        live = pages.job_href(job_id, **{"from": start, "partial": 1})
        actions = None
        if allow_actions and isinstance(source, StoreSource):
            actions = pages.Actions(form_token)
        return html(
            pages.job_page(
                jp,
                lay,
                source=label,
                actions=actions,
                notice=params.get("done"),
                live_href=live,
            )
        )

    async def action(request: Request) -> Response:
        # The forms are URL-encoded (no files): parsed here, no multipart parser.
        body = (await request.body()).decode("utf-8", "replace")
        fields = dict(parse_qsl(body, keep_blank_values=True))
        try:
            if not allow_actions:
                raise _BadRequest(
                    403,
                    "actions are off: this page is read-only (start duron ui with "
                    "--allow-actions to cancel, requeue, complete futures or send "
                    "input)",
                )
            if not secrets.compare_digest(fields.get("token", ""), form_token):
                raise _BadRequest(
                    403, "this form is not from this server: reload the job's page"
                )
            origin = request.headers.get("origin")
            if (
                origin is not None
                and origin != f"{request.url.scheme}://{request.url.netloc}"
            ):
                raise _BadRequest(
                    403, f"a form posted from another site ({origin}) is refused"
                )
            if not isinstance(source, StoreSource):
                raise _BadRequest(400, "log files take no actions: serve a job store")
            job_id = fields.get("id", "")
            what, run = _plan(source, job_id, fields)
            if fields.get("confirm") != "yes":
                kept = {k: v for k, v in fields.items() if k != "confirm"}
                return html(pages.confirm_page(what, kept, job_id=job_id, source=label))
            done = await run()
        except (DuronError, _BadRequest) as exc:
            return failure(exc)
        return RedirectResponse(pages.job_href(job_id, done=done), status_code=303)

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found", 404, media_type="text/plain")
        return Response(static[name], media_type=_STATIC[name])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await source.aclose()

    return Starlette(
        routes=[
            Route("/", jobs),
            Route("/job", job),
            Route("/action", action, methods=["POST"]),
            Route("/static/{name}", static_file),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
        ],
        lifespan=lifespan,
    )


def _whole(text: str, name: str) -> int:
    if not text.isdigit():
        raise _BadRequest(400, f"{name} must be a whole number >= 0, not {text!r}")
    return int(text)


def _list_query(
    request: Request, statuses: tuple[str, ...]
) -> tuple[ListQuery, dict[str, str]]:
    params = request.query_params
    wanted = tuple(s for s in params.getlist("status") if s)
    for s in wanted:
        if s not in statuses:
            raise _BadRequest(400, f"status {s!r} is not one of {', '.join(statuses)}")
    form = {k: params.get(k, "").strip() for k in ("function", "id", "after", "before")}
    times: dict[str, Any] = {}
    for key in ("after", "before"):
        if form[key]:
            try:
                times[key] = moment(form[key])
            except argparse.ArgumentTypeError as exc:
                raise _BadRequest(400, f"created {key}: {exc}") from None
    q = ListQuery(
        statuses=wanted,
        function=form["function"] or None,
        id_prefix=form["id"] or None,
        created_after=times.get("after"),
        created_before=times.get("before"),
        cursor=params.get("cursor") or None,
    )
    return q, form


def _plan(source: StoreSource, job_id: str, fields: dict[str, str]) -> tuple[str, Any]:
    """What an action will do, in words, and the coroutine function doing it."""
    store = source.store
    kind = fields.get("action", "")
    if not job_id:
        raise _BadRequest(400, "which job? the form names none")
    if kind == "cancel":

        async def cancel() -> str:
            ok = await store.cancel(job_id)
            return "cancellation asked" if ok else "the job had already ended"

        return (
            f"Cancel job {job_id}? A running job is cancelled where it waits.",
            cancel,
        )
    if kind == "requeue":

        async def requeue() -> str:
            await store.requeue(job_id)
            return "requeued: a worker runs it again"

        return f"Requeue job {job_id} for a worker to run again?", requeue
    if kind == "complete":
        future = fields.get("future", "").strip()
        if not future:
            raise _BadRequest(400, "complete a future: give its id")
        error = fields.get("error", "").strip()
        raw = fields.get("result", "").strip()
        if error and raw:
            raise _BadRequest(
                400, "complete a future with a result or an error, not both"
            )
        result = _json(raw, "result") if raw else None
        shown = f"error RuntimeError({error!r})" if error else f"result {raw or 'null'}"

        async def complete() -> str:
            await store.complete_future(
                job_id,
                future,
                result=result,
                exception=RuntimeError(error) if error else None,
            )
            return f"future {future} completed; the job records it"

        return f"Complete future {future} of job {job_id} with {shown}?", complete
    if kind == "send":
        name = fields.get("name", "").strip()
        raw = fields.get("value", "").strip()
        if not name or not raw:
            raise _BadRequest(400, "send: give the parameter's name and a JSON value")
        value = _json(raw, "value")

        async def send() -> str:
            writer = await store.open_stream(job_id, name, "w")
            await writer.send(value)
            return f"{raw} sent to {name}; the job records it"

        return f"Send {raw} to {name} of job {job_id}?", send
    raise _BadRequest(
        400, f"unknown action {kind!r}: cancel, requeue, complete or send"
    )


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _BadRequest(
            400, f'{what} must be JSON ("text", 3, true, {{"k": 1}}): {text!r} is not'
        ) from None
