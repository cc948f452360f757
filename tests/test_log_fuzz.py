"""Damaged logs: whatever a file holds, only Duron's errors come out of it.

Real logs (effects, an effect that fails, a streaming effect, a gather, a patch, a
durable future, a cancelled job, an unfinished job) are mutated by hypothesis: bit
flips, truncations, fields replaced by values of the wrong type, deep nesting, junk
lines, duplicated, dropped and swapped lines, absurd clocks. Each mutant goes through
every reader: ``decode_entry`` over every line, ``resume()`` of the durable function
(which must not hang), and ``duron verify`` / ``duron inspect`` in-process. Only
:class:`~duron.DuronError` (or the job's own recorded error) may come out, the CLI
exits with a documented code and never prints a traceback.

tests/test_log_validation.py names each kind of malformed field with its whole message.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import operator
import re
import traceback
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import duron
from duron._cli import main
from duron._errors import DuronError
from duron._log import MAX_DEPTH, T_MAX, T_MIN, decode_entry
from duron.contrib.storage import FileLogStorage

if TYPE_CHECKING:
    from pathlib import Path

# -- the job whose logs are mutated --------------------------------------------------


class Square(BaseModel):
    n: int
    square: int


@duron.effect
async def lookup(n: int) -> Square:
    return Square(n=n, square=n * n)


@duron.effect
def explode(n: int) -> int:  # a sync effect: runs in a worker thread
    raise ValueError(f"cannot do {n}")


@duron.effect
async def download(
    done: Annotated[int, duron.Reducer(operator.add)], total: int
) -> AsyncGenerator[int, int]:
    while done < total:
        done = yield 1


@duron.effect
async def cleanup(why: str) -> str:
    return f"cleaned up after {why}"


@duron.durable
async def story(ctx: duron.Context, mode: str) -> str:
    """Finishes once the host completes its future; ``mode`` only names the log.

    No timer: a clock in the future (the year 3000) is no damage, and a timer set
    then would rightly wait for it.
    """
    first = await ctx.run(lookup, 3)
    try:
        await ctx.run(explode, 1)
    except ValueError as err:
        failed = str(err)
    second, total = await asyncio.gather(ctx.run(lookup, 4), ctx.run(download, 0, 3))
    states = []
    async with ctx.stream(download, 0, 2) as (partial, final):
        async for state in partial:
            states.append(state)
        streamed = await final
    if await ctx.patched("say-hello"):
        states.append(-1)
    _, approval = await ctx.create_future(int, name="approval")
    try:
        approved = await approval
    except asyncio.CancelledError:
        await ctx.run(cleanup, mode)
        raise
    return (
        f"{first.square} {failed} {second.square} {total} {states} "
        f"{streamed} {approved}"
    )


def _pending_future(job: duron.Job[..., Any]) -> str | None:
    return next((str(i) for i in range(24) if job.is_future_pending(str(i))), None)


async def _complete_futures(job: duron.Job[..., Any]) -> None:
    """Complete every future the job waits on, as soon as it waits on it."""
    while True:
        future_id = _pending_future(job)
        if future_id is not None:
            with contextlib.suppress(DuronError):  # gone in between: fine
                await job.complete_future(future_id, result=1)
        await anyio.sleep(0.002)


async def _until_waiting(job: duron.Job[..., Any]) -> None:
    with anyio.fail_after(10):
        while _pending_future(job) is None:
            await anyio.sleep(0.002)


async def _record(path: Path, mode: str) -> None:
    async with story.invoke(FileLogStorage(path)) as job:
        await job.start(mode)
        if mode == "unfinished":
            await _until_waiting(job)
            await anyio.sleep(0.3)  # past the start flush: the future is logged
            return  # closed while it waits: the log stops there
        async with anyio.create_task_group() as tg:
            if mode == "cancelled":

                async def cancel_when_waiting() -> None:
                    await _until_waiting(job)
                    await job.cancel()

                tg.start_soon(cancel_when_waiting)
            else:
                tg.start_soon(_complete_futures, job)
            with contextlib.suppress(duron.JobCancelledError):
                await job.wait()
            tg.cancel_scope.cancel()


MODES = ("finished", "cancelled", "unfinished")


REAL: dict[str, bytes] = {}


@pytest.fixture(scope="module")
def real_logs(_scratch: None) -> dict[str, bytes]:
    # Recorded where the mutants are written: a cancelled job's end names its log.
    for mode in MODES:
        path = _DIR[0] / f"{mode}.jsonl"
        anyio.run(_record, path, mode)
        REAL[mode] = path.read_bytes()
    return REAL


def test_the_real_logs_hold_every_kind_of_entry(real_logs: dict[str, bytes]) -> None:
    def types(mode: str) -> list[str]:
        return [orjson.loads(line)["type"] for line in real_logs[mode].splitlines()]

    finished = types("finished")
    assert {"job", "start", "done", "emit", "end"} <= set(finished)
    assert b'"error":{"type":"builtins.ValueError"' in real_logs["finished"]
    assert b'"kind":"patch"' in real_logs["finished"]
    assert b'"kind":"future"' in real_logs["finished"]
    assert "cancel" in types("cancelled")
    assert types("cancelled")[-1] == "end"
    assert "end" not in types("unfinished")
    for mode in MODES:  # and each of them replays as it is
        assert _resume_outcome(_write(mode, real_logs[mode])) != "hang"


# -- mutations --------------------------------------------------------------------------


def _deep(levels: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * levels + b"]" * levels
    return b'{"a":' * levels + b"0" + b"}" * levels


RAW_VALUES = st.one_of(
    st.sampled_from(
        [
            b"null",
            b"true",
            b"-1",
            b"0",
            b"1e300",
            b"-1e300",
            b"1e400",  # not JSON: a double cannot hold it
            b"18446744073709551616",  # 2**64: read as a float
            b"99999999999999999999999999999",
            repr(T_MAX + 1).encode(),
            repr(T_MIN - 1).encode(),
            repr(T_MAX).encode(),
            b"253402300800",
            b"32503680000.0",  # the year 3000: a clock in the future is no damage
            b'""',
            b'"x"',
            # Well-formed values of the right type that say something else.
            b'"effect"',
            b'"future"',
            b'"patch"',
            b'"input"',
            b'"lookup"',
            b'"download"',
            b'"say-hello"',
            b'"builtins.KeyError"',
            b'"asyncio.exceptions.CancelledError"',
            b'"duron._errors.JobCancelledError"',
            b"2",
            b"5",
            b"6",
            b"7",
            b'{"n":4}',
            b'{"done":0,"total":3}',
            b'{"type":"builtins.ValueError","message":"cannot do 1"}',
            b'"\\ud800"',  # a lone surrogate: not JSON for orjson
            b"[]",
            b"[1,2]",
            b"{}",
            b'{"type":1}',
            b'{"type":"x","message":"y","args":[[1]]}',
            b'{"type":"x","message":"y","args":{}}',
            b'{"message":"y"}',
        ]
    ),
    st.builds(
        _deep,
        st.sampled_from(
            [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000, 1023, 1100]
        ),
        st.sampled_from(["list", "object"]),
    ),
    st.builds(
        lambda v: json.dumps(v).encode(),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=6),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        ),
    ),
)

JUNK_LINES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"[]",
            b"5",
            b'"done"',
            b"null",
            b"{}",
            b'{"type":"done"}',
            b'{"type":"bogus","id":1,"t":1.0}',
            b'{"type":"cancel","t":1.0}',
            b'{"type":"end","t":1.0,"result":null}',
            b'{"type":"job","version":1,"fn":"story","args":{"mode":"x"},"seed":"a",'
            b'"t":1.0}',
            b'{"type":"job","version":7,"fn":"story","args":{},"seed":"a","t":1.0}',
            b'{"type":"start","id":99,"t":1.0,"kind":"effect","name":"lookup",'
            b'"inputs":{"n":1}}',
            b'{"type":"done","id":99,"t":1.0,"result":1}',
            b'{"type":"emit","id":0,"t":1.0,"value":1}',
            b"\xff\xfe\x00garbage",
        ]
    ),
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b" ")),
)

KEYS = (
    "type",
    "id",
    "t",
    "kind",
    "name",
    "inputs",
    "result",
    "error",
    "value",
    "version",
    "fn",
    "module",
    "args",
    "seed",
    "error.type",
    "error.message",
    "error.args",
    "inputs.n",
    "args.mode",
    "result.square",
)

_HOLE = b'"@@hole@@"'


def _set_field(line: bytes, key: str, raw: bytes | None) -> bytes:
    """``line`` with ``key`` (dotted for a nested field) set to the JSON ``raw``, or
    deleted when ``raw`` is None; unchanged if the line is not an object."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if type(entry) is not dict:
        return line
    *outer, last = key.split(".")
    target: Any = entry
    for part in outer:
        target = target.get(part) if type(target) is dict else None
    if type(target) is not dict:
        return line
    if raw is None:
        target.pop(last, None)
    else:
        target[last] = "@@hole@@"
    try:
        text = orjson.dumps(entry)
    except orjson.JSONEncodeError:  # an earlier mutation nested it too deep
        return line
    return text if raw is None else text.replace(_HOLE, raw)


