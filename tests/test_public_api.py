"""The public namespace: ``__all__`` says exactly what is exported, imports stay light."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import duron
import duron.contrib.otel
import duron.contrib.storage


def public_names(module: types.ModuleType) -> set[str]:
    """Names a user can import from ``module`` that are not submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize(
    "module",
    [duron, duron.contrib.storage, duron.contrib.otel],
    ids=lambda m: str(m.__name__),
)
def test_all_lists_exactly_the_public_names(module: types.ModuleType) -> None:
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name is listed twice"
    missing = sorted(name for name in exported if not hasattr(module, name))
    assert missing == []
    unlisted = sorted(public_names(module) - set(exported))
    assert unlisted == []


@pytest.mark.parametrize(
    "module",
    [duron, duron.contrib.storage, duron.contrib.otel],
    ids=lambda m: str(m.__name__),
)
def test_exported_classes_and_functions_are_duron_own_and_documented(
    module: types.ModuleType,
) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, (type, types.FunctionType)):
            assert obj.__module__.startswith("duron."), (name, obj.__module__)
            assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_storage_names_are_the_same_objects_everywhere() -> None:
    assert duron.contrib.storage.LogStorage is duron.LogStorage


_PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        pytest.param(
            "duron", ("psycopg", "psycopg_pool", "sqlite3", "trio"), id="duron"
        ),
        pytest.param(
            "duron.contrib.storage", ("psycopg", "psycopg_pool", "trio"), id="storage"
        ),
    ],
)
def test_import_does_not_load_optional_drivers(
    module: str, forbidden: tuple[str, ...]
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(out.stdout)
    assert module in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in forbidden) == []
