"""The PostgreSQL store's schema: its tables, their version, and migrations.

Duron's tables live in a PostgreSQL schema (namespace) of their own, ``duron`` by
default. ``schema_version`` records every migration applied; :func:`migrate`
(``store.migrate()``, ``duron db migrate URL``) applies the missing ones, and a
store refuses to run on a schema that is missing, older or newer than this
Duron's (:func:`check_schema`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from duron._errors import SchemaError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = [
    "SCHEMA_VERSION",
    "Schema",
    "channel",
    "check_schema",
    "current_version",
    "migrate",
    "missing_schema",
    "statements",
]

SCHEMA_VERSION = 4
"""The schema version this Duron writes; ``migrate()`` brings a database up to it."""

# Each migration takes the schema from version N-1 to N; ``{s}`` is the quoted schema.
_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE {s}.jobs (
    id text PRIMARY KEY,
    function text,
    args text,
    status text NOT NULL CHECK (status IN
        ('pending', 'running', 'completed', 'failed', 'cancelled')),
    result text,
    error text,
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_expires timestamptz,
    epoch bigint NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    forked_from text
);
CREATE INDEX jobs_runnable ON {s}.jobs (created, id)
    WHERE status IN ('pending', 'running');
CREATE INDEX jobs_lease_owner ON {s}.jobs (lease_owner)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_status ON {s}.jobs (status, updated);
CREATE TABLE {s}.entries (
    job_id text NOT NULL,
    seq bigint NOT NULL,
    epoch bigint NOT NULL,
    entry text NOT NULL,
    PRIMARY KEY (job_id, seq)
);
""",
    # The jobs' inboxes: input sent to a job by its id (see duron._inbox).
    2: """
ALTER TABLE {s}.jobs ADD COLUMN inbox_seq bigint NOT NULL DEFAULT 0;
CREATE TABLE {s}.inbox (
    job_id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    target text NOT NULL,
    data text,
    error text,
    created timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);
""",
    # Suspended jobs (waiting on durable things only, holding no worker) and
    # when their timer wakes them.
    3: """
ALTER TABLE {s}.jobs ADD COLUMN wake_at timestamptz;
ALTER TABLE {s}.jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_status_check CHECK (status IN
    ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled'));
CREATE INDEX jobs_waking ON {s}.jobs (wake_at) WHERE status = 'suspended';
""",
    # Child jobs: the job that started one, and the future there that its end
    # completes, through the parent's inbox, in the transaction that ends it.
    # Cancel requests now travel through the inbox: pending ones move there.
    4: """
UPDATE {s}.jobs SET inbox_seq = inbox_seq + 1
    WHERE cancel_requested AND status NOT IN ('completed', 'failed', 'cancelled');
INSERT INTO {s}.inbox (job_id, seq, kind, target)
    SELECT id, inbox_seq, 'cancel', '' FROM {s}.jobs
    WHERE cancel_requested AND status NOT IN ('completed', 'failed', 'cancelled');
ALTER TABLE {s}.jobs ADD COLUMN parent_id text;
ALTER TABLE {s}.jobs ADD COLUMN parent_future text;
CREATE INDEX jobs_parent ON {s}.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE FUNCTION {s}.child_ended() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    n bigint;
    message text := 'child job ' || NEW.id || ' was cancelled';
BEGIN
    UPDATE {s}.jobs SET inbox_seq = inbox_seq + 1,
        status = CASE status WHEN 'suspended' THEN 'pending' ELSE status END,
        wake_at = CASE status WHEN 'suspended' THEN NULL ELSE wake_at END
        WHERE id = NEW.parent_id RETURNING inbox_seq INTO n;
    IF n IS NOT NULL THEN
        INSERT INTO {s}.inbox (job_id, seq, kind, target, data, error)
        VALUES (NEW.parent_id, n, 'future', NEW.parent_future,
            CASE NEW.status WHEN 'completed' THEN NEW.result END,
            CASE NEW.status
                WHEN 'completed' THEN NULL
                WHEN 'cancelled' THEN json_build_object(
                    'type', 'duron._errors.JobCancelledError',
                    'message', message, 'args', json_build_array(message))::text
                ELSE NEW.error END);
        PERFORM pg_notify(TG_ARGV[0], NEW.parent_id);
    END IF;
    RETURN NULL;
END
$f$;
CREATE TRIGGER jobs_child_ended AFTER UPDATE OF status ON {s}.jobs
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL
        AND NEW.status IN ('completed', 'failed', 'cancelled')
        AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION {s}.child_ended('{notify}');
""",
}


