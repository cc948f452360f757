"""The docs say what the code does: the README's quickstart is the example program,
and the API reference lists every public name."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import duron

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).parent.parent


def test_readme_shows_the_quickstart_program_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    program = (ROOT / "examples" / "hello_world.py").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert program in blocks, "README.md no longer shows examples/hello_world.py as is"


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return None


def test_reference_documents_every_public_name() -> None:
    """Every name in the ``__all__`` of ``duron``, ``duron.contrib.storage`` and of
    any other module the reference documents has an entry, and every entry names
    something public."""
    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: ([\w.]+)$", reference, flags=re.MULTILINE))
    if sys.version_info < (3, 11):  # pydantic-ai, and so its extra, needs 3.11
        documented = {
            d for d in documented if not d.startswith("duron.contrib.pydantic_ai")
        }
    modules = {"duron", "duron.contrib.storage"}
    unknown = []
    for target in sorted(documented):
        if _module(target) is not None:
            modules.add(target)
            continue
        owner, _, name = target.rpartition(".")
        module = _module(owner)
        if module is None or name not in getattr(module, "__all__", ()):
            unknown.append(target)
            continue
        modules.add(owner)
    assert not unknown, (
        f"docs/reference.md documents names that are not public: {unknown}"
    )

    missing = []
    for owner in sorted(modules):
        module = importlib.import_module(owner)
        for name in getattr(module, "__all__", ()):
            if name == "__version__" or f"{owner}.{name}" in documented:
                continue
            # A name re-exported by duron (LogStorage) is documented there once.
            if f"duron.{name}" in documented and getattr(duron, name, None) is getattr(
                module, name
            ):
                continue
            missing.append(f"{owner}.{name}")
    assert not missing, f"docs/reference.md has no ::: entry for {missing}"
