"""The docs say what the code does: the README's quickstart is the example program,
and the API reference lists every public name."""

from __future__ import annotations

import re
from pathlib import Path

import duron
import duron.contrib.storage

ROOT = Path(__file__).parent.parent


def test_readme_shows_the_quickstart_program_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    program = (ROOT / "examples" / "hello_world.py").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert program in blocks, "README.md no longer shows examples/hello_world.py as is"


def test_reference_documents_every_public_name() -> None:
    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: ([\w.]+)$", reference, flags=re.MULTILINE))
    public = {f"duron.{name}" for name in duron.__all__ if name != "__version__"}
    storage = {
        f"duron.contrib.storage.{name}"
        for name in duron.contrib.storage.__all__
        if f"duron.{name}" not in public  # LogStorage is documented under duron
    }
    missing = sorted((public | storage) - documented)
    assert not missing, f"docs/reference.md has no ::: entry for {missing}"
    unknown = sorted(documented - public - storage)
    assert not unknown, (
        f"docs/reference.md documents names that are not public: {unknown}"
    )
