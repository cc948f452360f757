"""The web view's HTML: the jobs list, a job's page, a confirmation, an error.

Everything is rendered here, on the server, and every value from a log or a store
is escaped. The pages work without JavaScript; the small script (``ui.js``) only
refreshes the part of a page marked ``data-live`` while its job runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from duron._ui.timeline import Bar, Layout, Mark, OpRow, rel

if TYPE_CHECKING:
    from duron._entries import ErrorInfo
    from duron._ui.sources import JobPage, JobRow, ListPage, ListQuery

__all__ = ["Actions", "confirm_page", "error_page", "job_page", "list_page", "page"]

_SHORT = 80
_PAYLOAD_MAX = 200_000
_ENDED = ("completed", "failed", "cancelled", "empty", "damaged")


@dataclass(frozen=True, slots=True)
class Actions:
    """What a job's page offers when actions are allowed: the form token."""

    token: str


def page(title: str, body: str, *, source: str) -> str:
    """A whole HTML document."""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} · duron</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel=stylesheet href="/static/ui.css">'
        '<script src="/static/ui.js" defer></script></head><body>'
        f'<header><a class=home href="/">duron</a> <span class=source>'
        f"{escape(source)}</span></header><main>{body}</main></body></html>\n"
    )


def error_page(status: int, message: str, *, source: str) -> str:
    body = f"<h1>Error {status}</h1><p class=error id=message>{escape(message)}</p>"
    body += '<p><a href="/">All jobs</a></p>'
    return page(f"error {status}", body, source=source)


# -- values ----------------------------------------------------------------------------


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"


def payload(value: Any, key: str, *, label: str = "", open_: bool = False) -> str:
    """A value pretty-printed in a collapsible block (its summary: a short form)."""
    pretty = json.dumps(value, ensure_ascii=False, indent=2)
    if len(pretty) > _PAYLOAD_MAX:
        pretty = pretty[:_PAYLOAD_MAX] + f"\n… ({len(pretty):,} characters in all)"
    head = f"{escape(label)} " if label else ""
    return (
        f'<details class=payload data-key="{escape(key)}"{" open" if open_ else ""}>'
        f"<summary>{head}<code>{escape(_compact(value))}</code></summary>"
        f"<pre>{escape(pretty)}</pre></details>"
    )


def _error(err: ErrorInfo, key: str) -> str:
    short = f"{err.type.rpartition('.')[2]}: {err.message}"
    return (
        f'<details class="payload error" data-key="{escape(key)}">'
        f"<summary><code>{escape(short[:200])}</code></summary>"
        f"<pre>{escape(json.dumps(err.to_json(), ensure_ascii=False, indent=2))}</pre>"
        "</details>"
    )


def _call(function: str | None, args: dict[str, Any] | None) -> str:
    if function is None:
        return "?"
    if not args:
        return f"{function}()"
    inner = ", ".join(f"{k}={_compact(v)}" for k, v in args.items())
    text = f"{function}({inner})"
    return text if len(text) <= 2 * _SHORT else text[: 2 * _SHORT - 1] + "…)"


def _time(when: datetime | None) -> str:
    if when is None:
        return ""
    utc = when.astimezone(timezone.utc)
    return f'<time datetime="{utc.isoformat()}">{utc:%Y-%m-%d %H:%M:%S}Z</time>'


def _status(status: str) -> str:
    return f'<span class="status s-{escape(status)}">{escape(status)}</span>'


def job_href(job_id: str, **extra: Any) -> str:
    return "/job?" + urlencode({"id": job_id, **extra})


# -- the list ----------------------------------------------------------------------------


def list_query_params(q: ListQuery, **change: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "status": list(q.statuses),
        "function": q.function or "",
        "id": q.id_prefix or "",
        "after": q.created_after.isoformat() if q.created_after else "",
        "before": q.created_before.isoformat() if q.created_before else "",
    }
    params.update(change)
    return {k: v for k, v in params.items() if v not in ("", [], None)}


def list_page(
    lp: ListPage,
    q: ListQuery,
    statuses: tuple[str, ...],
    *,
    source: str,
    form: dict[str, str],
) -> str:
    """The jobs list: counts per status, the filter form, a page of jobs."""
    body = "<h1>Jobs</h1>" + _filters(q, statuses, form)
    body += f'<div id=live data-live="{escape(_live_list_href(q))}">'
    body += list_live(lp, q, statuses)
    body += "</div>"
    return page("jobs", body, source=source)


def _live_list_href(q: ListQuery) -> str:
    params = list_query_params(q)
    if q.cursor:
        params["cursor"] = q.cursor
    params["partial"] = "1"
    return "/?" + urlencode(params, doseq=True)