@st.composite
def mutants(draw: st.DrawFn, logs: dict[str, bytes]) -> tuple[str, bytes]:
    """A real log, mutated one to three times: ``(its mode, the bytes)``."""
    mode = draw(st.sampled_from(MODES))
    lines = logs[mode].split(b"\n")[:-1]
    for _ in range(draw(st.integers(1, 3))):
        n = len(lines)
        where = st.integers(0, max(n - 1, 0))
        op = draw(
            st.sampled_from(
                [
                    "flip",
                    "truncate",
                    "field",
                    "field",
                    "delete",
                    "clock",
                    "junk",
                    "duplicate",
                    "drop",
                    "swap",
                ]
            )
        )
        if n == 0:
            op = "junk"
        if op == "flip":
            flipped = bytearray(b"\n".join(lines) + b"\n")
            pos = draw(st.integers(0, len(flipped) - 1))
            flipped[pos] ^= 1 << draw(st.integers(0, 7))
            # If the flip hit the last newline, the last line is now a torn tail.
            lines = bytes(flipped).split(b"\n")
        elif op == "truncate":
            whole = b"\n".join(lines) + b"\n"
            lines = whole[: draw(st.integers(0, len(whole)))].split(b"\n")
        elif op == "field":
            i = draw(where)
            lines[i] = _set_field(
                lines[i], draw(st.sampled_from(KEYS)), draw(RAW_VALUES)
            )
        elif op == "delete":
            i = draw(where)
            lines[i] = _set_field(lines[i], draw(st.sampled_from(KEYS)), None)
        elif op == "clock":
            i = draw(where)
            clock = draw(
                st.sampled_from(
                    [
                        b"1e20",
                        b"-1e20",
                        b"1e300",
                        b"253402300800.5",
                        b"-62135596801",
                        b"32503680000.0",
                        b"0.0",
                        b"-1.5",
                        b"1",
                    ]
                )
            )
            lines[i] = _set_field(lines[i], "t", clock)
        elif op == "junk":
            lines.insert(draw(st.integers(0, n)), draw(JUNK_LINES))
        elif op == "duplicate":
            i = draw(where)
            lines.insert(draw(st.integers(0, n)), lines[i])
        elif op == "drop":
            del lines[draw(where)]
        else:
            i, j = draw(where), draw(where)
            lines[i], lines[j] = lines[j], lines[i]
    if op not in ("truncate", "flip"):
        lines.append(b"")  # else the last line is a torn tail, or empty: kept so
    return mode, b"\n".join(lines)


