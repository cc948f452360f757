"""The instruments Duron records its metrics with (see the observability guide)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

__all__ = ["Instruments"]


class Instruments:
    """Duron's counters and histograms, made once per ``instrument()``."""

    def __init__(self, meter: Meter) -> None:
        self.attempts = meter.create_counter(
            "duron.effect.attempts",
            unit="{attempt}",
            description="Effect attempts run live (replayed effects are not counted)",
        )
        self.effect_duration = meter.create_histogram(
            "duron.effect.duration",
            unit="s",
            description="How long a live effect attempt ran",
        )
        self.replayed = meter.create_counter(
            "duron.effect.replayed",
            unit="{effect}",
            description="Effects that took their recorded result on replay",
        )
        self.runs = meter.create_counter(
            "duron.job.runs",
            unit="{run}",
            description="Runs of jobs begun (a resume is a run)",
        )
        self.running = meter.create_up_down_counter(
            "duron.job.running",
            unit="{job}",
            description="Jobs running in this process",
        )
        self.ended = meter.create_counter(
            "duron.job.ended",
            unit="{job}",
            description="Jobs that ended, by status",
        )
        self.job_duration = meter.create_histogram(
            "duron.job.duration",
            unit="s",
            description="From a job's creation to its end, over every run",
        )
        self.queue_wait = meter.create_histogram(
            "duron.job.queue_wait",
            unit="s",
            description="From a job's creation to the start of its first run",
        )
