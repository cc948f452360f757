"""docs/observability.md shows complete programs with their output: run each one and
compare what it prints with what the page says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "observability.md"
PROGRAM = re.compile(r"```python\n(.*?)```\n\nOutput:\n\n```text\n(.*?)```", re.DOTALL)
PROGRAMS = PROGRAM.findall(PAGE.read_text(encoding="utf-8"))


def test_the_page_shows_its_programs() -> None:
    assert len(PROGRAMS) == 4


@pytest.mark.parametrize(("code", "output"), PROGRAMS)
def test_program_prints_what_the_page_says(
    code: str, output: str, tmp_path: Path
) -> None:
    script = tmp_path / "program.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == output
