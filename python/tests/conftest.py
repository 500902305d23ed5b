from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def carto_binary() -> "str | None":
    env = os.environ.get("CARTO_BIN")
    if env:
        return env
    targets = [Path(os.environ["CARGO_TARGET_DIR"])] if os.environ.get("CARGO_TARGET_DIR") else []
    targets += [REPO / "target", Path.home() / ".cache/carto/target"]
    for candidate in (t / "release" / "carto" for t in targets):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("carto")


@pytest.fixture
def carto_bin() -> str:
    b = carto_binary()
    if b is None:
        pytest.skip("no carto binary (set CARTO_BIN or build the workspace)")
    return b


@pytest.fixture
def repo() -> Path:
    return REPO