def list_live(lp: ListPage, q: ListQuery, statuses: tuple[str, ...]) -> str:
    """The part of the list that refreshes: counts, the rows, the paging links."""
    total = sum(lp.counts.values())
    tabs = [
        f'<a class="tab{"" if q.statuses else " on"}" href="/?'
        f'{escape(urlencode(list_query_params(q, status=[]), doseq=True))}">'
        f"all <b>{total}</b></a>"
    ]
    for s in statuses:
        on = " on" if q.statuses == (s,) else ""
        href = "/?" + urlencode(list_query_params(q, status=[s]), doseq=True)
        tabs.append(
            f'<a class="tab{on}" data-status="{s}" href="{escape(href)}">'
            f"{s} <b>{lp.counts.get(s, 0)}</b></a>"
        )
    out = f"<nav class=counts id=counts>{''.join(tabs)}</nav>"
    if not lp.rows:
        out += "<p class=empty id=no-jobs>No job matches.</p>"
    else:
        out += (
            "<table class=jobs id=jobs><thead><tr><th>job</th><th>status</th>"
            "<th>call</th><th>created</th><th>updated</th></tr></thead><tbody>"
        )
        for row in lp.rows:
            out += _list_row(row)
        out += "</tbody></table>"
    links = []
    if q.cursor:
        first = "/?" + urlencode(list_query_params(q), doseq=True)
        links.append(f'<a id=first-page href="{escape(first)}">newest</a>')
    if lp.next_cursor:
        more = "/?" + urlencode(list_query_params(q, cursor=lp.next_cursor), doseq=True)
        links.append(f'<a id=next-page href="{escape(more)}">older →</a>')
    if links:
        out += f"<nav class=paging>{' '.join(links)}</nav>"
    return out


def _list_row(row: JobRow) -> str:
    err = ""
    if row.error is not None:
        err = f' title="{escape(row.error.type + ": " + row.error.message)}"'
    return (
        f'<tr data-job="{escape(row.id)}"><td><a href="{escape(job_href(row.id))}">'
        f"{escape(row.id)}</a></td><td{err}>{_status(row.status)}</td>"
        f"<td><code>{escape(_call(row.function, row.args))}</code></td>"
        f"<td>{_time(row.created)}</td><td>{_time(row.updated)}</td></tr>"
    )


def _filters(q: ListQuery, statuses: tuple[str, ...], form: dict[str, str]) -> str:
    options = '<option value="">any</option>' + "".join(
        f'<option value="{s}"{" selected" if q.statuses == (s,) else ""}>{s}</option>'
        for s in statuses
    )

    def field(name: str, label: str, hint: str) -> str:
        value = escape(form.get(name, ""))
        return (
            f'<label>{label} <input name="{name}" value="{value}" '
            f'placeholder="{escape(hint)}"></label>'
        )

    return (
        '<form class=filters id=filters method=get action="/">'
        f"<label>status <select name=status>{options}</select></label>"
        + field("function", "function", "name")
        + field("id", "id starts with", "order-")
        + field("after", "created after", "1h, 7d, 2026-05-01T12:00Z")
        + field("before", "created before", "30m, 2026-05-02")
        + '<button type=submit>filter</button> <a href="/">clear</a></form>'
    )


# -- a job -------------------------------------------------------------------------------


def job_page(
    jp: JobPage,
    lay: Layout,
    *,
    source: str,
    actions: Actions | None,
    notice: str | None,
    live_href: str,
) -> str:
    """A job's page: its facts, what it waits for, its timeline; actions if allowed."""
    body = ""
    if notice:
        body += f"<p class=notice id=notice>{escape(notice)}</p>"
    ended = jp.row.status in _ENDED
    attr = "" if ended else f' data-live="{escape(live_href)}"'
    body += f"<div id=live{attr}>{job_live(jp, lay)}</div>"
    if actions is not None:
        body += _actions(jp, actions)
    return page(f"job {jp.row.id}", body, source=source)


