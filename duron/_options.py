"""Options of a call of a durable function: how a job runs, never what it gets.

A call's arguments are the durable function's, every one of them: a function may
well take a ``job_id`` or a ``queue`` parameter of its own. So options of the call
itself travel on the callable, ``fn.options(job_id="order-42")``, never among the
keyword arguments (as trio's ``start_soon`` takes none for the same reason):

```python
job_id = await store.submit(checkout.options(job_id="order-42"), order)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar

from duron._errors import UsageError

__all__ = ["JOB_ID_RULE", "CallOptions", "is_job_id"]

_O = TypeVar("_O", bound="CallOptions")

JOB_ID_RULE = "a non-empty string of at most 255 characters"


def is_job_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a job (see :data:`JOB_ID_RULE`)."""
    return isinstance(value, str) and 0 < len(value) <= 255


def _option(check: Callable[[object], bool], rule: str) -> Any:
    """A field of :class:`CallOptions`: unset (``None``) by default; a value
    must pass ``check``, which ``rule`` tells a user in words."""
    return field(default=None, metadata={"check": check, "rule": rule})


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOptions:
    """The options a durable function carries for its calls (``fn.options(...)``).

    Unset options are ``None``: the store's default applies. Get them from a
    function with ``fn.call_options``; set them with ``fn.options(...)``.

    Attributes:
        job_id: The id of the job a ``store.submit()`` of it makes (default: a
            random one). Submitting again under the same id is idempotent.
    """

    # One line per option: its name, its type and what checks its value (then a
    # keyword of the same name on DurableFn.options, for type checkers).
    job_id: str | None = _option(is_job_id, JOB_ID_RULE)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def merged(self: _O, owner: str, **given: Any) -> _O:
        """These options with each ``given`` one that is not ``None`` set.

        Args:
            owner: What the options are for, for the message (``"checkout"``).
            **given: Option values; ``None`` leaves an option as it is.

        Raises:
            UsageError: An unknown option, or a bad value (naming both).
        """
        changes: dict[str, Any] = {}
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in given.items():
            if value is None:
                continue
            spec = known.get(name)
            if spec is None:
                raise UsageError(
                    f"{owner}.options() has no option {name!r} (options: "
                    f"{', '.join(known)})"
                )
            if not spec.metadata["check"](value):
                raise UsageError(
                    f"{owner}.options({name}=...): {name} must be "
                    f"{spec.metadata['rule']}, not {value!r}"
                )
            changes[name] = value
        return dataclasses.replace(self, **changes) if changes else self

    def given(self) -> dict[str, Any]:
        """The options that are set, by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.given().items())
        return f"{type(self).__name__}({given})"
