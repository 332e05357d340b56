"""The README's config examples stay valid configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config.loader import parse_config
from plugins.providers.registry import NEEDS_BASE_URL, provider_types

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.DOTALL)


def test_readme_has_config_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS)
def test_readme_config_example_is_valid(block: str) -> None:
    names = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", block))
    cfg = parse_config(
        block,
        provider_types(),
        needs_base_url=NEEDS_BASE_URL,
        env={name: f"sk-example-{name.lower()}" for name in names},
    )
    assert cfg.models
