"""Tiny models for ML tests, built once per session through the same save/load path as real checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from workers.ml.tiny import tiny_models_build

    torch.set_num_threads(1)  # 2-core machine; parallel test processes would fight over threads
    return tiny_models_build(tmp_path_factory.mktemp("tiny-models"), steps=150, seed=0)
