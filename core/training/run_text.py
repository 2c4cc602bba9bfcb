"""Short texts for a running training: rate, remaining time, the one-line progress summary."""
from __future__ import annotations

import math


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``"1m 15s"``, ``3725`` -> ``"1h 02m"``; unknown or negative -> ``"--"``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def format_rate(steps_per_second: float | None) -> str:
    """Steps per second as people read it: ``"3.20 it/s"`` when fast, ``"12.5 s/it"`` when slow."""
    if steps_per_second is None or not math.isfinite(steps_per_second) or steps_per_second <= 0:
        return "-- it/s"
    if steps_per_second >= 1:
        return f"{steps_per_second:.2f} it/s"
    return f"{1 / steps_per_second:.1f} s/it"


def format_loss(value: float | None) -> str:
    """A loss with four decimals; ``"--"`` when unknown, ``"nan"`` kept visible."""
    if value is None:
        return "--"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}"


def eta_seconds(step: int, total_steps: int | None, steps_per_second: float | None) -> float | None:
    """Remaining seconds at the current rate, or None when it cannot be known yet."""
    if not total_steps or not steps_per_second or steps_per_second <= 0:
        return None
    return max(0, total_steps - step) / steps_per_second
