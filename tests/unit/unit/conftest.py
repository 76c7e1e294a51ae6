from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

MINIMAL = '[service]\nexec = ["/bin/true"]\n'

WriteUnit = Callable[..., Path]


@pytest.fixture
def write_unit(tmp_path: Path) -> WriteUnit:
    """Write `<name>.toml` (text or bytes) into tmp_path and return its path."""

    def write(name: str, content: str | bytes = MINIMAL, directory: Path = tmp_path) -> Path:
        path = directory / f"{name}.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write
