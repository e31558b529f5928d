"""Shared set-up for the simulation tests (not a test module)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from sim.config import SimConfig
from sim.connectivity import LinkConfig
from sim.demand import DemandProfile
from sim.population import PopulationConfig

# One calibration store for the whole test process: the first test that needs the kernel's
# calibration measures it (20 taps a class), the others reuse it.
CALIBRATION_DIR = Path(tempfile.mkdtemp(prefix="tapsim-sim-cal-"))
atexit.register(shutil.rmtree, CALIBRATION_DIR, ignore_errors=True)  # (one left per run before)

SMALL_CITY = "synthetic:routes=3,stops=8,buses=6,run=90,start=6,end=10"


def small_config(**changes: Any) -> SimConfig:
    """A few buses for a few hours: a run of a second or two."""
    cfg = SimConfig(hours=4.0, start_hour=6.0, calibration_samples=20, shards=2,
                    demand=DemandProfile(peak_rate=30.0),
                    population=PopulationConfig(lost=0.02, dormant=0.03, expired=0.02,
                                                insufficient=0.05, not_activated=0.1),
                    link=LinkConfig(mean_up=1800.0, mean_down=300.0))
    return replace(cfg, **changes)
