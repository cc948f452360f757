"""Effects: the forms ``ctx.run`` accepts, how they run live, and how they replay."""

from __future__ import annotations

import asyncio
import functools
import operator
import re
import sys
import threading
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import anyio
import pytest
from support import run_job

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]


def entry_names(storage: MemoryLogStorage) -> list[str | None]:
    return [
        getattr(e, "name", None)
        for e in storage.entries()
        if e.type in ("start", "done") and getattr(e, "name", None)
    ]


# -- async and plain-def effects ------------------------------------------------------

calls: list[str] = []


@duron.effect
async def fetch(key: str) -> str:
    await anyio.sleep(0)
    calls.append(f"fetch {key}")
    return key.upper()


@duron.durable
async def fetch_flow(ctx: duron.Context, keys: list[str]) -> list[str]:
    return list(await asyncio.gather(*(ctx.run(fetch, k) for k in keys)))


async def test_async_effects_run_once_and_replay() -> None:
    calls.clear()
    storage = MemoryLogStorage()
    assert await run_job(fetch_flow, storage, ["a", "b", "c"]) == ["A", "B", "C"]
    assert sorted(calls) == ["fetch a", "fetch b", "fetch c"]
    assert await run_job(fetch_flow, storage, ["a", "b", "c"]) == ["A", "B", "C"]
    assert len(calls) == 3


handshake = threading.Event()
threads: dict[str, int] = {}


@duron.effect
def wait_for_handshake(timeout: float) -> str:
    threads["sync"] = threading.get_ident()
    # Set by an async effect on the event loop: if this ran on the loop, the loop
    # would be stuck here and the handshake could never happen.
    if not handshake.wait(timeout):
        raise TimeoutError("the sync effect blocked the event loop")
    return "shook"


@duron.effect
async def give_handshake() -> str:
    threads["async"] = threading.get_ident()
    await anyio.sleep(0)
    handshake.set()
    return "given"


@duron.durable
async def handshake_flow(ctx: duron.Context) -> list[str]:
    return list(
        await asyncio.gather(ctx.run(wait_for_handshake, 5.0), ctx.run(give_handshake))
    )


async def test_plain_def_effect_runs_in_a_worker_thread_not_on_the_loop() -> None:
    handshake.clear()
    threads.clear()
    storage = MemoryLogStorage()
    with anyio.fail_after(20):
        assert await run_job(handshake_flow, storage) == ["shook", "given"]
    assert threads["async"] == threading.get_ident()
    assert threads["sync"] != threading.get_ident()
    handshake.clear()
    threads.clear()
    assert await run_job(handshake_flow, storage) == ["shook", "given"]
    assert threads == {}, "replay ran an effect"


# -- streaming effects ---------------------------------------------------------------

starts: list[int] = []
hold_at: int | None = None


@duron.effect
async def download(
    done: Annotated[int, duron.Reducer(operator.add)], total: int
) -> AsyncGenerator[int, int]:
    starts.append(done)
    while done < total:
        if done == hold_at:
            await anyio.sleep_forever()
        done = yield 1


@duron.durable
async def download_flow(ctx: duron.Context, total: int) -> int:
    return await ctx.run(download, 0, total)


states_seen: list[int] = []
reached: list[anyio.Event] = []


@duron.durable
async def watched_download(ctx: duron.Context, total: int) -> tuple[list[int], int]:
    seen = []
    async with ctx.stream(download, 0, total) as (states, final):
        async for state in states:
            seen.append(state)
            states_seen.append(state)
            if reached and state == hold_at:
                reached[0].set()
        result = await final
    return seen, result


async def test_streaming_effect_returns_the_folded_final_state() -> None:
    starts.clear()
    storage = MemoryLogStorage()
    assert await run_job(download_flow, storage, 4) == 4
    assert starts == [0]
    assert [e.type for e in storage.entries()].count("emit") == 4
    assert await run_job(download_flow, storage, 4) == 4
    assert starts == [0], "replay ran the streaming effect"


async def test_ctx_stream_shows_partial_states_live_and_on_replay() -> None:
    starts.clear()
    storage = MemoryLogStorage()
    assert await run_job(watched_download, storage, 3) == ([1, 2, 3], 3)
    assert await run_job(watched_download, storage, 3) == ([1, 2, 3], 3)
    assert starts == [0]


