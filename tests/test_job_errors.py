"""Every way a job and its log can disagree, or the API be misused, and what it says."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel
from support import run_job

import duron
from duron.contrib.storage import FileLogStorage, MemoryLogStorage

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

ran: list[str] = []


@duron.effect
async def charge_card(order: int) -> str:
    ran.append(f"charge {order}")
    return f"receipt-{order}"


@duron.effect
async def send_email(order: int) -> str:
    ran.append(f"email {order}")
    return f"sent-{order}"


# Two versions of one durable function (same recorded name): the code changed
# between the run that wrote the log and the run that replays it.


@duron.durable(name="order_flow")
async def order_flow(ctx: duron.Context, order: int) -> str:
    return await ctx.run(charge_card, order)


@duron.durable(name="order_flow")
async def order_flow_other_effect(ctx: duron.Context, order: int) -> str:
    return await ctx.run(send_email, order)


@duron.durable(name="order_flow")
async def order_flow_other_input(ctx: duron.Context, order: int) -> str:
    return await ctx.run(charge_card, order + 1)


@duron.durable(name="order_flow")
async def order_flow_no_effect(ctx: duron.Context, order: int) -> str:
    return f"receipt-{order}"


@duron.durable(name="order_flow")
async def order_flow_extra_effect(ctx: duron.Context, order: int) -> str:
    receipt = await ctx.run(charge_card, order)
    await ctx.run(send_email, order)
    return receipt


@duron.durable
async def refund_flow(ctx: duron.Context, order: int) -> str:
    return "refunded"


def _replay_message(label: str, where: str, recorded: str, requested: str) -> str:
    return (
        f"job {label}: at {where} the log recorded {recorded} but the code now asks "
        f"for {requested}. The durable function no longer replays this log: restore "
        "the old code path (ctx.patched can carry both) or start a new job"
    )


@pytest.mark.parametrize(
    ("changed", "requested"),
    [
        pytest.param(order_flow_other_effect, "send_email(order=42)", id="effect"),
        pytest.param(order_flow_other_input, "charge_card(order=43)", id="inputs"),
    ],
)
async def test_code_asking_for_another_op_than_the_log_is_non_determinism(
    changed: duron.DurableFn[[int], str], requested: str
) -> None:
    ran.clear()
    storage = MemoryLogStorage(label="orders/42")
    assert await run_job(order_flow, storage, 42) == "receipt-42"
    async with changed.invoke(storage) as job:
        await job.start(42)
        with pytest.raises(duron.NonDeterminismError) as info:
            await job.wait()
    assert str(info.value) == _replay_message(
        "orders/42", "position 0 (log offset 1)", "charge_card(order=42)", requested
    )
    err = info.value
    assert (err.job, err.position, err.offset) == ("orders/42", 0, 1)
    assert (err.recorded, err.requested) == ("charge_card(order=42)", requested)
    assert ran == ["charge 42"], "the mismatch must be found before anything runs"


async def test_non_determinism_in_a_file_log_names_the_byte_offset(
    tmp_path: Path,
) -> None:
    path = tmp_path / "order.jsonl"
    assert await run_job(order_flow, FileLogStorage(path), 42) == "receipt-42"
    offset = len(path.read_bytes().splitlines(keepends=True)[0])
    async with order_flow_other_effect.invoke(FileLogStorage(path)) as job:
        await job.resume()
        with pytest.raises(duron.NonDeterminismError) as info:
            await job.wait()
    assert str(info.value) == _replay_message(
        str(path),
        f"position 0 (log offset {offset})",
        "charge_card(order=42)",
        "send_email(order=42)",
    )


async def test_code_that_stops_short_of_the_log_is_non_determinism() -> None:
    storage = MemoryLogStorage(label="short")
    await run_job(order_flow, storage, 1)
    async with order_flow_no_effect.invoke(storage) as job:
        await job.resume()
        with pytest.raises(duron.NonDeterminismError) as info:
            await job.wait()
    assert str(info.value) == _replay_message(
        "short",
        "position 0 (log offset 1)",
        "charge_card(order=1)",
        "nothing; the code did not reach that operation",
    )


async def test_code_that_goes_past_the_logged_end_is_non_determinism() -> None:
    storage = MemoryLogStorage(label="long")
    await run_job(order_flow, storage, 1)
    async with order_flow_extra_effect.invoke(storage) as job:
        await job.resume()
        with pytest.raises(duron.NonDeterminismError) as info:
            await job.wait()
    assert str(info.value) == _replay_message(
        "long", "position 1", "the job's end", "send_email(order=1)"
    )


async def test_start_with_other_arguments_than_logged_is_a_job_mismatch() -> None:
    ran.clear()
    storage = MemoryLogStorage(label="orders/7")
    await run_job(order_flow, storage, 7)
    async with order_flow.invoke(storage) as job:
        with pytest.raises(
            duron.JobMismatchError,
            match="^"
            + re.escape(
                "job orders/7: the log was started with order_flow(order=7) but "
                "start() was called with order_flow(order=8); use resume() to "
                "continue the logged job, or a new log for new arguments"
            )
            + "$",
        ) as info:
            await job.start(8)
        assert info.value.field == "arguments"
        # The job is still usable for what the log holds.
        await job.resume()
        assert await job.wait() == "receipt-7"
    assert ran == ["charge 7"]


class Order(BaseModel):
    id: int


class OrderWithNote(BaseModel):
    """``Order`` after a field with a default was added."""

    id: int
    note: str = ""


@duron.durable(name="model_flow")
async def model_flow(ctx: duron.Context, order: Order) -> int:
    return order.id


@duron.durable(name="model_flow")
async def model_flow_with_note(ctx: duron.Context, order: OrderWithNote) -> int:
    return order.id


async def test_start_with_the_logged_arguments_read_through_today_s_model() -> None:
    # The log holds {"id": 7}; today's model encodes {"id": 7, "note": ""}: read
    # through today's model, the recorded argument is this one, so it is this job.
    storage = MemoryLogStorage(label="orders/7")
    assert await run_job(model_flow, storage, Order(id=7)) == 7
    assert await run_job(model_flow_with_note, storage, OrderWithNote(id=7)) == 7
    assert len(storage.entries()) == 2  # replayed: nothing written
    async with model_flow_with_note.invoke(storage) as job:
        with pytest.raises(duron.JobMismatchError) as info:
            await job.start(OrderWithNote(id=7, note="!"))
    assert str(info.value) == (
        "job orders/7: the log was started with model_flow(order={'id': 7}) but "
        "start() was called with model_flow(order={'id': 7, 'note': '!'}); use "
        "resume() to continue the logged job, or a new log for new arguments"
    )


async def test_resume_on_an_empty_log_is_job_not_started() -> None:
    storage = MemoryLogStorage(label="nothing-yet")
    async with order_flow.invoke(storage) as job:
        with pytest.raises(
            duron.JobNotStartedError,
            match="^"
            + re.escape(
                "job nothing-yet: resume() found an empty log; call start(...) to "
                "begin the job"
            )
            + "$",
        ):
            await job.resume()
        await job.start(3)
        assert await job.wait() == "receipt-3"


async def test_resume_continues_a_started_job_with_its_logged_arguments() -> None:
    ran.clear()
    storage = MemoryLogStorage()
    async with order_flow.invoke(storage) as job:
        await job.start(5)
        assert job.state == "running"
        await job.close()
        assert job.state == "closed"
    assert [e.type for e in storage.entries()] == ["job"]
    ran.clear()  # the effect may have run before close(); nothing of it was logged
    async with order_flow.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == "receipt-5"
        assert job.state == "finished"
    assert ran == ["charge 5"]
    async with order_flow.invoke(storage) as job:
        await job.resume()
        assert await job.wait() == "receipt-5"
    assert ran == ["charge 5"]


@pytest.mark.parametrize("how", ["start", "resume"])
async def test_a_log_written_by_another_durable_function_is_a_job_mismatch(
    how: str,
) -> None:
    storage = MemoryLogStorage(label="orders/9")
    await run_job(order_flow, storage, 9)
    async with refund_flow.invoke(storage) as job:
        with pytest.raises(
            duron.JobMismatchError,
            match="^"
            + re.escape(
                "job orders/9: the log was written by durable function order_flow, "
                "not refund_flow; open the log with the function that wrote it"
            )
            + "$",
        ) as info:
            await (job.start(9) if how == "start" else job.resume())
    assert info.value.field == "function"
    assert (info.value.recorded, info.value.requested) == ("order_flow", "refund_flow")


async def test_wait_before_start_is_a_usage_error() -> None:
    async with order_flow.invoke(MemoryLogStorage(label="idle")) as job:
        with pytest.raises(
            duron.UsageError,
            match="^"
            + re.escape("job idle was not started: call start() or resume() first")
            + "$",
        ):
            await job.wait()


async def test_start_twice_is_a_usage_error() -> None:
    async with order_flow.invoke(MemoryLogStorage(label="twice")) as job:
        await job.start(1)
        with pytest.raises(
            duron.UsageError,
            match="^"
            + re.escape(
                "job twice is running: start()/resume() once, inside `async with "
                "fn.invoke(storage) as job`"
            )
            + "$",
        ):
            await job.start(1)
        assert await job.wait() == "receipt-1"


async def test_wait_after_close_before_the_end_is_a_usage_error() -> None:
    storage = MemoryLogStorage(label="stopped")
    async with order_flow_extra_effect.invoke(storage) as job:
        await job.start(1)
        await job.close()
        with pytest.raises(
            duron.UsageError,
            match="^"
            + re.escape("job stopped was closed before it finished; resume() it later")
            + "$",
        ):
            await job.wait()


async def test_a_second_writer_on_the_same_log_is_refused() -> None:
    storage = MemoryLogStorage(label="busy")
    async with order_flow.invoke(storage) as job:
        with pytest.raises(
            duron.LogLockedError,
            match="^"
            + re.escape(
                "log busy is already open for writing by another job (held by "
                "another job in this process); a log has one writer at a time: "
                "close the other job or wait for it to finish"
            )
            + "$",
        ):
            async with order_flow.invoke(storage):
                pass
        await job.start(2)
        assert await job.wait() == "receipt-2"


def test_calling_a_durable_function_directly_is_a_usage_error() -> None:
    with pytest.raises(
        duron.UsageError,
        match="^"
        + re.escape(
            "durable function refund_flow is not called directly; run it as a job: "
            "async with refund_flow.invoke(storage) as job: await job.start(...)"
        )
        + "$",
    ):
        refund_flow(1)


def test_durable_function_must_be_async_and_take_the_context() -> None:
    def not_async(ctx: duron.Context) -> None:
        pass

    with pytest.raises(
        duron.UsageError,
        match="^"
        + re.escape(
            "@duron.durable needs an async def function, but "
            f"{not_async.__qualname__} is not one"
        )
        + "$",
    ):
        duron.durable(not_async)  # type: ignore[arg-type]

    async def no_params() -> None:
        pass

    with pytest.raises(
        duron.UsageError,
        match="^"
        + re.escape(
            f"durable function {no_params.__qualname__} must take the context as "
            "its first parameter: async def fn(ctx: duron.Context, ...)"
        )
        + "$",
    ):
        duron.durable(no_params)  # type: ignore[arg-type]


class GoesAway(MemoryLogStorage):
    """A store that cannot be reached after its first write (the job entry)."""

    async def append(self, entries: Sequence[bytes], /) -> None:
        if self.raw:
            raise duron.StoreUnavailableError(
                store=self.label, operation="append", detail="connection lost"
            )
        await super().append(entries)


async def test_a_run_the_store_stopped_is_interrupted_not_failed() -> None:
    storage = GoesAway(label="flaky")
    async with order_flow.invoke(storage) as job:
        await job.start(3)
        with pytest.raises(duron.StoreUnavailableError):
            await job.wait()
        assert job.state == "interrupted"
    assert [e.type for e in storage.entries()] == ["job"]  # nothing else recorded


@duron.durable
async def raises_a_storage_error(ctx: duron.Context) -> None:
    raise duron.StorageError(store="elsewhere", operation="read", detail="mine")


async def test_a_storage_error_raised_by_durable_code_is_the_jobs_own_failure() -> None:
    # Not the job's storage failing (that never reaches durable code): recorded as
    # the job's end, so that a worker does not take it for an outage.
    storage = MemoryLogStorage()
    async with raises_a_storage_error.invoke(storage) as job:
        await job.start()
        with pytest.raises(duron.EffectError):
            await job.wait()
        assert job.state == "failed"
    assert [e.type for e in storage.entries()] == ["job", "end"]
