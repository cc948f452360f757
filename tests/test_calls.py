"""Calls with wrong arguments are refused before anything is written or recorded,
and durable functions take every kind of parameter."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel
from support import resume_job, run_job

import duron
from duron._codec import PydanticCodec
from duron._effect import effect_spec
from duron._signature import Signature
from duron.contrib.storage import MemoryLogStorage

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

ran: list[tuple[int, int]] = []


@duron.effect
async def add(a: int, b: int) -> int:
    ran.append((a, b))
    return a + b


@duron.durable
async def needs_two(ctx: duron.Context, a: int, b: int) -> int:
    return await ctx.run(add, a, b)


async def test_start_without_a_required_argument_writes_nothing() -> None:
    storage = MemoryLogStorage()
    async with needs_two.invoke(storage) as job:
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "needs_two() called with bad arguments: missing a required argument: "
                "'b'"
            ),
        ):
            await job.start(1)  # type: ignore[call-arg]
    assert storage.entries() == []


async def test_start_with_too_many_arguments_writes_nothing() -> None:
    storage = MemoryLogStorage()
    async with needs_two.invoke(storage) as job:
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "needs_two() called with bad arguments: too many positional arguments"
            ),
        ):
            await job.start(1, 2, 3)  # type: ignore[call-arg]
    assert storage.entries() == []


@duron.durable
async def calls_add_with_one(ctx: duron.Context) -> int:
    result: int = await ctx.run(add, 1)  # type: ignore[call-overload]
    return result


async def test_an_effect_called_without_a_required_argument_is_refused() -> None:
    # Not a TypeError recorded as the effect's outcome (and replayed forever): a
    # usage error in durable code, before the call is recorded or run.
    ran.clear()
    storage = MemoryLogStorage()
    async with calls_add_with_one.invoke(storage) as job:
        await job.start()
        with pytest.raises(
            duron.UsageError,
            match=re.escape(
                "add() called with bad arguments: missing a required argument: 'b'"
            ),
        ):
            await job.wait()
    assert ran == []
    assert [e.type for e in storage.entries()] == ["job"]


@duron.durable
async def calls_add_by_keyword(ctx: duron.Context) -> int:
    return await ctx.run(add, b=2, a=1)


async def test_keywords_still_bind() -> None:
    ran.clear()
    assert await run_job(calls_add_by_keyword, MemoryLogStorage()) == 3
    assert ran == [(1, 2)]


@duron.durable
async def variadic(
    ctx: duron.Context, /, first: int, *rest: int, scale: int = 1, **tags: str
) -> list[object]:
    return [first, list(rest), scale, dict(tags)]


async def test_a_durable_function_with_star_args_and_kwargs_runs_and_replays() -> None:
    storage = MemoryLogStorage()
    expected = [1, [2, 3], 10, {"who": "ada"}]
    for _ in range(2):  # live, then started again with the same call: replayed
        async with variadic.invoke(storage) as job:
            await job.start(1, 2, 3, scale=10, who="ada")
            assert await job.wait() == expected
    assert storage.entries()[0].to_json()["args"] == {
        "first": 1,
        "rest": [2, 3],
        "scale": 10,
        "tags": {"who": "ada"},
    }


# -- binding a call: what the decorators read, and what a call records ------------------
#
# The functions below are decorated inside the tests, so that reading their signature
# is part of what each test checks.


def _scaling() -> tuple[Any, Any, Any]:
    @duron.effect(name="scale")
    async def scale(x: int, factor: int = 2) -> int:
        return x * factor

    @duron.effect(name="join")
    async def join(words: list[str], sep: str = " ") -> str:
        return sep.join(words)

    @duron.effect(name="shout")
    async def shout(word: str) -> str:
        return word.upper()

    return scale, join, shout


async def test_a_call_binds_by_position_or_keyword_and_records_what_was_passed() -> (
    None
):
    scale, join, _ = _scaling()

    @duron.durable
    async def flow(ctx: duron.Context) -> list[object]:
        return [
            await ctx.run(scale, 3),
            await ctx.run(scale, 3, 4),
            await ctx.run(scale, 3, factor=4),
            await ctx.run(scale, x=3),
            await ctx.run(join, ["a", "b"]),
            await ctx.run(join, ["a", "b"], "-"),
            await ctx.run(join, ["a"], sep="-"),
        ]

    storage = MemoryLogStorage()
    want = [6, 12, 12, 6, "a b", "a-b", "a"]
    assert await run_job(flow, storage) == want
    # Defaults are not recorded: scale(3) and scale(x=3) are the same call.
    assert [e.to_json().get("inputs") for e in storage.entries()[1:-1]] == [
        {"x": 3},
        {"x": 3, "factor": 4},
        {"x": 3, "factor": 4},
        {"x": 3},
        {"words": ["a", "b"]},
        {"words": ["a", "b"], "sep": "-"},
        {"words": ["a"], "sep": "-"},
    ]
    assert await run_job(flow, storage) == want  # replayed: the same calls


@pytest.mark.parametrize(
    ("effect", "args", "kwargs", "error", "message"),
    [
        (
            "scale",
            (1,),
            {"x": 2},
            duron.UsageError,
            "scale() called with bad arguments: multiple values for argument 'x'",
        ),
        (
            "scale",
            (1, 2),
            {"factor": 3},
            duron.UsageError,
            "scale() called with bad arguments: multiple values for argument 'factor'",
        ),
        (
            "scale",
            (1,),
            {"other": 3},
            duron.UsageError,
            "scale() called with bad arguments: got an unexpected keyword argument "
            "'other'",
        ),
        (
            "shout",
            (5,),
            {},
            duron.PayloadEncodeError,
            "job <memory>: position 0: argument 'word' of shout (str): cannot "
            "encode int: Input should be a valid string",
        ),
        (
            "shout",
            (),
            {},
            duron.UsageError,
            "shout() called with bad arguments: missing a required argument: 'word'",
        ),
    ],
    ids=[
        "twice-by-position",
        "all-positional-and-again",
        "unknown-keyword",
        "type",
        "missing",
    ],
)
async def test_a_call_that_does_not_bind_or_encode_is_refused_before_it_runs(
    effect: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    scale, _, shout = _scaling()
    fn = {"scale": scale, "shout": shout}[effect]

    @duron.durable
    async def flow(ctx: duron.Context) -> object:
        return await ctx.run(fn, *args, **kwargs)

    storage = MemoryLogStorage()
    async with flow.invoke(storage) as job:
        await job.start()
        with pytest.raises(error) as info:
            await job.wait()
    if error is duron.UsageError:  # a usage error in durable code says where
        message = f"job <memory>: position 0: {message}"
    assert str(info.value) == message
    assert [e.type for e in storage.entries()] == ["job"]


async def test_a_resumed_job_gets_its_arguments_by_name_around_the_defaults() -> None:
    @duron.durable
    async def pair(ctx: duron.Context, a: int = 1, b: int = 2) -> list[int]:
        return [a, b]

    storage = MemoryLogStorage()
    async with pair.invoke(storage) as job:
        await job.start(b=5)
        await job.close()
    assert storage.entries()[0].to_json()["args"] == {"b": 5}
    assert await resume_job(pair, storage) == [1, 5]


class Doubler:
    """A callable object: it has no ``__qualname__`` of its own."""

    async def __call__(self, n: int) -> int:
        return 2 * n


class Tripler:
    """A callable object that names itself, as some wrappers do."""

    def __init__(self) -> None:
        self.__name__ = "legacy_tripler"

    async def __call__(self, n: int) -> int:
        return 3 * n


class Greeting(BaseModel):
    text: str


class Greeter:
    """A callable object whose ``__call__`` is annotated (and its class too)."""

    greeting: str = "hello"

    async def __call__(self, name: str) -> Greeting:
        return Greeting(text=f"{self.greeting} {name}")


async def test_a_callable_object_s_payloads_are_typed_by_its_call_method() -> None:
    @duron.durable
    async def flow(ctx: duron.Context) -> Greeting:
        greeting: Greeting = await ctx.run(Greeter(), "ada")
        return greeting

    storage = MemoryLogStorage()
    for _ in range(2):  # live, then replayed: the model both times
        assert await run_job(flow, storage) == Greeting(text="hello ada")
    done = storage.entries()[1]
    assert done.to_json() == {
        "type": "done",
        "id": 0,
        "t": done.t,
        "kind": "effect",
        "name": "Greeter",
        "inputs": {"name": "ada"},
        "result": {"text": "hello ada"},
    }


async def test_callable_objects_are_recorded_by_their_own_name_or_their_class() -> None:
    @duron.durable
    async def flow(ctx: duron.Context) -> list[int]:
        return [await ctx.run(Doubler(), 2), await ctx.run(Tripler(), 2)]

    storage = MemoryLogStorage()
    assert await run_job(flow, storage) == [4, 6]
    assert [e.to_json().get("name") for e in storage.entries()[1:-1]] == [
        "Doubler",
        "legacy_tripler",
    ]


class Opaque:
    """A callable whose signature cannot be read."""

    __signature__ = "not a signature"

    def __call__(self) -> None:
        pass


def test_a_callable_whose_signature_cannot_be_read_is_refused_at_decoration() -> None:
    opaque = Opaque()  # 3.13's message names the object
    with pytest.raises((TypeError, ValueError)) as why:  # 3.13: ValueError
        inspect.signature(opaque)
    with pytest.raises(duron.UsageError) as info:
        duron.effect(opaque)
    assert str(info.value) == f"cannot read the signature of Opaque: {why.value}"


# A module whose durable function and effects name classes defined further down,
# and one that names a class defined nowhere.
LATER_DEFINED = """
from __future__ import annotations

