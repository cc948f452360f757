"""``fn.options(...)``: options of a call travel on the durable function, never among
its arguments; and the one builder of a job's first entry, ``fn.job_entry``.

What a store does with them (submit on every SQL store) is in
test_jobstore_contract.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pydantic
import pytest

import duron
from duron._cli.verify import load_target
from duron._options import CallOptions, _option
from duron.contrib._memory import MemoryLogStorage

if TYPE_CHECKING:
    from pathlib import Path


class Order(pydantic.BaseModel):
    id: int


@duron.durable
async def checkout(ctx: duron.Context, order: Order, note: str = "") -> int:
    return order.id


def test_options_return_the_same_function_carrying_them() -> None:
    tagged = checkout.options(job_id="order-42")
    assert tagged is not checkout
    assert tagged.call_options == CallOptions(job_id="order-42")
    assert checkout.call_options == CallOptions()  # the original is unchanged
    assert (tagged.name, tagged.fn, tagged.sig) == (
        checkout.name,
        checkout.fn,
        checkout.sig,
    )
    assert (tagged.__name__, tagged.__qualname__) == ("checkout", checkout.__qualname__)
    assert repr(checkout) == f"<durable {checkout.name}>"
    assert repr(tagged) == f"<durable {checkout.name}.options(job_id='order-42')>"
    assert repr(tagged.call_options) == "CallOptions(job_id='order-42')"
    assert checkout.options() is checkout  # nothing given: nothing to copy


def test_options_merge() -> None:
    tagged = checkout.options(job_id="a")
    assert tagged.options().call_options.job_id == "a"
    assert tagged.options(job_id=None).call_options.job_id == "a"  # None: unchanged
    assert tagged.options(job_id="b").call_options.job_id == "b"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class WithTenant(CallOptions):
    """How a later option is added: one field (and its keyword on fn.options)."""

    tenant: str | None = _option(lambda v: isinstance(v, str) and v != "", "a name")


def test_adding_an_option_is_one_field_and_options_merge() -> None:
    merged = (
        WithTenant().merged("f.options", job_id="a").merged("f.options", tenant="t")
    )
    assert merged == WithTenant(job_id="a", tenant="t")
    assert WithTenant.names() == (
        "job_id",
        "deadline",
        "queue",
        "priority",
        "start_at",
        "delay",
        "tenant",
    )
    assert repr(merged) == "WithTenant(job_id='a', tenant='t')"
    with pytest.raises(
        duron.UsageError,
        match=re.escape("f.options(tenant=...): tenant must be a name"),
    ):
        merged.merged("f.options", tenant="")
    with pytest.raises(
        duron.UsageError,
        match=re.escape(
            "f.options() has no option 'tenant' (options: job_id, deadline, queue, "
            "priority, start_at, delay)"
        ),
    ):
        CallOptions().merged("f.options", tenant="t")


@pytest.mark.parametrize("bad", ["", "x" * 256, 42, b"order-42"])
def test_a_bad_option_value_names_the_option_and_the_value(bad: object) -> None:
    message = (
        f"{checkout.name}.options(job_id=...): job_id must be a non-empty string of "
        f"at most 255 characters, not {bad!r}"
    )
    with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
        checkout.options(job_id=bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_options_keep_the_parameters_for_type_checkers() -> None:
    # mypy checks this module (warning on unused ignores): were the copy's
    # parameters lost, the ignore below would be unused, an error.
    storage = MemoryLogStorage(label="typed")
    async with checkout.options(job_id="x").invoke(storage) as job:
        with pytest.raises(duron.PayloadError, match="argument 'order' of"):
            await job.start("not an order")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_job_started_with_job_id_says_where_it_goes() -> None:
    message = (
        f"durable function {checkout.name} has no parameter 'job_id': job_id is an "
        "option of the call, not an argument; pass it on the function: "
        "store.submit(checkout.options(job_id=...), ...)"
    )
    storage = MemoryLogStorage(label="j")
    async with checkout.invoke(storage) as job:
        with pytest.raises(duron.UsageError, match=f"^{re.escape(message)}$"):
            await job.start(Order(id=1), job_id="x")  # type: ignore[call-arg]
    assert storage.raw == []


# -- the job entry ---------------------------------------------------------------------


def test_the_job_entry_records_the_encoded_call() -> None:
    entry = checkout.job_entry((Order(id=7),), {"note": "gift"}, via="submit()")
    assert (entry.fn, entry.args, entry.module) == (
        checkout.name,
        {"order": {"id": 7}, "note": "gift"},
        __name__,
    )
    again = checkout.job_entry((), {"order": Order(id=7), "note": "gift"}, via="x")
    assert again.args == entry.args
    assert again.seed != entry.seed  # each job its own random seed


class Lossy(pydantic.BaseModel):
    """Encodes to something it cannot read back."""

    n: int

    @pydantic.model_serializer
    def _dump(self) -> str:
        return f"n={self.n}"


@duron.durable
async def lossy(ctx: duron.Context, value: Lossy) -> None:
    return None


@duron.durable
async def sums(ctx: duron.Context, numbers: list[int]) -> int:
    return sum(numbers)


def test_the_job_entry_refuses_what_the_log_would_not_give_back() -> None:
    with pytest.raises(duron.PayloadError) as info:
        lossy.job_entry((Lossy(n=1),), {}, via="submit()", job="j1")
    assert str(info.value).startswith(
        f"job j1: argument 'value' of {lossy.name} (Lossy): would not decode back from "
        "the log: "
    )
    with pytest.raises(duron.PayloadError) as big:
        sums.job_entry(([1, 2**70],), {}, via="start()")
    assert str(big.value) == (
        f"arguments of {sums.name} (job entry): cannot be written to the log: "
        "Integer exceeds 64-bit range"
    )
    with pytest.raises(duron.PayloadError) as unencodable:
        checkout.job_entry((object(),), {}, via="start()", job="j2")
    assert unencodable.value.job == "j2"


def test_verify_takes_a_function_and_its_options_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flows_with_options.py").write_text(
        "import duron\n\n"
        "@duron.durable\n"
        "async def flow(ctx: duron.Context) -> None:\n"
        "    return None\n\n"
        "tagged = flow.options(job_id='one')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = load_target("flows_with_options")
    assert list(found) == ["flow"]