async def test_stream_stopped_midway_resumes_from_the_last_recorded_state() -> None:
    global hold_at
    starts.clear()
    states_seen.clear()
    storage = MemoryLogStorage()
    hold_at = 2
    reached[:] = [anyio.Event()]
    try:
        async with watched_download.invoke(storage) as job:
            await job.start(5)
            with anyio.fail_after(10):
                await reached[0].wait()
            # Durable code saw state 2, so both emissions are in the log; stopping
            # here is what a crash in the middle of the stream looks like.
    finally:
        hold_at = None
        reached.clear()
    assert states_seen == [1, 2]
    assert [e.type for e in storage.entries()] == ["job", "start", "emit", "emit"]

    states_seen.clear()
    assert await run_job(watched_download, storage, 5) == ([1, 2, 3, 4, 5], 5)
    assert starts == [0, 2]  # restarted from the recorded state, not from 0
    assert states_seen == [1, 2, 3, 4, 5]
    assert await run_job(watched_download, storage, 5) == ([1, 2, 3, 4, 5], 5)
    assert starts == [0, 2]


@duron.effect(name="bad_stream")
async def bad_stream(state: Annotated[Any, duron.Reducer(operator.add)]):  # type: ignore[no-untyped-def]
    yield {1, 2}


@duron.durable
async def bad_stream_flow(ctx: duron.Context) -> None:
    await ctx.run(bad_stream, 0)


async def test_streaming_effect_yielding_a_non_json_value_fails_the_job() -> None:
    storage = MemoryLogStorage(label="streams")
    async with bad_stream_flow.invoke(storage) as job:
        await job.start()
        with pytest.raises(duron.PayloadError) as info:
            await job.wait()
    assert str(info.value) == (
        "job streams: position 0: value yielded by streaming effect bad_stream "
        "(unannotated): cannot encode set: a value of type set is not JSON-native; "
        "annotate the type so it can be encoded"
    )
    assert "emit" not in [e.type for e in storage.entries()]
    assert "done" not in [e.type for e in storage.entries()]


# -- undecorated callables and names ---------------------------------------------------


async def plain_double(x: int) -> int:
    calls.append(f"double {x}")
    return 2 * x


def plain_sync_triple(x: int) -> int:
    calls.append(f"triple {x} in worker {threading.get_ident() != main_thread[0]}")
    return 3 * x


main_thread = [0]


async def _echo(x: Any) -> Any:
    await anyio.sleep(0)
    return x


@duron.effect(name="billing.charge")
async def charge(amount: int) -> str:
    calls.append(f"charge {amount}")
    return f"charged {amount}"


@duron.durable
async def mixed_flow(ctx: duron.Context) -> list[Any]:
    return [
        await ctx.run(plain_double, 4),
        await ctx.run(plain_sync_triple, 5),
        await ctx.run(lambda: plain_double(10)),
        await ctx.run(lambda x: _echo(x), "echoed"),
        await ctx.run(charge, 7),
        await ctx.run(functools.partial(plain_double, 6)),
        await ctx.run(functools.partial(plain_sync_triple), x=1),
    ]


async def test_undecorated_callables_and_lambdas_are_effects_too() -> None:
    calls.clear()
    main_thread[0] = threading.get_ident()
    storage = MemoryLogStorage()
    want = [8, 15, 20, "echoed", "charged 7", 12, 3]
    assert await run_job(mixed_flow, storage) == want
    assert calls == [
        "double 4",
        "triple 5 in worker True",
        "double 10",
        "charge 7",
        "double 6",
        "triple 1 in worker True",
    ]
    assert entry_names(storage) == [
        "plain_double",
        "plain_sync_triple",
        "mixed_flow.<locals>.<lambda>",
        "mixed_flow.<locals>.<lambda>",
        "billing.charge",
        "plain_double",
        "plain_sync_triple",
    ]
    assert await run_job(mixed_flow, storage) == want
    assert len(calls) == 6


class Client:
    """Effects are often methods of a client object."""

    def __init__(self, base: str) -> None:
        self.base = base

    @duron.effect
    async def get(self, path: str) -> str:
        calls.append(f"get {path}")
        return self.base + path

    @duron.effect
    def get_sync(self, path: str) -> str:
        calls.append(f"get_sync {path}")
        return self.base + path

    @duron.effect
    async def pages(
        self, seen: Annotated[list[str], duron.Reducer(operator.add)], count: int
    ) -> AsyncGenerator[list[str], list[str]]:
        while len(seen) < count:
            seen = yield [f"{self.base}/{len(seen)}"]

    async def undecorated(self, path: str) -> str:
        calls.append(f"undecorated {path}")
        return self.base + path


client = Client("https://example.org")


