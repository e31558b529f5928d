"""Dwell time at a stop, by the TCQSM model.

TCQSM (Transit Capacity and Quality of Service Manual, 3rd ed., ch. 6): dwell
``t_d = P_a * t_a + P_b * t_b + t_oc`` per door channel.  Here ``t_b`` is built per rider
from the payment path: a walk-on time every rider needs plus what paying adds: handling the
card or the coins, and for a card the tap itself, whose latency comes from the field's
measured distribution or the real kernel's model (``sim.latency``).  Boarders spread over the
front door's validators, alighters over the rear door's channels.  The doors are separate
streams, so by TCQSM's rule for separate doors the busier one sets the dwell:
``t_d = max(t_alight, t_board) + t_oc`` (``simultaneous``, the default); with
``simultaneous = false`` the two add up, as for riders who board and alight through one door.
The defaults and where each figure comes from: sim/README.md, "Calibration".

The dwell attributable to payment is the dwell minus the dwell of the same riders boarding
with nothing to pay (walk-on time only).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ConfigError

PATHS = ("cemv", "tunion", "cash")  # contactless bank card, T-Union e-purse, cash


@dataclass(frozen=True, slots=True)
class DwellConfig:
    # The field-2026 calibration (sim/calibrations/field-2026.toml holds the same values and
    # a test keeps them equal; sim/README.md, "Calibration", gives each figure's source).
    t_alight: float = 2.1  # s per alighting rider per channel (TCQSM 2.1-3.3; not re-checked)
    t_walk: float = 1.5  # s per boarding rider with nothing to pay (Chen et al. 2020, 2 queues)
    handle_cemv: float = 0.87  # s to present a bank card: Bian's 1.40 s less the tap, 0.53 s
    handle_tunion: float = 1.16  # s for a transit card: Bian's 1.25 s less the kernel's tap
    handle_cash: float = 2.5  # s to pay coins: TCQSM's cash 4.0 s less the walk-on 1.5 s
    decline_retry: float = 3.0  # s lost when a tap is refused (retry, then another way)
    door_time: float = 4.0  # t_oc: door opening and closing, s (TCQSM 2-5)
    validators: int = 2  # boarding channels at the front door
    alight_channels: int = 2  # rear door
    simultaneous: bool = True  # separate doors: the busier sets the dwell (TCQSM)

    def __post_init__(self) -> None:
        for name in ("t_alight", "t_walk", "handle_cemv", "handle_tunion", "handle_cash",
                     "decline_retry", "door_time"):
            if getattr(self, name) < 0:
                raise ConfigError(f"dwell.{name} must not be negative")
        if self.validators < 1 or self.alight_channels < 1:
            raise ConfigError("dwell.validators and dwell.alight_channels must be at least 1")

    def handle(self, path: str) -> float:
        return {"cemv": self.handle_cemv, "tunion": self.handle_tunion,
                "cash": self.handle_cash}[path]


def dwell(cfg: DwellConfig, alighting: int, boarding: int, payment_seconds: float,
          alight_payment_seconds: float = 0.0) -> float:
    """Dwell for ``alighting`` and ``boarding`` riders, ``payment_seconds`` being what the
    boarders' payments add in total (handling + tap latencies + retries) and
    ``alight_payment_seconds`` what tapping off adds; 0 when nobody moves."""
    if alighting == 0 and boarding == 0:
        return 0.0
    t_alight = (alighting * cfg.t_alight + alight_payment_seconds) / cfg.alight_channels
    t_board = (boarding * cfg.t_walk + payment_seconds) / cfg.validators
    if cfg.simultaneous:
        return max(t_alight, t_board) + cfg.door_time
    return t_alight + t_board + cfg.door_time


def dwell_without_payment(cfg: DwellConfig, alighting: int, boarding: int) -> float:
    return dwell(cfg, alighting, boarding, 0.0, 0.0)
