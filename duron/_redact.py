"""Hiding the passwords of connection strings in anything Duron shows.

A store is named by a connection string that may hold a password: a URL
(``postgresql://app:secret@db/app``), libpq's keyword form (``host=db
password=secret``) or a URL whose query string carries it (``?password=secret``).
Labels, error messages, log records and the command line's output pass what they
show through :func:`redact`, so that no password reaches a terminal, a log file or
a bug report.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MASK", "redact"]

MASK = "***"

# scheme://user:PASSWORD@host: the password runs to the last "@" of the authority
# (before the path, query or fragment). A password with an unencoded "/", "?" or
# "#" is not a valid URL, but it is hidden too: up to the last "@" of the word.
_URL = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:@/?#]*:)"
    r"(?P<secret>[^\s/?#]*|\S*)@"
)
# ?password=PASSWORD or &password=PASSWORD in a URL's query string (libpq
# percent-decodes the name too: ?pass%77ord= is a password).
_QUERY = re.compile(r"(?P<head>[?&](?P<key>[^=&#\s]*)=)(?P<secret>[^&#\s]*)")
_SECRET_KEYS = frozenset({"password", "sslpassword"})
# password=PASSWORD in libpq's keyword form: a quoted value (with backslash
# escapes, possibly unterminated) or a bare word.
_KEYWORD = re.compile(
    r"(?P<head>(?<![\w?&])(?:ssl)?password\s*=\s*)"
    r"(?P<secret>'(?:\\.|[^\\'])*'?|\S+)",
    re.IGNORECASE,
)


def redact(text: str, *, dsn: str | None = None) -> str:
    """``text`` with every password of a connection string replaced by ``***``.

    Recognised in ``text``: the password of a URL (``scheme://user:password@host``),
    a ``password=`` (or ``sslpassword=``) parameter of a URL's query string, and a
    ``password=`` keyword of libpq's ``key=value`` form, quoted or not. Anything
    else is returned unchanged, so it is safe on any message, and on a text
    already redacted.

    Args:
        text: What is about to be shown.
        dsn: The connection string ``text`` is about: its passwords are also
            hidden wherever they appear on their own (a driver that cannot parse
            a DSN quotes the piece it stopped at, which may be the password).

    Returns:
        The text to show.

    Example:
        ```python
        redact("postgresql://app:secret@db/app")  # 'postgresql://app:***@db/app'
        redact("host=db password='a b' dbname=app")  # 'host=db password=*** dbname=app'
        ```
    """
    if dsn is not None:
        # Longest first: a password that holds another one is hidden whole.
        for secret in sorted(_passwords(dsn), key=len, reverse=True):
            text = text.replace(secret, MASK)
    if "://" not in text and "=" not in text:
        return text  # no URL, no key=value: nothing to hide
    text = _URL.sub(rf"\g<head>{MASK}@", text)
    text = _QUERY.sub(_mask_query, text)
    return _KEYWORD.sub(rf"\g<head>{MASK}", text)


def _mask_query(match: re.Match[str]) -> str:
    if _is_secret_key(match["key"]):
        return match["head"] + MASK
    return match[0]


def _is_secret_key(key: str) -> bool:
    return unquote(key).lower() in _SECRET_KEYS


# The password of a whole DSN that is a URL, even one libpq rejects (a space in
# it): to the first "@", and to the last one.
_DSN_URL = re.compile(r"\A\s*[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:(?P<short>[^@]*)@")
_DSN_URL_LONG = re.compile(r"\A\s*[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:(?P<long>.*)@")


def _passwords(dsn: str) -> set[str]:
    """Every password written in ``dsn``, as written and as it reads decoded."""
    found: list[str] = [m["secret"] for m in _URL.finditer(dsn)]
    for pattern, group in ((_DSN_URL, "short"), (_DSN_URL_LONG, "long")):
        whole = pattern.match(dsn)
        if whole is not None:
            found.append(whole[group])
    found += [m["secret"] for m in _QUERY.finditer(dsn) if _is_secret_key(m["key"])]
    for m in _KEYWORD.finditer(dsn):
        value = m["secret"]
        found.append(value)
        if value.startswith("'"):
            inner = value[1:-1] if len(value) > 1 and value.endswith("'") else value[1:]
            found += [inner, re.sub(r"\\(.)", r"\1", inner)]
    out: set[str] = set()
    for value in found:
        out.update((value, unquote(value)))
    out.discard(MASK)
    return {value for value in out if value}