@duron.durable
async def client_flow(ctx: duron.Context) -> list[Any]:
    return [
        await ctx.run(client.get, "/a"),
        await ctx.run(client.get_sync, path="/b"),
        await ctx.run(client.pages, [], 2),
        await ctx.run(client.undecorated, "/c"),
    ]


async def test_effects_defined_as_methods_run_on_their_instance() -> None:
    calls.clear()
    storage = MemoryLogStorage()
    want = [
        "https://example.org/a",
        "https://example.org/b",
        ["https://example.org/0", "https://example.org/1"],
        "https://example.org/c",
    ]
    assert await run_job(client_flow, storage) == want
    assert calls == ["get /a", "get_sync /b", "undecorated /c"]
    # The instance is not an input: only the arguments are recorded.
    inputs = [
        (e.name, e.inputs)
        for e in storage.entries()
        if e.type in ("start", "done") and e.name is not None
    ]
    assert inputs == [
        ("Client.get", {"path": "/a"}),
        ("Client.get_sync", {"path": "/b"}),
        ("Client.pages", {"seen": [], "count": 2}),
        ("Client.undecorated", {"path": "/c"}),
    ]
    assert await run_job(client_flow, storage) == want
    assert len(calls) == 3


# -- misuse ----------------------------------------------------------------------------


@duron.durable
async def direct_call_flow(ctx: duron.Context) -> str:
    return await fetch("x")


@duron.durable
async def direct_sync_call_flow(ctx: duron.Context) -> str:
    return wait_for_handshake(0.0)


@pytest.mark.parametrize(
    ("dfn", "name"),
    [
        pytest.param(direct_call_flow, "fetch", id="async"),
        pytest.param(direct_sync_call_flow, "wait_for_handshake", id="sync"),
    ],
)
async def test_calling_an_effect_directly_in_durable_code_is_a_usage_error(
    dfn: duron.DurableFn[[], str], name: str
) -> None:
    storage = MemoryLogStorage()
    async with dfn.invoke(storage) as job:
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                f"effect {name} was called directly inside durable code; run it "
                f"through the context: await ctx.run({name}, ...)"
            ),
        ):
            await job.wait()
    # A bug in the code, not the job's outcome: nothing is recorded as its end.
    assert [e.type for e in storage.entries()] == ["job"]


@duron.durable
async def child_flow(ctx: duron.Context, x: int) -> int:
    return x


@duron.durable
async def parent_flow(ctx: duron.Context) -> int:
    return await ctx.run(child_flow, 1)


async def test_ctx_run_of_a_durable_function_is_a_usage_error() -> None:
    storage = MemoryLogStorage()
    async with parent_flow.invoke(storage) as job:
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match="^"
            + re.escape(
                "ctx.run(child_flow): child_flow is a durable function, not an "
                "effect; run it as its own job with child_flow.invoke(storage)"
            )
            + "$",
        ):
            await job.wait()
    assert [e.type for e in storage.entries()] == ["job"]


async def test_effects_stay_plain_functions_outside_durable_code() -> None:
    calls.clear()
    assert await fetch("q") == "Q"
    handshake.set()
    assert wait_for_handshake(1.0) == "shook"
    assert calls == ["fetch q"]


# -- exceptions --------------------------------------------------------------------------

attempts: list[str] = []


@duron.effect
async def parse(text: str) -> int:
    attempts.append(text)
    return int(text)


@duron.durable
async def parse_flow(ctx: duron.Context, text: str) -> str:
    try:
        return str(await ctx.run(parse, text))
    except ValueError as exc:
        return f"caught {type(exc).__name__}: {exc}"


async def test_effect_exception_is_caught_by_its_own_type_live_and_on_replay() -> None:
    attempts.clear()
    storage = MemoryLogStorage()
    want = "caught ValueError: invalid literal for int() with base 10: 'x1'"
    assert await run_job(parse_flow, storage, "x1") == want
    assert await run_job(parse_flow, storage, "x1") == want
    assert attempts == ["x1"]
    done = next(e for e in storage.entries() if e.type == "done")
    assert done.error is not None
    assert done.error.type == "builtins.ValueError"


class QuotaExceeded(Exception):
    def __init__(self, *, user: str, limit: int) -> None:
        super().__init__(f"{user} is over the limit of {limit}")


@duron.effect
async def reserve(user: str) -> None:
    raise QuotaExceeded(user=user, limit=3)


@duron.durable
async def reserve_flow(ctx: duron.Context) -> str:
    try:
        await ctx.run(reserve, "ada")
    except duron.EffectError as exc:
        return f"{exc.type_name} | {exc.message} | {exc}"
    return "reserved"


