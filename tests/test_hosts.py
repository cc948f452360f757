"""Jobs hosted by plain ``asyncio.run`` and by ``anyio.run(..., backend="trio")``.

The async tests elsewhere already run on both backends through anyio's pytest
plugin; these start the host loop themselves, the way a program does.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import sniffio

import duron
from duron.contrib.storage import MemoryLogStorage

if TYPE_CHECKING:
    from pathlib import Path

ran: list[str] = []


@duron.effect
async def fetch(key: str) -> str:
    # Effects run on the host's loop: anyio code works under either backend.
    await anyio.sleep(0.001)
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0)
    ran.append(f"fetch {key} on {sniffio.current_async_library()}")
    return key.upper()


@duron.effect
async def hash_in_thread(key: str) -> int:
    ran.append(f"hash {key}")
    return await anyio.to_thread.run_sync(len, key * 3)


@duron.effect
def blocking(key: str) -> str:
    assert threading.current_thread() is not threading.main_thread()
    ran.append(f"blocking {key}")
    return key[::-1]


@duron.durable
async def host_flow(ctx: duron.Context, keys: list[str]) -> dict[str, Any]:
    # Durable code runs on Duron's own asyncio loop whatever the host is.
    fetched = await asyncio.gather(*(ctx.run(fetch, k) for k in keys))
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0.001)
    await asyncio.sleep(0.001)
    size = await ctx.run(hash_in_thread, keys[0])
    reverse = await ctx.run(blocking, keys[-1])
    return {"fetched": list(fetched), "size": size, "reverse": reverse}


WANT = {"fetched": ["A", "BC"], "size": 3, "reverse": "cb"}


async def run_twice(storage: duron.LogStorage) -> list[Any]:
    results = []
    for _ in range(2):
        async with host_flow.invoke(storage) as job:
            await job.start(["a", "bc"])
            results.append(await job.wait())
    return results


def test_job_hosted_by_anyio_run_on_trio() -> None:
    ran.clear()
    storage = MemoryLogStorage()
    assert anyio.run(run_twice, storage, backend="trio") == [WANT, WANT]
    assert sorted(ran) == [
        "blocking bc",
        "fetch a on trio",
        "fetch bc on trio",
        "hash a",
    ]


def test_job_hosted_by_asyncio_run() -> None:
    ran.clear()
    storage = MemoryLogStorage()
    assert asyncio.run(run_twice(storage)) == [WANT, WANT]
    assert sorted(ran) == [
        "blocking bc",
        "fetch a on asyncio",
        "fetch bc on asyncio",
        "hash a",
    ]


def test_log_written_under_one_host_replays_under_the_other() -> None:
    ran.clear()
    storage = MemoryLogStorage()

    async def once() -> Any:
        async with host_flow.invoke(storage) as job:
            await job.start(["a", "bc"])
            return await job.wait()

    assert anyio.run(once, backend="trio") == WANT
    assert len(ran) == 4
    assert asyncio.run(once()) == WANT
    assert len(ran) == 4


SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    import duron
    from duron.contrib.storage import FileLogStorage


    @duron.effect
    async def greet(name: str) -> str:
        print("effect ran", flush=True)
        await anyio.sleep(0.001)
        return f"Hello, {name}!"


    @duron.durable
    async def flow(ctx: duron.Context, name: str) -> str:
        return await ctx.run(greet, name)


    async def main() -> None:
        async with flow.invoke(FileLogStorage(Path(sys.argv[1]))) as job:
            await job.start("trio")
            print(await job.wait(), flush=True)


    anyio.run(main, backend="trio")
    """
)


def test_trio_hosted_program_replays_its_file_log_in_a_new_process(
    tmp_path: Path,
) -> None:
    script = tmp_path / "program.py"
    script.write_text(SCRIPT)
    log = tmp_path / "log.jsonl"
    outputs = [
        subprocess.run(
            [sys.executable, str(script), str(log)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    assert outputs == ["effect ran\nHello, trio!\n", "Hello, trio!\n"]
    assert log.read_bytes().count(b"\n") == 3  # job, done, end
