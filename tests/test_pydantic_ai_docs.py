"""docs/pydantic-ai.md shows a complete program with its output: run it and compare."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "pydantic-ai.md"
PROGRAM = re.compile(r"```python\n(.*?)```\n\nOutput:\n\n```text\n(.*?)```", re.DOTALL)


def test_the_program_prints_what_the_page_says(tmp_path: Path) -> None:
    programs = PROGRAM.findall(PAGE.read_text(encoding="utf-8"))
    assert len(programs) == 1
    code, output = programs[0]
    script = tmp_path / "program.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == output
