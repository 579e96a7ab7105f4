from __future__ import annotations

from pathlib import Path

import pytest

from agent.rules import load_engine

ROOT = Path(__file__).resolve().parents[3]
PACKS = ROOT / "agent" / "rules" / "packs"
SCENARIOS = ROOT / "agent" / "rules" / "scenarios"
T0 = 1_736_121_600_000  # 2025-01-06T00:00:00Z


@pytest.fixture
def charger():
    return load_engine(device_class="charger", mode="enforce")


@pytest.fixture
def tcu():
    return load_engine(device_class="tcu", mode="enforce")