async def test_exception_that_cannot_be_rebuilt_becomes_effect_error() -> None:
    storage = MemoryLogStorage()
    qualified = f"{QuotaExceeded.__module__}.QuotaExceeded"
    want = (
        f"{qualified} | ada is over the limit of 3 | {qualified}: ada is over the "
        "limit of 3"
    )
    # The first run sees what replay will see: the same EffectError.
    assert await run_job(reserve_flow, storage) == want
    assert await run_job(reserve_flow, storage) == want


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"server answered {status}")
        self.status = status


@duron.effect
async def get_page(url: str) -> str:
    if url.endswith("missing"):
        raise HTTPError(404)
    raise LookupError(url, 3)


@duron.durable
async def page_flow(ctx: duron.Context, url: str) -> str:
    try:
        return await ctx.run(get_page, url)
    except HTTPError as exc:
        return f"HTTPError {exc.status}: {exc}"
    except LookupError as exc:
        return f"LookupError {exc.args!r}: {exc}"
    except duron.EffectError as exc:
        return f"EffectError: {exc}"


async def test_rebuilt_exceptions_keep_their_message_or_become_effect_errors() -> None:
    # HTTPError(status) records args ("server answered 404",): building it from them
    # would say "server answered server answered 404". A rebuilt exception must say
    # what the original said, or it is not rebuilt.
    qualified = f"{HTTPError.__module__}.HTTPError"
    for url, want in [
        ("/missing", f"EffectError: {qualified}: server answered 404"),
        ("/other", "LookupError ('/other', 3): ('/other', 3)"),
    ]:
        storage = MemoryLogStorage()
        assert await run_job(page_flow, storage, url) == want
        assert await run_job(page_flow, storage, url) == want


class FlowFailed(Exception):
    pass


@duron.durable
async def failing_flow(ctx: duron.Context, order: int) -> None:
    await ctx.run(fetch, f"order-{order}")
    raise FlowFailed(f"order {order} cannot ship")


async def test_durable_function_exception_is_raised_by_wait_live_and_on_replay() -> (
    None
):
    calls.clear()
    storage = MemoryLogStorage()
    for _ in range(2):
        async with failing_flow.invoke(storage) as job:
            await job.start(7)
            with pytest.raises(FlowFailed, match=r"^order 7 cannot ship$"):
                await job.wait()
    assert calls == ["fetch order-7"]
    end = storage.entries()[-1]
    assert end.type == "end"
    assert end.error is not None
    assert end.error.message == "order 7 cannot ship"


# -- an effect that raises CancelledError itself --------------------------------------

cancel_calls: list[str] = []


@duron.effect
async def gives_up(wait: bool) -> int:
    cancel_calls.append(f"gives_up {wait}")
    if wait:
        await anyio.sleep(0.001)
    raise asyncio.CancelledError("gave up")


async def also_gives_up() -> int:
    cancel_calls.append("also_gives_up")
    await anyio.sleep(0)
    raise asyncio.CancelledError("gave up too")


@duron.durable
async def giving_up(ctx: duron.Context) -> list[str]:
    seen = []
    calls: list[tuple[Any, tuple[Any, ...]]] = [
        (gives_up, (False,)),
        (gives_up, (True,)),
        (lambda: also_gives_up(), ()),  # a lambda: the general runner
    ]
    for fn, args in calls:
        try:
            await ctx.run(fn, *args)
        except duron.EffectError as exc:
            seen.append(f"{exc.type_name}: {exc.message}")
    return seen


async def test_an_effect_raising_cancelled_error_fails_its_call_not_the_job(
    anyio_backend: str,
) -> None:
    # Nobody cancelled it: waiting on it forever would hang the job. Its outcome is
    # an error, recorded like any other and raised again on replay. (On trio the
    # exception is as foreign as any other: the same holds.)
    storage = MemoryLogStorage()
    cancel_calls.clear()
    # An asyncio task keeps the message of a CancelledError raised inside it from
    # 3.11 on (trio runs the effect through the general runner, which keeps it).
    lost = anyio_backend == "asyncio" and sys.version_info < (3, 11)
    want = [
        "asyncio.exceptions.CancelledError: " + ("" if lost else "gave up"),
        "asyncio.exceptions.CancelledError: " + ("" if lost else "gave up"),
        "asyncio.exceptions.CancelledError: gave up too",
    ]
    with anyio.fail_after(10):
        assert await run_job(giving_up, storage) == want
    assert len(cancel_calls) == 3
    with anyio.fail_after(10):
        assert await run_job(giving_up, storage) == want  # replayed
    assert len(cancel_calls) == 3