# Indexes change no table: a schema of this version works with or without them
# (only slower), so they are not a migration of their own but made by every
# migrate() that finds one missing (a schema migrated before they existed). For
# the job list (by creation time, of a function or a status) and for claims of a
# worker's own functions.
_INDEXES = {
    "jobs_created": "jobs (created, id)",
    "jobs_function": "jobs (function, created, id)",
    "jobs_status_created": "jobs (status, created, id)",
    "jobs_runnable_function": "jobs (function, created, id) "
    "WHERE status IN ('pending', 'running')",
}


def channel(schema: str) -> str:
    """The notification channel of a store's schema (a quoted identifier's text,
    at most 63 bytes as PostgreSQL keeps them): input stored for a job."""
    return f"duron_inbox:{schema}"[:63]


def statements(script: str) -> list[str]:
    """The statements of a migration script: split at ``;``, except inside a
    ``$f$``-quoted function body."""
    out: list[str] = []
    current: list[str] = []
    for part in script.split(";"):
        current.append(part)
        if "".join(current).count("$f$") % 2 == 0:  # not inside a body
            statement = ";".join(current).strip()
            if statement:
                out.append(statement)
            current = []
    return out


@dataclass(frozen=True)
class Schema:
    """Where a store's tables live: a PostgreSQL schema (namespace) of their own."""

    name: str

    @property
    def q(self) -> str:
        """The schema as a quoted identifier (the name is checked to need no escape)."""
        return f'"{self.name}"'


def missing_schema(label: str, schema: Schema) -> SchemaError:
    return SchemaError(
        store=label,
        detail=f"no Duron schema {schema.name!r} in this database; create it with "
        f"`duron db migrate URL` or `await store.migrate()`",
    )


async def current_version(conn: AsyncConnection[Any], schema: Schema) -> int | None:
    """The schema's version, or ``None`` when it has no ``schema_version`` table."""
    cur = await conn.execute(
        "SELECT to_regclass(%s)", (f"{schema.q}.schema_version",), prepare=False
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    cur = await conn.execute(f"SELECT max(version) FROM {schema.q}.schema_version")
    row = await cur.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


async def check_schema(conn: AsyncConnection[Any], label: str, schema: Schema) -> None:
    """Refuse a database whose schema is missing, older or newer than this Duron's.

    Raises:
        SchemaError: What is wrong and which command fixes it.
    """
    version = await current_version(conn, schema)
    if version is None:
        raise missing_schema(label, schema)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            store=label,
            detail=f"written by a newer Duron (store schema version {version}, "
            f"this Duron knows up to {SCHEMA_VERSION}): upgrade duron",
        )
    if version < SCHEMA_VERSION:
        raise SchemaError(
            store=label,
            detail=f"store schema version {version} is older than this Duron's "
            f"({SCHEMA_VERSION}); upgrade it with `duron db migrate URL` or "
            "`await store.migrate()`",
        )


async def migrate(conn: AsyncConnection[Any], label: str, schema: Schema) -> list[int]:
    """Create the schema or bring it up to :data:`SCHEMA_VERSION`; the versions
    applied. Concurrent migrations wait for each other (an advisory lock)."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"duron:{schema.name}",)
        )
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema.q}")
        version = await current_version(conn, schema)
        if version is None:
            await conn.execute(
                f"CREATE TABLE {schema.q}.schema_version (version integer PRIMARY "
                "KEY, applied timestamptz NOT NULL DEFAULT now())"
            )
            version = 0
        if version > SCHEMA_VERSION:
            raise SchemaError(
                store=label,
                detail=f"written by a newer Duron (store schema version {version}, "
                f"this Duron knows up to {SCHEMA_VERSION}): upgrade duron",
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            script = _MIGRATIONS[v].format(s=schema.q, notify=channel(schema.name))
            for statement in statements(script):
                await conn.execute(statement)
            await conn.execute(
                f"INSERT INTO {schema.q}.schema_version (version) VALUES (%s)", (v,)
            )
            applied.append(v)
        for name, on in _INDEXES.items():
            await conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {schema.q}.{on}")
    return applied
