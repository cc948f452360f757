"""``redact``: no password of a connection string survives, whatever its form."""

from __future__ import annotations

import pytest

import duron
from duron._redact import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # URL form
        ("postgresql://app:s3cret@db/app", "postgresql://app:***@db/app"),
        ("postgres://:s3cret@db:5432/app", "postgres://:***@db:5432/app"),
        (
            "postgresql://app:s3cret@db/app?schema=jobs#order-42",
            "postgresql://app:***@db/app?schema=jobs#order-42",
        ),
        # an "@" in the password (unencoded): hidden up to the host's "@"
        ("postgresql://app:p@ss@db/app", "postgresql://app:***@db/app"),
        # a "/" in the password is not a valid URL, and still hidden
        ("postgresql://app:pa/ss@db/app", "postgresql://app:***@db/app"),
        # inside a message, quoted
        (
            "cannot open 'postgresql://app:s3cret@db/app': refused",
            "cannot open 'postgresql://app:***@db/app': refused",
        ),
        # the query string
        (
            "postgresql://app@db/app?sslmode=require&password=s3cret&schema=x",
            "postgresql://app@db/app?sslmode=require&password=***&schema=x",
        ),
        ("postgresql://db/app?PASSWORD=s3cret#j", "postgresql://db/app?PASSWORD=***#j"),
        ("postgresql://db/app?pass%77ord=s3cret", "postgresql://db/app?pass%77ord=***"),
        (
            "postgresql://db/app?sslpassword=s3cret",
            "postgresql://db/app?sslpassword=***",
        ),
        # both at once
        (
            "postgresql://app:one@db/app?password=two",
            "postgresql://app:***@db/app?password=***",
        ),
        # libpq's keyword form
        ("host=db password=s3cret dbname=app", "host=db password=*** dbname=app"),
        ("host=db password = s3cret dbname=app", "host=db password = *** dbname=app"),
        (
            "host=db password='two words' dbname=app",
            "host=db password=*** dbname=app",
        ),
        (
            r"host=db password='it\'s' dbname=app",
            "host=db password=*** dbname=app",
        ),
        ("host=db password='unterminated dbname=app", "host=db password=***"),
        ("sslpassword=s3cret host=db", "sslpassword=*** host=db"),
    ],
)
def test_every_form_of_password_is_hidden(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown  # redacting again changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app@db:5432/app?schema=jobs",
        "sqlite:///jobs.db#order-42",
        "sqlite:////var/lib/a:b@c.db",
        "logs/order-42.jsonl",
        "password authentication failed for user 'app'",
        "no job 'x' in postgresql://app@db/app",
        "https://example.com:8080/path?q=1",
    ],
)
def test_text_without_a_password_is_unchanged(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("message", "dsn", "shown"),
    [
        # libpq quotes the piece it stopped at: here, the password
        (
            'unexpected spaces found in "two words", use percent-encoded spaces',
            "postgresql://app:two words@db/app",
            'unexpected spaces found in "***", use percent-encoded spaces',
        ),
        (
            'invalid percent-encoded token: "%zzs3cret"',
            "postgresql://app:%zzs3cret@db/app",
            'invalid percent-encoded token: "***"',
        ),
        (
            "password was it's",
            r"host=db password='it\'s'",
            "password was ***",
        ),
        (
            "saw p@ss",
            "postgresql://app:p%40ss@db/app",  # shown decoded
            "saw ***",
        ),
    ],
)
def test_the_passwords_of_a_known_dsn_are_hidden_anywhere(
    message: str, dsn: str, shown: str
) -> None:
    assert redact(message, dsn=dsn) == shown


def test_errors_naming_a_store_hide_its_password() -> None:
    url = "postgresql://app:s3cret@db/app"
    err = duron.JobNotFoundError(job="x", store=url)
    assert err.store == "postgresql://app:***@db/app"
    assert str(err) == (
        "no job 'x' in postgresql://app:***@db/app; list the store's jobs with "
        "store.list_jobs() or `duron jobs list`"
    )
    schema = duron.SchemaError(store=url, detail="no Duron schema")
    assert (schema.store, str(schema)) == (
        "postgresql://app:***@db/app",
        "postgresql://app:***@db/app: no Duron schema",
    )
    storage = duron.StorageError(
        store=url, operation="connect", detail=f"cannot connect to {url}: refused"
    )
    assert storage.store == "postgresql://app:***@db/app"
    assert str(storage) == (
        "store postgresql://app:***@db/app: connect failed: cannot connect to "
        "postgresql://app:***@db/app: refused"
    )
