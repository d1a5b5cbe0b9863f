from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """$EDGENAS_DATA, or ../shared/data beside the repository, if present."""
    env = os.environ.get("EDGENAS_DATA")
    for candidate in [env, REPO.parent / "shared" / "data"]:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("reference data absent: set EDGENAS_DATA or place it at ../shared/data")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def micro():
    from edgenas.spaces import get_space

    return get_space("tests.micro_space:micro_space")  # as a user loads their own space
