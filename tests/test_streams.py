"""Streams: injected host input and output, streams between durable tasks, deadlines.

Host input (``Stream[T]`` parameters) is recorded when it arrives and delivered at
the same point of the durable code on replay; output (``StreamWriter[T]``
parameters) is not recorded, so a host reader sees every value again after a
restart. Streams made with ``ctx.create_stream`` live in the durable loop only.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from support import run_hosted

import duron
from duron.contrib.storage import MemoryLogStorage

pytestmark = [pytest.mark.anyio, pytest.mark.both_hosts]

effect_calls: list[str] = []
observed: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    effect_calls.clear()
    observed.clear()


async def read_all(job: duron.Job[..., Any], name: str, start: int = 0) -> list[Any]:
    reader = await job.open_stream(name, "r", start=start)
    return [value async for value in reader]


# -- host input and output round trip ----------------------------------------------------


@duron.effect
async def shout(text: str) -> str:
    effect_calls.append(text)
    return text.upper()


class Note(BaseModel):
    seq: int
    text: str


@duron.durable
async def echo(
    ctx: duron.Context,
    inbox: duron.Stream[str] = duron.Provided,
    outbox: duron.StreamWriter[Note] = duron.Provided,
) -> list[str]:
    seen: list[str] = []
    async for message in inbox:
        loud = await ctx.run(shout, message)
        seen.append(loud)
        await outbox.send(Note(seq=len(seen), text=loud))
    await outbox.close()
    return seen


async def test_host_stream_round_trip_replays_without_effects() -> None:
    storage = MemoryLogStorage()
    outputs: list[Note] = []

    async def host(job: duron.Job[..., Any]) -> None:
        inbox = await job.open_stream("inbox", "w")
        for word in ("a", "b", "c"):
            await inbox.send(word)
        await inbox.close()
        outputs.extend(await read_all(job, "outbox"))

    assert await run_hosted(echo, storage, host) == ["A", "B", "C"]
    assert outputs == [
        Note(seq=1, text="A"),
        Note(seq=2, text="B"),
        Note(seq=3, text="C"),
    ]
    assert effect_calls == ["a", "b", "c"]
    log = storage.raw

    # Replay: the host reader sees every value again (a UI can redraw), nothing runs.
    again: list[Note] = []
    partial: list[Note] = []

    async def replay_host(job: duron.Job[..., Any]) -> None:
        again.extend(await read_all(job, "outbox"))
        partial.extend(await read_all(job, "outbox", start=2))

    assert await run_hosted(echo, storage, replay_host) == ["A", "B", "C"]
    assert again == outputs
    assert partial == [Note(seq=3, text="C")]
    assert effect_calls == ["a", "b", "c"]
    assert storage.raw == log


async def test_host_input_is_logged_as_emissions_of_an_input_operation() -> None:
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        inbox = await job.open_stream("inbox", "w")
        await inbox.send("x")
        await inbox.close()

    await run_hosted(echo, storage, host)
    entries = [e.to_json() for e in storage.entries()[1:]]
    for e in entries:
        e.pop("t")
    assert entries[0] == {"type": "start", "id": 0, "kind": "input", "name": "inbox"}
    assert {"type": "emit", "id": 0, "value": "x"} in entries
    assert {"type": "done", "id": 0, "result": None} in entries


async def test_reader_position_resumes_where_it_stopped() -> None:
    storage = MemoryLogStorage()
    async with echo.invoke(storage) as job:
        await job.start()
        inbox = await job.open_stream("inbox", "w")
        reader = await job.open_stream("outbox", "r")
        await inbox.send("one")
        first = await reader.__anext__()
        assert reader.position == 1
        await inbox.send("two")
        await inbox.close()
        rest = [
            v async for v in await job.open_stream("outbox", "r", start=reader.position)
        ]
        assert await job.wait() == ["ONE", "TWO"]
    assert first == Note(seq=1, text="ONE")
    assert rest == [Note(seq=2, text="TWO")]


# -- host values arriving while effects finish -------------------------------------------

timing = random.Random(0)


@duron.effect
async def tick(i: int) -> int:
    await anyio.sleep(timing.random() * 0.004)
    effect_calls.append(f"tick {i}")
    return i


@duron.durable
async def interleave(
    ctx: duron.Context, inbox: duron.Stream[int] = duron.Provided
) -> list[str]:
    seen: list[str] = []

    async def ticks() -> None:
        for batch in range(6):
            done = await asyncio.gather(
                *(ctx.run(tick, batch * 3 + k) for k in range(3))
            )
            seen.append(f"ticks {done} at {await ctx.time()}")

    async def reads() -> None:
        async for value in inbox:
            seen.append(f"input {value} at {await ctx.time()}")

    await asyncio.gather(ticks(), reads())
    observed.extend(seen)
    return seen


@pytest.mark.parametrize("seed", range(4))
async def test_host_values_racing_effects_replay_at_the_same_point(seed: int) -> None:
    timing.seed(seed)
    rng = random.Random(seed)
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        inbox = await job.open_stream("inbox", "w")
        for value in range(12):
            await anyio.sleep(rng.random() * 0.003)
            await inbox.send(value)
        await inbox.close()

    first = await run_hosted(interleave, storage, host)
    live_view = list(observed)
    calls = list(effect_calls)
    inputs = [s.split()[1] for s in first if s.startswith("input")]
    assert inputs == [str(v) for v in range(12)]
    assert len(first) == 6 + 12
    observed.clear()

    async def no_host(job: duron.Job[..., Any]) -> None:
        pass

    # Replay: the durable code sees the same interleaving, at the same times.
    assert await run_hosted(interleave, storage, no_host) == first
    assert observed == live_view
    assert effect_calls == calls


# -- streams between durable tasks ---------------------------------------------------------


@duron.effect
async def produce(writer: int, i: int) -> str:
    await anyio.sleep(timing.random() * 0.003)
    effect_calls.append(f"w{writer}-{i}")
    return f"w{writer}-{i}"


@duron.durable
async def fan_in(
    ctx: duron.Context, out: duron.StreamWriter[str] = duron.Provided
) -> list[str]:
    reader, writer = await ctx.create_stream(str, name="fan-in")

    async def write(w: int) -> None:
        for i in range(5):
            await writer.send(await ctx.run(produce, w, i))

    async def write_all() -> None:
        await asyncio.gather(*(write(w) for w in range(4)))
        await writer.close()

    task = asyncio.create_task(write_all())
    got: list[str] = []
    async for value in reader:
        got.append(value)
        await out.send(value)
    await task
    await out.close()
    return got


@pytest.mark.parametrize("seed", range(3))
async def test_four_concurrent_writers_and_a_reader(seed: int) -> None:
    timing.seed(seed)
    storage = MemoryLogStorage()
    seen_by_host: list[str] = []

    async def host(job: duron.Job[..., Any]) -> None:
        seen_by_host.extend(await read_all(job, "out"))

    got = await run_hosted(fan_in, storage, host)
    assert sorted(got) == sorted(f"w{w}-{i}" for w in range(4) for i in range(5))
    for w in range(4):  # each writer's values arrive in the order it sent them
        assert [v for v in got if v.startswith(f"w{w}-")] == [
            f"w{w}-{i}" for i in range(5)
        ]
    assert seen_by_host == got
    calls = list(effect_calls)
    log = storage.raw

    replayed: list[str] = []

    async def replay_host(job: duron.Job[..., Any]) -> None:
        replayed.extend(await read_all(job, "out"))

    assert await run_hosted(fan_in, storage, replay_host) == got
    assert replayed == got
    assert effect_calls == calls
    assert storage.raw == log


# -- streams closed with an error ------------------------------------------------------------


class FeedBroken(Exception):
    pass


@duron.durable
async def broken_inner_stream(ctx: duron.Context) -> list[str]:
    reader, writer = await ctx.create_stream(str)

    async def write() -> None:
        await writer.send("one")
        await writer.send("two")
        await writer.close(FeedBroken("upstream went away"))

    task = asyncio.create_task(write())
    got: list[str] = []
    try:
        async for value in reader:
            got.append(value)
    except FeedBroken as err:
        got.append(f"raised {err}")
    else:
        got.append("ended quietly")
    await task
    return got


async def test_reader_of_a_stream_closed_with_an_error_raises_it() -> None:
    storage = MemoryLogStorage()

    async def no_host(job: duron.Job[..., Any]) -> None:
        pass

    expected = ["one", "two", "raised upstream went away"]
    assert await run_hosted(broken_inner_stream, storage, no_host) == expected
    assert await run_hosted(broken_inner_stream, storage, no_host) == expected


@duron.durable
async def read_inbox(
    ctx: duron.Context, inbox: duron.Stream[str] = duron.Provided
) -> list[str]:
    return [value async for value in inbox]


async def test_host_closing_input_with_an_error_raises_it_in_durable_code() -> None:
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        inbox = await job.open_stream("inbox", "w")
        await inbox.send("one")
        await inbox.close(FeedBroken("the host gave up"))

    with pytest.raises(FeedBroken, match=r"^the host gave up$"):
        await run_hosted(read_inbox, storage, host)

    async def no_host(job: duron.Job[..., Any]) -> None:
        pass

    # Replay rebuilds the recorded error as its own type.
    with pytest.raises(FeedBroken, match=r"^the host gave up$"):
        await run_hosted(read_inbox, storage, no_host)


@duron.durable
async def broken_output(
    ctx: duron.Context, out: duron.StreamWriter[int] = duron.Provided
) -> str:
    await out.send(1)
    await out.close(FeedBroken("no more numbers"))
    return "closed"


async def test_host_reader_of_an_output_closed_with_an_error_raises_it() -> None:
    storage = MemoryLogStorage()
    for _ in range(2):  # live, then replayed
        got: list[Any] = []

        async def host(job: duron.Job[..., Any], got: list[Any] = got) -> None:
            reader = await job.open_stream("out", "r")
            got.append(await reader.__anext__())
            with pytest.raises(FeedBroken, match=r"^no more numbers$"):
                await reader.__anext__()

        assert await run_hosted(broken_output, storage, host) == "closed"
        assert got == [1]


# -- durable deadlines on a stream read ----------------------------------------------------


@duron.durable
async def patient(
    ctx: duron.Context,
    inbox: duron.Stream[str] = duron.Provided,
    outbox: duron.StreamWriter[str] = duron.Provided,
) -> list[str]:
    got: list[str] = []
    for i, limit in enumerate([0.05, 30.0, 0.05]):
        try:
            value = await asyncio.wait_for(inbox.next(), limit)
        except asyncio.TimeoutError:
            got.append(f"timeout {i}")
        else:
            got.append(f"got {value}")
        await outbox.send(got[-1])
    observed.extend(got)
    return got


async def test_wait_for_on_a_stream_read_is_a_durable_deadline() -> None:
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        inbox = await job.open_stream("inbox", "w")
        async for event in await job.open_stream("outbox", "r"):
            if event == "timeout 0":  # the second read waits up to 30 s: answer it
                await inbox.send("late")

    expected = ["timeout 0", "got late", "timeout 2"]
    assert await run_hosted(patient, storage, host) == expected

    async def no_host(job: duron.Job[..., Any]) -> None:
        pass

    observed.clear()
    with anyio.fail_after(5):  # replay takes time from the log: it does not wait
        assert await run_hosted(patient, storage, no_host) == expected
    assert observed == expected


@duron.durable
async def racing_reads(
    ctx: duron.Context, inbox: duron.Stream[int] = duron.Provided
) -> list[str]:
    got: list[str] = []
    for _ in range(10):
        try:
            value = await asyncio.wait_for(inbox.next(), 0.004)
        except asyncio.TimeoutError:
            got.append(f"timeout at {await ctx.time()}")
        except StopAsyncIteration:
            got.append("closed")
            break
        else:
            got.append(f"{value} at {await ctx.time()}")
    return got


@pytest.mark.parametrize("seed", range(3))
async def test_deadlines_racing_host_values_replay_identically(seed: int) -> None:
    rng = random.Random(seed)
    storage = MemoryLogStorage()

    async def host(job: duron.Job[..., Any]) -> None:
        inbox = await job.open_stream("inbox", "w")
        try:
            for value in range(10):
                await anyio.sleep(rng.random() * 0.008)
                await inbox.send(value)
            await inbox.close()
        except duron.UsageError:
            pass  # the job took its ten reads and ended first

    first = await run_hosted(racing_reads, storage, host)
    assert len(first) in range(1, 11)

    async def no_host(job: duron.Job[..., Any]) -> None:
        pass

    assert await run_hosted(racing_reads, storage, no_host) == first


# -- errors ----------------------------------------------------------------------------------


@duron.durable
async def typed_inbox(
    ctx: duron.Context,
    numbers: duron.Stream[int] = duron.Provided,
    results: duron.StreamWriter[int] = duron.Provided,
) -> int:
    total = 0
    async for n in numbers:
        total += n
        await results.send(total)
    return total


async def test_wrong_stream_name_and_direction() -> None:
    storage = MemoryLogStorage()
    async with typed_inbox.invoke(storage) as job:
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "job <memory>: open_stream('numbers') needs a started job: call "
                "start() or resume() first"
            ),
        ):
            await job.open_stream("numbers", "w")
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "durable function typed_inbox has no provided parameter 'number' "
                "(provided parameters: numbers, results)"
            ),
        ):
            await job.open_stream("number", "w")
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "'numbers' is a stream the durable code reads; the host writes it: "
                "open_stream('numbers', 'w')"
            ),
        ):
            await job.open_stream("numbers", "r")
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "'results' is a StreamWriter the durable code writes to; the host "
                "reads it: open_stream('results', 'r')"
            ),
        ):
            await job.open_stream("results", "w")
        with pytest.raises(
            duron.UsageError,
            match=re.escape("open_stream mode must be 'r' or 'w', not 'rw'"),
        ):
            await job.open_stream("numbers", "rw")  # type: ignore[call-overload]
        numbers = await job.open_stream("numbers", "w")
        await numbers.send(1)
        await numbers.close()
        assert await job.wait() == 1


async def test_value_failing_validation_writes_nothing() -> None:
    storage = MemoryLogStorage()
    async with typed_inbox.invoke(storage) as job:
        await job.start()
        numbers = await job.open_stream("numbers", "w")
        results = await job.open_stream("results", "r")
        await numbers.send(2)
        assert await results.__anext__() == 2
        before = storage.raw
        with pytest.raises(
            duron.PayloadError,
            match=re.escape(
                "value sent to 'numbers' (int): cannot encode str: Input should be a valid integer, "
                "unable to parse string as an integer"
            ),
        ):
            await numbers.send("two")
        assert storage.raw == before
        await numbers.send(3)  # the stream still works
        await numbers.close()
        assert await job.wait() == 5


@duron.durable
async def two_inputs(
    ctx: duron.Context,
    first: duron.Stream[int] = duron.Provided,
    second: duron.Stream[int] = duron.Provided,
) -> int:
    total = sum([n async for n in first])
    return total + sum([n async for n in second])


async def test_sending_after_close_and_after_the_end() -> None:
    storage = MemoryLogStorage()
    closed = "job <memory>: 'first' is closed; it takes no more values"
    ended = "job <memory> has ended; it takes no more input"
    async with two_inputs.invoke(storage) as job:
        await job.start()
        first = await job.open_stream("first", "w")
        second = await job.open_stream("second", "w")
        await first.send(1)
        await first.close()
        with pytest.raises(duron.UsageError, match=re.escape(closed)):
            await first.send(1)
        with pytest.raises(duron.UsageError, match=re.escape(closed)):
            await first.close()
        await second.send(2)
        await second.close()
        assert await job.wait() == 3
        log = storage.raw
        with pytest.raises(duron.UsageError, match=re.escape(ended)):
            await second.send(1)
    assert storage.raw == log

    # A replayed job that already ended takes no input either.
    async with two_inputs.invoke(storage) as job:
        await job.start()
        first = await job.open_stream("first", "w")
        with pytest.raises(duron.UsageError, match=re.escape(ended)):
            await first.send(1)
        assert await job.wait() == 3
    assert storage.raw == log


@duron.durable
async def send_after_close(ctx: duron.Context) -> str:
    _reader, writer = await ctx.create_stream(int, name="numbers")
    await writer.close()
    try:
        await writer.send(1)
    except duron.StreamClosed as err:
        return str(err)
    return "sent"


@duron.durable
async def bad_output(
    ctx: duron.Context, results: duron.StreamWriter[int] = duron.Provided
) -> str:
    await results.close()
    try:
        await results.send(1)
    except duron.StreamClosed as err:
        return str(err)
    return "sent"


async def test_durable_code_sending_to_a_closed_stream() -> None:
    storage = MemoryLogStorage()

    async def no_host(job: duron.Job[..., Any]) -> None:
        pass

    assert await run_hosted(send_after_close, storage, no_host) == (
        "stream numbers is closed"
    )
    assert await run_hosted(bad_output, MemoryLogStorage(), no_host) == (
        "stream results is closed"
    )


@duron.durable
async def wrong_output_type(
    ctx: duron.Context, results: duron.StreamWriter[int] = duron.Provided
) -> str:
    await results.send("not a number")  # type: ignore[arg-type]
    return "sent"


async def test_durable_code_sending_an_invalid_value_fails_the_job() -> None:
    storage = MemoryLogStorage()
    async with wrong_output_type.invoke(storage) as job:
        await job.start()
        with pytest.raises(
            duron.PayloadError,
            match=re.escape(
                "value sent to stream 'results' (int): cannot encode str: Input should be a valid "
                "integer, unable to parse string as an integer"
            ),
        ):
            await job.wait()
    assert [e.type for e in storage.entries()] == ["job"]
