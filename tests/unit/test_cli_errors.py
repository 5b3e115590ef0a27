"""The CLI's error messages reach stderr whole, whatever the terminal's width."""

from __future__ import annotations

import subprocess
import sys


def test_an_error_is_one_line_at_any_terminal_width() -> None:
    message = "Kafka at 127.0.0.1:1 does not answer " + "a long explanation " * 12 + "(run `activity stack up`)"
    script = f"from activity.commands.common import fail\nfail({message!r})"
    for columns in ("40", "97", "200"):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                                env={"COLUMNS": columns, "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        assert result.stderr == f"error: {message}\n"
