"""Typed payloads: what durable code receives is the annotated type, run after run.

Every value an effect returns, and every argument and result of a durable function,
goes through the job's codec on the way into the log and back out of it, on the first
run as on replay, so durable code never sees a different type on replay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Generic, Optional, TypeVar, Union

import orjson
import pydantic
import pytest
from support import run_job
from typing_extensions import TypedDict

import duron
from duron._codec import (
    UNANNOTATED,
    PydanticCodec,
    describe_type,
    explain,
    roundtrip,
    stored_as_is,
)
from duron.contrib.storage import FileLogStorage, MemoryLogStorage

pytestmark = pytest.mark.anyio

_T = TypeVar("_T")


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Item(pydantic.BaseModel):
    name: str
    price: Decimal
    tags: list[str] = []


class SpecialItem(Item):
    secret: str = "not in the log"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Address(TypedDict):
    city: str
    zip: str


class Page(pydantic.BaseModel, Generic[_T]):
    items: list[_T]
    total: int


class Shipment(pydantic.BaseModel):
    id: uuid.UUID
    at: dt.datetime
    color: Color
    where: Point
    address: Address
    note: Optional[str] = None  # noqa: UP045 - Optional is what users write
    lines: dict[str, list[Item]]


BERLIN = dt.timezone(dt.timedelta(hours=2), "CEST")
AT = dt.datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=BERLIN)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
ITEM = Item(name="tea", price=Decimal("3.10"), tags=["green"])

# (test id, annotation, value, the exact type durable code must receive)
CASES: list[tuple[str, Any, Any, type]] = [
    ("model", Item, ITEM, Item),
    ("dataclass", Point, Point(1, 2.5), Point),
    ("typeddict", Address, Address(city="Oslo", zip="0150"), dict),
    ("datetime", dt.datetime, AT, dt.datetime),
    ("date", dt.date, dt.date(2024, 2, 29), dt.date),
    ("uuid", uuid.UUID, ID, uuid.UUID),
    ("decimal", Decimal, Decimal("12.3400"), Decimal),
    ("enum", Color, Color.GREEN, Color),
    ("optional-none", Optional[int], None, type(None)),  # noqa: UP045
    ("optional-some", Optional[int], 7, int),  # noqa: UP045
    ("union-int", Union[int, str], 3, int),  # noqa: UP007
    ("union-str", Union[int, str], "3", str),  # noqa: UP007
    ("union-models", Union[Point, Item], ITEM, Item),  # noqa: UP007
    ("nested", dict[str, list[Item]], {"a": [ITEM, ITEM], "b": []}, dict),
    ("generic-model", Page[Item], Page[Item](items=[ITEM], total=1), Page[Item]),
    ("tuple", tuple[int, str, Decimal], (1, "a", Decimal("0.5")), tuple),
    (
        "composite",
        Shipment,
        Shipment(
            id=ID,
            at=AT,
            color=Color.RED,
            where=Point(3, 4.0),
            address=Address(city="Lyon", zip="69001"),
            lines={"box": [ITEM]},
        ),
        Shipment,
    ),
]


def _typed(fn: Callable[..., Any], hints: dict[str, Any], name: str) -> None:
    # The decorators read real annotation objects, as if written in the source.
    fn.__annotations__ = hints
    fn.__qualname__ = fn.__name__ = name


def make_job(
    annotation: Any, key: str
) -> tuple[duron.DurableFn[..., Any], list[tuple[str, Any]], list[Any]]:
    """An effect and a durable function that pass ``annotation`` values around."""
    seen: list[tuple[str, Any]] = []  # what durable code received
    ran: list[Any] = []  # what the effect received (live runs only)

    async def echo(value: Any) -> Any:
        ran.append(value)
        return value

    _typed(echo, {"value": annotation, "return": annotation}, f"echo_{key}")
    effect = duron.effect(echo)

    async def flow(ctx: duron.Context, value: Any) -> Any:
        seen.append(("argument", value))
        result = await ctx.run(effect, value)
        seen.append(("effect result", result))
        return result

    _typed(
        flow,
        {"ctx": duron.Context, "value": annotation, "return": annotation},
        f"flow_{key}",
    )
    return duron.durable(flow), seen, ran


def _check_same(got: Any, want: Any, want_type: Any) -> None:
    assert type(got) is want_type, f"{type(got)!r} is not {want_type!r}"
    assert got == want
    if isinstance(want, dt.datetime):
        assert got.utcoffset() == want.utcoffset()
    if isinstance(want, Decimal):
        assert str(got) == str(want)  # precision survives, not just the value


@pytest.mark.parametrize(
    ("annotation", "value", "want_type"),
    [pytest.param(a, v, t, id=i) for i, a, v, t in CASES],
)
async def test_typed_values_round_trip_on_first_run_and_replay(
    annotation: Any, value: Any, want_type: type
) -> None:
    dfn, seen, ran = make_job(annotation, "rt")
    storage = MemoryLogStorage()
    async with dfn.invoke(storage) as job:
        await job.start(value)
        first = await job.wait()
    async with dfn.invoke(storage) as job:
        await job.resume()
        second = await job.wait()

    assert len(ran) == 1, "replay ran the effect again"
    assert [what for what, _ in seen] == ["argument", "effect result"] * 2
    for _, got in seen:
        _check_same(got, value, want_type)
    _check_same(first, value, want_type)
    _check_same(second, value, want_type)
    # Every payload in the log is plain JSON (orjson would have refused anything else).
    for raw in storage.raw:
        assert orjson.loads(raw)


async def test_values_reach_durable_code_through_the_codec_on_the_first_run() -> None:
    # The effect returns a subclass carrying an extra field. Durable code gets the
    # annotated type on the first run, exactly as replay will rebuild it from the log.
    returned: list[Item] = []

    @duron.effect
    async def fetch_item() -> Item:
        item = SpecialItem(name="tea", price=Decimal("3.10"), secret="s3cr3t")
        returned.append(item)
        return item

    seen: list[Item] = []

    @duron.durable
    async def flow(ctx: duron.Context) -> Item:
        item = await ctx.run(fetch_item)
        seen.append(item)
        return item

    storage = MemoryLogStorage()
    for _ in range(2):
        async with flow.invoke(storage) as job:
            await job.start()
            result = await job.wait()
        assert type(result) is Item
    assert len(returned) == 1
    assert [type(i) for i in seen] == [Item, Item]
    assert seen[0] is not returned[0]
    assert seen[0] == seen[1] == Item(name="tea", price=Decimal("3.10"))
    assert b"s3cr3t" not in b"".join(storage.raw)


async def test_file_log_records_json_payloads(tmp_path: Any) -> None:
    dfn, seen, ran = make_job(Shipment, "file")
    value = CASES[-1][2]
    path = tmp_path / "log.jsonl"
    for _ in range(2):
        async with dfn.invoke(FileLogStorage(path)) as job:
            await job.start(value)
            assert await job.wait() == value
    assert len(ran) == 1
    assert all(type(got) is Shipment and got == value for _, got in seen)
    job_entry = orjson.loads(path.read_bytes().splitlines()[0])
    assert job_entry["args"]["value"]["at"] == "2024-05-17T09:30:15.123456+02:00"
    assert job_entry["args"]["value"]["lines"]["box"][0]["price"] == "3.10"


# -- unannotated effects ----------------------------------------------------------


async def test_unannotated_effect_may_return_json_native_values() -> None:
    data = {"a": [1, 2.5, None, True, "x"], "b": {"c": []}}
    runs: list[int] = []

    @duron.effect
    async def raw():  # type: ignore[no-untyped-def]
        runs.append(1)
        return data

    @duron.durable
    async def flow(ctx: duron.Context) -> dict[str, Any]:
        got = await ctx.run(raw)
        lam = await ctx.run(lambda: _async_value([1, "two"]))
        return {"got": got, "lam": lam}

    storage = MemoryLogStorage()
    for _ in range(2):
        async with flow.invoke(storage) as job:
            await job.start()
            assert await job.wait() == {"got": data, "lam": [1, "two"]}
    assert runs == [1]


async def _async_value(value: Any) -> Any:
    return value


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param({1, 2}, "set", id="set"),
        pytest.param(Opaque(), "Opaque", id="custom-object"),
        pytest.param({"k": [Opaque()]}, "Opaque", id="nested-object"),
    ],
)
async def test_unannotated_effect_returning_non_json_is_a_payload_error(
    value: Any, type_name: str
) -> None:
    @duron.effect(name="make_thing")
    async def make_thing():  # type: ignore[no-untyped-def]
        return value

    @duron.durable
    async def flow(ctx: duron.Context) -> None:
        await ctx.run(make_thing)

    storage = MemoryLogStorage(label="things")
    async with flow.invoke(storage) as job:
        await job.start()
        with pytest.raises(duron.PayloadError) as info:
            await job.wait()
    outer = type(value).__qualname__
    assert str(info.value) == (
        f"job things: position 0: result of effect make_thing (unannotated): "
        f"cannot encode {outer}: a value of type {type_name} is not JSON-native; "
        "annotate the type so it can be encoded"
    )
    assert info.value.position == 0
    # Nothing was recorded for the effect: a fixed version can resume the job.
    assert [e.type for e in storage.entries()] == ["job"]


async def test_effect_result_of_the_wrong_type_is_refused_before_the_log() -> None:
    @duron.effect(name="count")
    async def count() -> int:
        return "many"  # type: ignore[return-value]

    @duron.durable
    async def flow(ctx: duron.Context) -> int:
        return await ctx.run(count)

    storage = MemoryLogStorage(label="counting")
    async with flow.invoke(storage) as job:
        await job.start()
        with pytest.raises(duron.PayloadError) as info:
            await job.wait()
    assert str(info.value) == (
        "job counting: position 0: result of effect count (int): cannot encode str: "
        "Input should be a valid integer, unable to parse string as an integer"
    )
    # Nothing replay could not decode was recorded: the log stays resumable.
    assert [e.type for e in storage.entries()] == ["job"]


async def test_unencodable_effect_argument_names_the_parameter() -> None:
    @duron.effect(name="store")
    async def store(where: Any) -> None:
        raise AssertionError("not run")

    @duron.durable
    async def flow(ctx: duron.Context) -> None:
        await ctx.run(store, Opaque())

    async with flow.invoke(MemoryLogStorage()) as job:
        await job.start()
        with pytest.raises(duron.PayloadError) as info:
            await job.wait()
    assert str(info.value) == (
        "job <memory>: position 0: argument 'where' of store (Opaque): cannot "
        f"encode Opaque: Unable to serialize unknown type: {Opaque!r}"
    )


@duron.durable
async def count_flow(ctx: duron.Context, n: int) -> int:
    return n


@duron.durable
async def bad_result_flow(ctx: duron.Context) -> int:
    return "lots"  # type: ignore[return-value]


async def test_durable_argument_of_the_wrong_type_is_refused_before_the_log() -> None:
    storage = MemoryLogStorage(label="args")
    async with count_flow.invoke(storage) as job:
        with pytest.raises(duron.PayloadError) as info:
            await job.start("many")  # type: ignore[arg-type]
    assert str(info.value) == (
        "job args: argument 'n' of count_flow (int): cannot encode str: Input "
        "should be a valid integer, unable to parse string as an integer"
    )
    assert storage.raw == []
    async with count_flow.invoke(storage) as job:
        await job.start(3)
        assert await job.wait() == 3


async def test_durable_result_of_the_wrong_type_is_refused_before_the_log() -> None:
    storage = MemoryLogStorage(label="results")
    async with bad_result_flow.invoke(storage) as job:
        await job.start()
        with pytest.raises(duron.PayloadError) as info:
            await job.wait()
    assert str(info.value) == (
        "job results: result of durable function bad_result_flow (int): cannot "
        "encode str: Input should be a valid integer, unable to parse string as an "
        "integer"
    )
    assert [e.type for e in storage.entries()] == ["job"]


# -- a custom codec -----------------------------------------------------------------


class TaggingCodec:
    """Wraps every payload in {"v": ...} and reverses strings: visibly not the default."""

    def __init__(self) -> None:
        self.inner = duron.PydanticCodec()
        self.calls: list[tuple[str, str]] = []

    def encode(self, value: object, annotation: Any, /) -> duron.JSONValue:
        self.calls.append(("encode", _ann_name(annotation)))
        data = self.inner.encode(value, annotation)
        if isinstance(data, str):
            data = data[::-1]
        return {"v": data}

    def decode(self, data: duron.JSONValue, annotation: Any, /) -> object:
        self.calls.append(("decode", _ann_name(annotation)))
        assert isinstance(data, dict)
        inner = data["v"]
        if isinstance(inner, str):
            inner = inner[::-1]
        return self.inner.decode(inner, annotation)


def _ann_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", repr(annotation))


codec = TaggingCodec()


@duron.effect
async def shout(word: str, times: int) -> str:
    return (word.upper() + " ") * times


@duron.durable(codec=codec)
async def codec_flow(ctx: duron.Context, word: str) -> str:
    loud = await ctx.run(shout, word, times=2)
    return loud.strip()


async def test_a_custom_codec_encodes_every_payload() -> None:
    codec.calls.clear()
    storage = MemoryLogStorage()
    async with codec_flow.invoke(storage) as job:
        await job.start("hey")
        assert await job.wait() == "HEY HEY"
    assert codec.calls == [
        ("encode", "str"),  # the job's argument
        ("decode", "str"),  # ... checked before it is logged
        ("decode", "str"),  # ... as durable code receives it
        ("encode", "str"),  # the effect's inputs
        ("encode", "int"),
        ("encode", "str"),  # the effect's result
        ("decode", "str"),  # ... as durable code receives it
        ("encode", "str"),  # the job's result
        ("decode", "str"),  # ... checked before it is logged
        ("decode", "str"),  # ... as wait() returns it
    ]
    entries = [orjson.loads(raw) for raw in storage.raw]
    assert entries[0]["args"] == {"word": {"v": "yeh"}}
    assert [e["type"] for e in entries] == ["job", "done", "end"]
    done = entries[1]
    assert done["inputs"] == {"word": {"v": "yeh"}, "times": {"v": 2}}
    assert done["result"] == {"v": " YEH YEH"}
    assert entries[-1]["result"] == {"v": "YEH YEH"}

    codec.calls.clear()
    async with codec_flow.invoke(storage) as job:
        await job.start("hey")
        assert await job.wait() == "HEY HEY"
    assert ("decode", "str") in codec.calls
    assert len(storage.raw) == len(entries)


# -- a recorded payload that no longer validates ---------------------------------------

version = 1


@duron.effect(name="lookup")
async def lookup_v1() -> int:
    return 42


@duron.effect(name="lookup")
async def lookup_v2() -> Item:
    raise AssertionError("replay must not run the effect")


@duron.durable(name="typed_flow")
async def typed_flow_v1(ctx: duron.Context) -> str:
    return repr(await ctx.run(lookup_v1))


@duron.durable(name="typed_flow")
async def typed_flow_v2(ctx: duron.Context) -> str:
    return repr(await ctx.run(lookup_v2))


async def test_recorded_result_that_no_longer_validates_names_position() -> None:
    storage = MemoryLogStorage(label="retyped")
    async with typed_flow_v1.invoke(storage) as job:
        await job.start()
        assert await job.wait() == "42"
    async with typed_flow_v2.invoke(storage) as job:
        await job.resume()
        with pytest.raises(duron.PayloadError) as info:
            await job.wait()
    assert str(info.value) == (
        "job retyped: position 0: recorded result of lookup (Item): no longer "
        "validates: Input should be a valid dictionary or instance of Item. The log "
        "was written under other types: make the type accept what it recorded (a "
        "default, a validator) or keep this job on the code that wrote it"
    )
    assert info.value.position == 0
    assert isinstance(info.value.__cause__, pydantic.ValidationError)


class Profile(pydantic.BaseModel):
    name: str
    age: int


@duron.durable(name="greet_profile")
async def greet_v1(ctx: duron.Context, who: str) -> str:
    return who


@duron.durable(name="greet_profile")
async def greet_v2(ctx: duron.Context, who: Profile) -> str:
    return who.name


async def test_recorded_argument_that_no_longer_validates() -> None:
    storage = MemoryLogStorage(label="profiles")
    async with greet_v1.invoke(storage) as job:
        await job.start("Ada")
        await job.wait()
    async with greet_v2.invoke(storage) as job:
        with pytest.raises(duron.PayloadError) as info:
            await job.resume()
    assert str(info.value) == (
        "job profiles: recorded argument 'who' of greet_profile (Profile): no "
        "longer validates: Input should be a valid dictionary or instance of "
        "Profile. The log was written under other types: make the type accept what "
        "it recorded (a default, a validator) or keep this job on the code that "
        "wrote it"
    )


class Versioned(pydantic.BaseModel):
    name: str
    count: int


@duron.effect(name="get_versioned")
async def get_versioned_v1() -> dict[str, Any]:
    return {"name": "x"}


@duron.effect(name="get_versioned")
async def get_versioned_v2() -> Versioned:
    raise AssertionError("replay must not run the effect")


@duron.durable(name="versioned_flow")
async def versioned_v1(ctx: duron.Context) -> None:
    await ctx.run(get_versioned_v1)
    await ctx.run(get_versioned_v1)


@duron.durable(name="versioned_flow")
async def versioned_v2(ctx: duron.Context) -> None:
    await ctx.run(get_versioned_v1)
    await ctx.run(get_versioned_v2)


async def test_field_missing_from_a_recorded_model_is_named() -> None:
    storage = MemoryLogStorage(label="models")
    async with versioned_v1.invoke(storage) as job:
        await job.start()
        await job.wait()
    async with versioned_v2.invoke(storage) as job:
        await job.resume()
        with pytest.raises(
            duron.PayloadError,
            match=re.escape(
                "job models: position 1: recorded result of get_versioned "
                "(Versioned): no longer validates: field 'count' required"
            ),
        ):
            await job.wait()


# -- numbers JSON cannot hold ---------------------------------------------------------

BIG = 2**70


@duron.effect(name="number")
async def number_unannotated(kind: str):  # type: ignore[no-untyped-def]
    return {"nan": math.nan, "inf": -math.inf, "big": BIG}[kind]


@duron.effect(name="number")
async def number_float(kind: str) -> float:
    return {"nan": math.nan, "inf": -math.inf}[kind]


@duron.effect(name="number")
async def number_int(kind: str) -> int:
    return BIG


@duron.effect(name="number")
async def number_list(kind: str) -> list[int]:
    return [1, BIG]


async def _number_error(effect: Callable[..., Any], kind: str) -> str:
    @duron.durable
    async def flow(ctx: duron.Context) -> Any:
        return await ctx.run(effect, kind)

    storage = MemoryLogStorage(label="numbers")
    async with flow.invoke(storage) as job:
        await job.start()
        with pytest.raises(duron.PayloadError) as info:
            await job.wait()
    # Nothing that replay would read back differently reached the log.
    assert [e.type for e in storage.entries()] == ["job"]
    return str(info.value)


@pytest.mark.parametrize(
    ("effect", "kind", "want"),
    [
        pytest.param(
            number_unannotated,
            "nan",
            "(unannotated): cannot encode float: nan has no JSON form",
            id="unannotated-nan",
        ),
        pytest.param(
            number_unannotated,
            "inf",
            "(unannotated): cannot encode float: -inf has no JSON form",
            id="unannotated-inf",
        ),
        pytest.param(
            number_unannotated,
            "big",
            f"(unannotated): cannot encode int: {BIG} does not fit in the 64 bits "
            "a log integer has",
            id="unannotated-big",
        ),
        pytest.param(
            number_float,
            "nan",
            "(float): cannot encode float: nan has no JSON form",
            id="float-nan",
        ),
        pytest.param(
            number_int,
            "big",
            f"(int): cannot encode int: {BIG} does not fit in the 64 bits a log "
            "integer has",
            id="int-big",
        ),
    ],
)
async def test_numbers_json_cannot_hold_are_payload_errors(
    effect: Callable[..., Any], kind: str, want: str
) -> None:
    message = await _number_error(effect, kind)
    assert message == f"job numbers: position 0: result of effect number {want}"


async def test_a_big_int_deep_in_a_typed_result_is_a_payload_error() -> None:
    message = await _number_error(number_list, "big")
    assert message == (
        "job numbers: position 0: result of effect number (done entry): cannot be "
        "written to the log: Integer exceeds 64-bit range"
    )


@duron.durable
async def sum_flow(ctx: duron.Context, numbers: list[int]) -> int:
    return sum(numbers)


async def test_a_big_int_in_job_arguments_is_a_payload_error() -> None:
    storage = MemoryLogStorage(label="sums")
    async with sum_flow.invoke(storage) as job:
        with pytest.raises(duron.PayloadError) as info:
            await job.start([1, BIG])
    assert str(info.value) == (
        "job sums: arguments of sum_flow (job entry): cannot be written to the "
        "log: Integer exceeds 64-bit range"
    )
    assert storage.raw == []


# -- the codec itself: its cache, its fast path, how it names types and errors ---------

Counted = Annotated[int, ["a count"]]  # metadata that cannot be hashed
Named = Annotated[str, ["a name"]]


@duron.effect
async def count_up(n: Counted) -> Counted:
    return n + 1


@duron.durable
async def counting(ctx: duron.Context, n: Counted) -> Counted:
    return await ctx.run(count_up, n)


async def test_annotations_that_cannot_be_hashed_are_payload_types_too() -> None:
    # Annotated metadata may be any object, a list or a dict too.
    storage = MemoryLogStorage()
    assert await run_job(counting, storage, 1) == 2
    assert await run_job(counting, storage, 1) == 2
    assert [e.to_json().get("inputs") for e in storage.entries()[1:-1]] == [{"n": 1}]


def test_a_codec_builds_one_adapter_per_annotation() -> None:
    codec = PydanticCodec()
    assert codec.adapter(list[int]) is codec.adapter(list[int])
    # Unhashable annotations are told apart by identity.
    assert codec.adapter(Counted) is codec.adapter(Counted)
    assert codec.adapter(Counted) is not codec.adapter(Named)
    assert codec.decode("7", Counted) == 7
    assert codec.decode("7", Named) == "7"
    assert codec.encode(Item(name="pen", price=Decimal("1.5")), Item) == {
        "name": "pen",
        "price": "1.5",
        "tags": [],
    }


def test_json_scalars_annotated_as_themselves_skip_pydantic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hot path of replay: no adapter for the common payloads.
    def no_adapter(self: PydanticCodec, annotation: Any) -> Any:
        raise AssertionError(f"an adapter for {annotation!r}")

    codec = PydanticCodec()
    monkeypatch.setattr(PydanticCodec, "adapter", no_adapter)
    for value in ["a", 1, 1.5, True, None, 2**64 - 1, -(2**63)]:
        assert codec.encode(value, type(value)) == value
        assert codec.decode(value, type(value)) == value
        assert type(codec.decode(value, type(value))) is type(value)


def test_other_data_is_validated_into_the_annotated_type() -> None:
    codec = PydanticCodec()
    assert type(codec.decode(3, float)) is float
    assert codec.decode(1, bool) is True
    assert codec.decode("2024-05-01", dt.date) == dt.date(2024, 5, 1)


@pytest.mark.parametrize(
    ("value", "annotation", "as_is"),
    [
        ("a", str, True),
        (True, bool, True),
        (1.5, float, True),
        (math.inf, float, False),
        (1, float, False),
        (1, str, False),
        (True, int, False),
        (2**64 - 1, int, True),
        (2**64, int, False),
        (-(2**63), int, True),
        (-(2**63) - 1, int, False),
    ],
)
def test_what_the_codec_stores_as_is(value: Any, annotation: type, as_is: bool) -> None:
    assert stored_as_is(value, annotation) is as_is


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        (2**64, int, f"{2**64} does not fit in the 64 bits a log integer has"),
        (
            -(2**63) - 1,
            int,
            f"{-(2**63) - 1} does not fit in the 64 bits a log integer has",
        ),
        (math.nan, float, "nan has no JSON form"),
        ({1: "a"}, UNANNOTATED, "dict key 1 is a int, not a str"),
        ([{"a": {2.5: 1}}], UNANNOTATED, "dict key 2.5 is a float, not a str"),
    ],
)
def test_values_json_cannot_hold_are_refused_by_the_codec(
    value: Any, annotation: Any, message: str
) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        PydanticCodec().encode(value, annotation)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (UNANNOTATED, "unannotated"),
        (None, "None"),
        (int, "int"),
        (Item, "Item"),
        (list[int], "list[int]"),
        (dict[str, Any], "dict[str, Any]"),
        (Optional[Item], "Optional[test_payloads.Item]"),  # noqa: UP045
        (Page[int], "Page[int]"),
    ],
)
def test_types_are_named_in_errors_without_typing_prefixes(
    annotation: Any, name: str
) -> None:
    assert describe_type(annotation) == name


def test_the_unannotated_marker_says_what_it_is() -> None:
    assert repr(UNANNOTATED) == "<unannotated>"


class Line(pydantic.BaseModel):
    sku: str


class Order(pydantic.BaseModel):
    id: int
    lines: list[Line]
    note: str


def test_codec_errors_are_told_in_one_line_field_by_field() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Order.model_validate({"id": "x", "lines": [{"sku": 5}]})
    assert explain(info.value) == (
        "field 'id': Input should be a valid integer, unable to parse string as an "
        "integer; field 'lines.0.sku': Input should be a valid string; field 'note' "
        "required"
    )
    with pytest.raises(pydantic.ValidationError) as info:
        pydantic.TypeAdapter(int).validate_python("x")
    assert explain(info.value) == (
        "Input should be a valid integer, unable to parse string as an integer"
    )
    assert explain(ValueError("first line\nsecond line")) == "first line"
    assert explain(KeyError()) == "KeyError"


class OneWay:
    """A codec whose data does not decode back."""

    def encode(self, value: object, annotation: Any, /) -> Any:
        return value

    def decode(self, data: Any, annotation: Any, /) -> object:
        raise ValueError("not this way")


def test_roundtrip_refuses_what_does_not_encode_or_decode_back() -> None:
    with pytest.raises(duron.PayloadEncodeError) as info:
        roundtrip(PydanticCodec(), "x", int, what="result of effect w", job="j")
    assert str(info.value) == (
        "job j: result of effect w (int): cannot encode str: Input should be a "
        "valid integer, unable to parse string as an integer"
    )
    assert isinstance(info.value.__cause__, pydantic.ValidationError)
    with pytest.raises(duron.PayloadEncodeError) as info:
        roundtrip(OneWay(), 5, int, what="result of effect w", position=3)
    assert str(info.value) == (
        "position 3: result of effect w (int): would not decode back from the log: "
        "not this way"
    )
    assert isinstance(info.value.__cause__, ValueError)
    # Unannotated (Any): named by the value's own type.
    with pytest.raises(duron.PayloadEncodeError) as info:
        roundtrip(PydanticCodec(), Opaque(), Any, what="argument 'p' of f")
    assert str(info.value) == (
        "argument 'p' of f (Opaque): cannot encode Opaque: Unable to serialize "
        "unknown type: <class 'test_payloads.Opaque'>"
    )
