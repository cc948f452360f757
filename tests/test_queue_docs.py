"""docs/service.md's queue program: run it and compare what it prints with what
the page says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "service.md"
PROGRAM = re.compile(
    r"```python\n((?:(?!```).)*?)```\n\nIt prints:\n\n```text\n(.*?)```", re.DOTALL
)


def test_the_queue_program_prints_what_the_page_says(tmp_path: Path) -> None:
    [(code, output)] = PROGRAM.findall(PAGE.read_text(encoding="utf-8"))
    script = tmp_path / "queue_program.py"
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
