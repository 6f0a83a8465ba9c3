"""Locust load shape for `loadtest.capacity`: a staircase of user counts, read from the environment.

    CAPACITY_STEPS=500,1000,2000  CAPACITY_STEP_SECONDS=40  CAPACITY_SPAWN_RATE=100
    locust -f loadtest/locustfile.py,loadtest/capacity_shape.py --headless ...

Step `i` holds `steps[i]` users from `i * step_seconds` to `(i + 1) * step_seconds`; the run ends after
the last step. Only loaded when named with `-f`, so plain locust runs are not affected.
"""

from __future__ import annotations

import os

from locust import LoadTestShape


class StaircaseShape(LoadTestShape):
    """Hold each user count of CAPACITY_STEPS for CAPACITY_STEP_SECONDS, then stop."""

    steps = [int(s) for s in os.environ.get("CAPACITY_STEPS", "500,1000,2000,4000").split(",") if s.strip()]
    step_seconds = float(os.environ.get("CAPACITY_STEP_SECONDS", "40"))
    spawn_rate = float(os.environ.get("CAPACITY_SPAWN_RATE", "100"))

    def tick(self) -> tuple[int, float] | None:
        step = int(self.get_run_time() // self.step_seconds)
        if step >= len(self.steps):
            return None
        return self.steps[step], self.spawn_rate