# -- the readers ----------------------------------------------------------------------


_DIR: list[Path] = []


def _write(name: str, data: bytes) -> Path:
    path = _DIR[0] / f"{name}.jsonl"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module", autouse=True)
def _scratch(tmp_path_factory: pytest.TempPathFactory) -> None:
    _DIR[:] = [tmp_path_factory.mktemp("mutants")]


def _recorded_error_types(data: bytes) -> set[str]:
    return {
        m.decode("utf-8", "replace") for m in re.findall(rb'"type":"([^"]*)"', data)
    }


def _resume_outcome(path: Path) -> str:
    """Resume the job the file holds; what came of it (``"hang"`` if it did not end).

    Raises:
        Exception: What ``resume()`` or ``wait()`` raised, unless a Duron error.
    """
    failure: list[BaseException] = []

    async def run() -> str:
        with anyio.move_on_after(20):
            async with story.invoke(FileLogStorage(path)) as job:
                await job.resume()
                outcome: list[str] = []

                async def wait() -> None:
                    try:
                        outcome.append(f"returned {await job.wait()!r}")
                    except Exception as exc:
                        failure.append(exc)
                        outcome.append("raised")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    tg.start_soon(_complete_futures, job)
                    while not outcome:
                        await anyio.sleep(0.002)
                    tg.cancel_scope.cancel()
                return outcome[0]
        return "hang"

    try:
        result = anyio.run(run)
    except DuronError as err:
        return f"{type(err).__name__}: {err}"
    if failure and not isinstance(failure[0], DuronError):
        raise failure[0]
    return result


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except BaseException:
            pytest.fail(f"duron {argv[0]} raised:\n{traceback.format_exc()}")
    return code, out.getvalue(), err.getvalue()


def _check_every_reader(name: str, data: bytes) -> None:
    # (a) the reader, line by line, as a file log reads it (a torn tail included).
    offset = 0
    for line in data.split(b"\n"):
        try:
            decode_entry(line, job=name, offset=offset)
        except duron.CorruptLogError as exc:
            reported = exc.offset
        else:
            reported = offset
        assert reported == offset
        offset += len(line) + 1

    path = _write(name, data)
    # (c) the CLI, before resume() repairs a torn tail or appends.
    for argv in (
        ("inspect", str(path), "--plain"),
        ("inspect", str(path), "--json"),
        ("inspect", str(path), "--full", "--plain"),
    ):
        code, out, err = _cli(*argv)
        assert code in (0, 2), (argv, code, out, err)
        assert "Traceback" not in out + err
    code, out, err = _cli("verify", f"{__name__}:story", str(path), "--no-progress")
    assert code in (0, 1, 2), (code, out, err)
    assert "Traceback" not in out + err

    # (b) resume() in-process: Duron's errors, or the job's own recorded error.
    try:
        outcome = _resume_outcome(path)
    except Exception as exc:
        qualified = f"{type(exc).__module__}.{type(exc).__qualname__}"
        if qualified not in _recorded_error_types(data):
            raise
    else:
        assert outcome != "hang", data


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@pytest.mark.usefixtures("real_logs")
@given(data=st.data())
def test_a_mutated_log_raises_only_duron_errors_in_every_reader(
    data: st.DataObject,
) -> None:
    mode, mutant = data.draw(mutants(REAL), label="mutant")
    _check_every_reader(mode, mutant)