def job_live(jp: JobPage, lay: Layout) -> str:
    """The part of a job's page that refreshes while it runs."""
    row, info, tl = jp.row, jp.info, jp.timeline
    out = (
        f"<h1>job <span id=job-id>{escape(row.id)}</span> "
        f"<span id=job-status>{_status(row.status)}</span></h1>"
    )
    facts: list[tuple[str, str]] = [("function", escape(row.function or "?"))]
    job = tl.job
    if job is not None and job.module:
        facts.append(("module", escape(job.module)))
    facts.append(("created", _time(row.created)))
    facts.append(("updated", _time(row.updated)))
    if info is not None:
        if info.lease_owner and info.status == "running":
            facts.append(("owner", escape(info.lease_owner)))
        if info.wake_at is not None:
            facts.append(("timer due", _time(info.wake_at)))
        if info.cancel_requested:
            facts.append(("cancel", "asked, not yet delivered"))
        if info.forked_from:
            href = escape(job_href(info.forked_from))
            facts.append(
                ("forked from", f'<a href="{href}">{escape(info.forked_from)}</a>')
            )
        if info.parent:
            href = escape(job_href(info.parent))
            facts.append(
                ("parent", f'<a id=parent href="{href}">{escape(info.parent)}</a>')
            )
    if jp.children:
        links = ", ".join(
            f'<a href="{escape(job_href(c))}">{escape(c)}</a>' for c in jp.children
        )
        facts.append(("children", f"<span id=children>{links}</span>"))
    facts.append(
        ("log", f"{escape(tl.log)} ({tl.entries:,} entries, {tl.size:,} bytes)")
    )
    out += (
        "<dl class=facts id=facts>"
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        + "</dl>"
    )
    args = row.args if row.args is not None else (job.args if job else None)
    out += "<section id=arguments><h2>arguments</h2>"
    out += payload(args, "args", open_=True) if args is not None else "<p>none</p>"
    out += "</section>"
    out += _outcome(jp)
    if tl.damage is not None:
        out += (
            f"<p class=error id=damage>damaged at offset {tl.damage.offset}: "
            f"{escape(tl.damage.reason)}; nothing after it is shown</p>"
        )
    out += _waiting(jp, lay, ended=row.status in _ENDED)
    out += _timeline(jp, lay)
    return out


def _outcome(jp: JobPage) -> str:
    end = jp.timeline.end
    info = jp.info
    if end is not None:
        if end.error is None:
            return (
                "<section id=outcome><h2>result</h2>"
                + payload(end.result, "result", open_=True)
                + "</section>"
            )
        return (
            "<section id=outcome><h2>error</h2>"
            + _error(end.error, "error")
            + "</section>"
        )
    if info is not None and info.error is not None:  # failed by a worker, no end entry
        return (
            "<section id=outcome><h2>error</h2>"
            + _error(info.error, "error")
            + "</section>"
        )
    return ""


def _waiting(jp: JobPage, lay: Layout, *, ended: bool) -> str:
    if ended or not lay.waiting:
        return ""
    items = []
    for index, op in lay.waiting[:20]:
        href = f"#op-{op.position}"
        if not lay.start <= index < lay.start + len(lay.rows):
            href = job_href(jp.row.id, **{"from": index}) + href
        items.append(
            f'<li><a href="{escape(href)}">#{op.position}</a> {escape(op.kind or "?")} '
            f"<code>{escape(op.describe(_SHORT))}</code> since "
            f"{escape(rel(op.started, lay.axis.t0)) or '?'}</li>"
        )
    more = len(lay.waiting) - len(items)
    tail = f"<li>… {more} more</li>" if more > 0 else ""
    return (
        f"<section id=waiting><h2>waiting now at</h2><ul>{''.join(items)}{tail}</ul>"
        "</section>"
    )


def _timeline(jp: JobPage, lay: Layout) -> str:
    ax = lay.axis
    out = (
        f"<section id=timeline><h2>timeline <small>{lay.total:,} operations, "
        f"at most {lay.peak:,} in flight</small></h2>"
    )
    ticks = "".join(
        f'<span class=tick style="left:{left}%">{escape(label)}</span>'
        for left, label in ax.ticks
    )
    out += f'<div class="row axis"><div class=label></div><div class=track>{ticks}</div></div>'
    peak = max(lay.peak, 1)
    cols = "".join(
        f'<i style="height:{round(n / peak * 100, 1)}%" title="{n} in flight"></i>'
        for n in lay.profile
    )
    out += (
        '<div class="row profile" id=profile><div class=label>in flight</div>'
        f"<div class=track>{cols}</div></div>"
    )
    out += (
        '<div class="row job-marks" id=job-marks><div class=label>job</div>'
        f"<div class=track>{''.join(_mark(m) for m in lay.job_marks)}</div></div>"
    )
    out += "<ol class=ops id=ops>" + "".join(_op_row(r, ax.t0) for r in lay.rows)
    out += "</ol>" + _window_links(jp, lay) + "</section>"
    return out


