"""A storage backend in forty lines: logs kept in a dict, one writer per log.

Run it: ``python examples/custom_storage.py``. It runs a job on the new backend,
then replays it from a second handle on the same log. The same class runs through
Duron's storage contract suite (``tests/test_storage_contract.py``), which is how a
real backend (a key-value store, a cloud table) shows it keeps the contract.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence

import duron
from duron import LogLockedError, StorageError


# --8<-- [start:backend]
class DictStore:
    """Many logs by name; stands in for a database all handles share."""

    def __init__(self) -> None:
        self.logs: dict[str, list[bytes]] = {}
        self.writers: set[str] = set()  # names of the logs someone writes

    def log(self, name: str) -> "DictLog":
        return DictLog(self, name)


class DictLog:
    """One log of a :class:`DictStore`: a ``duron.LogStorage``."""

    def __init__(self, store: DictStore, name: str) -> None:
        self.store = store
        self.label = name  # how errors and tools name this log
        self._writer = False

    async def acquire(self) -> None:
        if self.label in self.store.writers:  # one writer per log, this one included
            raise LogLockedError(job=self.label)
        self.store.writers.add(self.label)
        self._writer = True

    async def release(self) -> None:
        if self._writer:
            self.store.writers.discard(self.label)
            self._writer = False

    async def read(self) -> AsyncIterator[tuple[int, bytes]]:
        entries = self.store.logs.get(self.label, [])
        for position, entry in enumerate(list(entries)):
            yield position, entry

    async def append(self, entries: Sequence[bytes], /) -> None:
        if not self._writer:
            raise StorageError(
                kind="log",
                store=self.label,
                operation="append",
                detail="not open for writing (acquire() first)",
            )
        # A real backend makes this one transaction: all of the batch or a prefix.
        self.store.logs.setdefault(self.label, []).extend(entries)


# --8<-- [end:backend]


@duron.effect
async def double(n: int) -> int:
    print(f"  effect: double({n})")
    return 2 * n


@duron.durable
async def twice(ctx: duron.Context, n: int) -> int:
    return await ctx.run(double, await ctx.run(double, n))


async def main() -> None:
    store = DictStore()
    assert isinstance(store.log("job-1"), duron.LogStorage)
    for run in ("first run", "replay"):
        print(f"{run}:")
        async with twice.invoke(store.log("job-1")) as job:
            await job.start(5)
            print("  result:", await job.wait())
    print(f"the store holds {len(store.logs['job-1'])} entries for job-1")


if __name__ == "__main__":
    asyncio.run(main())
