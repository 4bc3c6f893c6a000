"""Session-wide test environment and the one shared tiny model.

Every process of the test session (and the subprocesses and Ray workers it starts, which inherit
the environment) runs verl on the CPU harness (:mod:`verl_lpreg.cpu`, loaded by verl itself at
``import verl`` before the verl-lpreg plugin registers), offline, with no telemetry.
"""

import os

os.environ.setdefault("VERL_USE_EXTERNAL_MODULES", "verl_lpreg.cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A tiny random Qwen2 with its BPE tokenizer (verl_lpreg.testing.tiny_model), built once per session."""
    from verl_lpreg.testing.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model", seed=0))