def _window_links(jp: JobPage, lay: Layout) -> str:
    if lay.total <= len(lay.rows):
        return ""
    shown = (
        f"operations {lay.start + 1:,}-{lay.start + len(lay.rows):,} of {lay.total:,}"
    )
    links = []
    size = max(len(lay.rows), 1)
    if lay.start > 0:
        prev = job_href(jp.row.id, **{"from": max(lay.start - size, 0)})
        links.append(f'<a id=ops-prev href="{escape(prev)}">← earlier</a>')
    if lay.start + len(lay.rows) < lay.total:
        nxt = job_href(jp.row.id, **{"from": lay.start + size})
        links.append(f'<a id=ops-next href="{escape(nxt)}">later →</a>')
    return f"<nav class=paging id=ops-window>{shown} {' '.join(links)}</nav>"


def _mark(m: Mark) -> str:
    return (
        f'<span class="mark m-{m.kind}" style="left:{m.left}%" '
        f'title="{escape(m.title)}"></span>'
    )


def _bar(b: Bar) -> str:
    return (
        f'<span class="bar b-{b.kind}" style="left:{b.left}%;width:{b.width}%" '
        f'title="{escape(b.title)}"></span>'
    )


def _op_row(r: OpRow, t0: float) -> str:
    op = r.op
    key = f"op-{op.position}"
    details = []
    if op.inputs:
        details.append(payload(op.inputs, f"{key}-in", label="inputs"))
    if op.done and op.error is None and op.kind not in ("input", "patch"):
        details.append(payload(op.result, f"{key}-out", label="result"))
    if op.error is not None:
        details.append(_error(op.error, f"{key}-err"))
    for a in op.attempts:
        details.append(
            f"<div class=attempt>attempt {a.attempt} failed after {a.duration:.3f}s, "
            f"retried at {escape(rel(a.retry_at, t0))}</div>"
            + _error(a.error, f"{key}-a{a.attempt}")
        )
    if op.emits:
        what = "received" if op.kind == "input" else "emitted"
        details.append(
            payload(
                [v for _, v in op.emits[:1000]],
                f"{key}-emits",
                label=f"{what} {len(op.emits)}",
            )
        )
    took = op.duration()
    timing = (
        f"{rel(op.started, t0) or '?'} → {rel(op.finished, t0) if op.done else '…'}"
    )
    if took is not None:
        timing += f" ({took:.3f}s)"
    return (
        f'<li class="op k-{escape(op.kind or "unknown")}" id={key} '
        f'data-status="{r.status}"><div class=row><div class=label>'
        f"<span class=pos>#{op.position}</span> {_status(r.status)} "
        f"<code>{escape(op.describe(_SHORT))}</code></div><div class=track>"
        + "".join(_bar(b) for b in r.bars)
        + "".join(_mark(m) for m in r.marks)
        + f"</div></div><div class=more><span class=timing>{escape(timing)}</span>"
        + "".join(details)
        + "</div></li>"
    )


# -- actions -----------------------------------------------------------------------------


def _actions(jp: JobPage, actions: Actions) -> str:
    job_id = escape(jp.row.id)
    hidden = (
        f'<input type=hidden name=id value="{job_id}">'
        f'<input type=hidden name=token value="{escape(actions.token)}">'
    )

    def form(action: str, fields: str, button: str) -> str:
        return (
            f'<form method=post action="/action" class=action id=action-{action}>'
            f"{hidden}<input type=hidden name=action value={action}>{fields}"
            f"<button type=submit>{button}</button></form>"
        )

    out = "<section id=actions><h2>actions</h2>"
    out += form("cancel", "", "cancel job…")
    out += form("requeue", "", "requeue job…")
    out += form(
        "complete",
        '<input name=future placeholder="future id" required> '
        '<input name=result placeholder="result as JSON"> '
        '<input name=error placeholder="or an error message">',
        "complete future…",
    )
    out += form(
        "send",
        '<input name=name placeholder="signal or stream parameter" required> '
        '<input name=value placeholder="value as JSON" required>',
        "send…",
    )
    return out + "</section>"


def confirm_page(what: str, fields: dict[str, str], *, job_id: str, source: str) -> str:
    """Ask before an action: the same form again, with ``confirm=yes``."""
    hidden = "".join(
        f'<input type=hidden name="{escape(k)}" value="{escape(v)}">'
        for k, v in fields.items()
    )
    body = (
        f"<h1>Confirm</h1><p id=confirm-what>{escape(what)}</p>"
        f'<form method=post action="/action" id=confirm>{hidden}'
        "<input type=hidden name=confirm value=yes>"
        f"<button type=submit id=confirm-yes>yes, do it</button> "
        f'<a id=confirm-no href="{escape(job_href(job_id))}">no, back to the job</a>'
        "</form>"
    )
    return page("confirm", body, source=source)