from pydantic import BaseModel

import duron


@duron.effect
async def greet(person: Person) -> Greeting:
    return Greeting(text=f"hello {person.name}")


@duron.durable
async def welcome(ctx: duron.Context, person: Person) -> str:
    greeting = await ctx.run(greet, person)
    return greeting.text


@duron.effect
async def lost(thing: Missing) -> None:
    pass


@duron.durable
async def looks_for(ctx: duron.Context) -> None:
    await ctx.run(lost, 1)


pinged: list[int] = []


@duron.effect
async def ping() -> Missing:
    pinged.append(1)


@duron.durable
async def pings(ctx: duron.Context) -> None:
    await ctx.run(ping)


@duron.durable
async def report(ctx: duron.Context) -> Greeting:
    return Greeting(text="all done")


class Person(BaseModel):
    name: str


class Greeting(BaseModel):
    text: str
"""


async def test_hints_naming_classes_defined_further_down_are_read_at_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "later_defined.py").write_text(LATER_DEFINED)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("later_defined")
        storage = MemoryLogStorage()
        person = module.Person(name="ada")
        assert await run_job(module.welcome, storage, person) == "hello ada"
        # As in a new process: decorated afresh, the recorded argument is read
        # through the hints resolved then.
        del sys.modules["later_defined"]
        module = importlib.import_module("later_defined")
        assert await resume_job(module.welcome, storage) == "hello ada"
        # Nothing recorded to read: the result's type is resolved all the same.
        storage = MemoryLogStorage()
        assert await run_job(module.report, storage) == module.Greeting(text="all done")
        del sys.modules["later_defined"]
        module = importlib.import_module("later_defined")
        assert await resume_job(module.report, storage) == module.Greeting(
            text="all done"
        )

        for flow, effect in [(module.looks_for, "lost"), (module.pings, "ping")]:
            storage = MemoryLogStorage()
            async with flow.invoke(storage) as job:
                await job.start()
                with pytest.raises(duron.UsageError) as info:
                    await job.wait()
            assert str(info.value) == (
                f"job <memory>: position 0: cannot resolve the type hints of "
                f"{effect}: name 'Missing' is not defined"
            )
            assert [e.type for e in storage.entries()] == ["job"]
        assert module.pinged == []  # refused before it ran
    finally:
        sys.modules.pop("later_defined", None)


def test_calls_that_pass_parameters_in_order_skip_the_general_binder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ctx.run's hot path: most calls pass their arguments in order, some
    # keywords after them; inspect's binder (and the codec, for plain scalars)
    # is only for the rest.
    scale, join, _ = _scaling()
    scale_sig, join_sig = effect_spec(scale).sig, effect_spec(join).sig
    codec = PydanticCodec()

    def general(*args: object, **kwargs: object) -> Any:
        raise AssertionError("the general path")

    monkeypatch.setattr(inspect.Signature, "bind", general)
    assert scale_sig.bind((1,), {}) == {"x": 1}
    assert scale_sig.bind((1, 2), {}) == {"x": 1, "factor": 2}
    assert scale_sig.bind((1,), {"factor": 2}) == {"x": 1, "factor": 2}
    monkeypatch.setattr(Signature, "bind", general)
    assert join_sig.encode_call(codec, (["a"],), {}) == {"words": ["a"]}
    assert join_sig.encode_call(codec, (["a"], "-"), {}) == {
        "words": ["a"],
        "sep": "-",
    }
    monkeypatch.setattr(PydanticCodec, "encode", general)
    assert scale_sig.encode_call(codec, (1, 2), {}) == {"x": 1, "factor": 2}


def test_a_provided_parameter_of_another_type_is_refused_at_decoration() -> None:
    with pytest.raises(duron.UsageError) as info:

        @duron.durable(name="fed")
        async def fed(ctx: duron.Context, events: int = duron.Provided) -> None:
            pass

    assert str(info.value) == (
        "parameter 'events' of durable function fed is marked = duron.Provided but "
        "annotated int; provided parameters are duron.Stream[T], "
        "duron.StreamWriter[T] or duron.Signal[T]"
    )


class OneWay:
    """A codec whose data does not decode back."""

    def encode(self, value: object, annotation: Any, /) -> Any:
        return value

    def decode(self, data: Any, annotation: Any, /) -> object:
        raise ValueError("not this way")


async def test_an_argument_that_would_not_decode_from_the_log_is_refused() -> None:
    @duron.durable(name="one_way", codec=OneWay())
    async def one_way(ctx: duron.Context, n: int) -> int:
        return n

    storage = MemoryLogStorage()
    async with one_way.invoke(storage) as job:
        with pytest.raises(duron.PayloadEncodeError) as info:
            await job.start(5)
    assert str(info.value) == (
        "job <memory>: argument 'n' of one_way (int): would not decode back from "
        "the log: not this way"
    )
    assert storage.entries() == []
