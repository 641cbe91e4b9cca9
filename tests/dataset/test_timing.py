"""DELT_TIMINGS phases (delt_cli.dataset.timing): a phase inside another counts for itself alone."""

from __future__ import annotations

import time

from delt_cli.dataset import timing


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_nested_phase_time_is_not_counted_twice(monkeypatch):
    monkeypatch.setattr(timing, "ENABLED", True)
    monkeypatch.setattr(timing, "_cpu", {})
    with timing.phase("bucket"):
        _spin(0.05)
        with timing.phase("ids"):
            _spin(0.1)
        _spin(0.05)
    with timing.phase("ids"):
        _spin(0.02)
    cpu = dict(timing._cpu)
    assert 0.1 <= cpu["bucket"] < 0.14, cpu  # its own 0.1 s, not the inner 0.1 s as well
    assert 0.12 <= cpu["ids"] < 0.16, cpu
