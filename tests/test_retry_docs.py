"""The retries section of docs/concepts.md shows a complete program with its output:
run it and compare what it prints with what the page says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "concepts.md"
# A python block (no fence inside it) followed by its output.
PROGRAM = re.compile(
    r"```python\n((?:(?!```).)*)```\n\nOutput:\n\n```text\n(.*?)```", re.DOTALL
)


def test_the_retry_program_prints_what_the_page_says(tmp_path: Path) -> None:
    # The page shows other programs too (long-lived jobs); this one retries.
    [(code, output)] = [
        found
        for found in PROGRAM.findall(PAGE.read_text(encoding="utf-8"))
        if "duron.RetryPolicy(" in found[0]
    ]
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