effect_tasks: list[asyncio.Task[Any]] = []


@duron.effect
async def cancelled_by_its_pool() -> str:
    effect_tasks.append(asyncio.current_task())  # type: ignore[arg-type]
    await asyncio.sleep(10)
    return "data"


@duron.durable
async def uses_a_pool(ctx: duron.Context) -> str:
    try:
        return await ctx.run(cancelled_by_its_pool)
    except duron.EffectError as exc:
        return f"failed: {exc}"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_effect_task_cancelled_by_someone_else_fails_its_call() -> None:
    # Not the job: a library the effect handed its task to cancels it. That is
    # the effect's outcome, recorded and replayed, not a reason to wait forever.
    effect_tasks.clear()
    storage = MemoryLogStorage()
    async with uses_a_pool.invoke(storage) as job:
        await job.start()
        with anyio.fail_after(5):
            while not effect_tasks:
                await anyio.sleep(0.001)
            effect_tasks[0].cancel()
            result = await job.wait()
    assert result == "failed: asyncio.exceptions.CancelledError: "
    async with uses_a_pool.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == result
    assert len(effect_tasks) == 1


# -- what the decorator reads, decorated inside the test -----------------------------


async def test_a_streaming_effect_folds_with_the_reducer_its_state_names() -> None:
    @duron.effect(name="collect")
    async def collect(
        seen: Annotated[list[str], duron.Reducer(operator.add)], n: int
    ) -> AsyncGenerator[list[str], list[str]]:
        for i in range(n):
            seen = yield [f"item{i} after {len(seen)}"]

    @duron.durable
    async def flow(ctx: duron.Context) -> list[str]:
        return await ctx.run(collect, ["start"], 3)

    storage = MemoryLogStorage()
    want = ["start", "item0 after 1", "item1 after 2", "item2 after 3"]
    assert await run_job(flow, storage) == want
    assert [e.to_json()["value"] for e in storage.entries() if e.type == "emit"] == [
        [item] for item in want[1:]
    ]
    assert await run_job(flow, storage) == want


def test_a_streaming_effect_whose_state_type_is_not_defined_yet_is_refused() -> None:
    # Its reducer is part of the state's annotation, read when it is decorated.
    with pytest.raises(duron.UsageError) as info:

        @duron.effect(name="tally")
        async def tally(
            state: Annotated[Tally, duron.Reducer(operator.add)],  # type: ignore[name-defined] # noqa: F821
        ) -> AsyncGenerator[int, int]:
            yield 1

    assert str(info.value) == (
        "cannot resolve the type hints of tally: name 'Tally' is not defined"
    )


async def test_an_effect_with_star_args_and_kwargs_records_them_by_parameter() -> None:
    @duron.effect(name="label")
    async def label(first: int, *rest: int, sep: str = "-", **tags: str) -> str:
        numbers = sep.join(str(n) for n in (first, *rest))
        return numbers + "".join(f" {k}={v}" for k, v in sorted(tags.items()))

    @duron.durable
    async def flow(ctx: duron.Context) -> list[str]:
        return [
            await ctx.run(label, 1, 2, 3, sep="+", who="ada"),
            await ctx.run(label, 4),
        ]

    storage = MemoryLogStorage()
    assert await run_job(flow, storage) == ["1+2+3 who=ada", "4"]
    assert [e.to_json().get("inputs") for e in storage.entries()[1:-1]] == [
        {"first": 1, "rest": [2, 3], "sep": "+", "tags": {"who": "ada"}},
        {"first": 4},
    ]
    assert await run_job(flow, storage) == ["1+2+3 who=ada", "4"]


# -- what a long effect leaves in the log while it runs ---------------------------------

slow_gate: list[anyio.Event] = []


@duron.effect
async def slow() -> str:
    await slow_gate[0].wait()
    return "done"


@duron.durable
async def slow_flow(ctx: duron.Context) -> str:
    return await ctx.run(slow)


async def test_a_running_effect_is_recorded_as_started_while_it_runs() -> None:
    # A crash while it runs then shows (in ``duron inspect``, in the job list)
    # what the job was doing; the entry goes in once the job is idle a moment.
    slow_gate[:] = [anyio.Event()]
    storage = MemoryLogStorage()
    async with slow_flow.invoke(storage) as job:
        await job.start()
        with anyio.fail_after(5):
            while [e.type for e in storage.entries()] != ["job", "start"]:
                await anyio.sleep(0.01)
        slow_gate[0].set()
        assert await job.wait() == "done"
    assert [e.type for e in storage.entries()] == ["job", "start", "done", "end"]
