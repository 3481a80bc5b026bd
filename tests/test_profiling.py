"""Per-stage timings: nodes grouped into stages, summed over a run, printed as a table."""

import gunpowder as gp
import numpy as np
import pytest
from gunpowder.profiling import Timing

from voltrain.profiling import STAGES, StageProfile, profiling_enabled, stage_ms


def _timed(batch, node_name, seconds):
    """Record that a node of class ``node_name`` took ``seconds``."""
    timing = Timing(type(node_name, (), {})(), "process")
    timing._Timing__time = seconds  # a known duration instead of a sleep
    batch.profiling_stats.add(timing)


def test_nodes_are_grouped_into_stages_and_the_rest_is_other():
    batch = gp.Batch()
    _timed(batch, "ZarrSource", 0.010)
    _timed(batch, "ZarrSource", 0.005)
    _timed(batch, "FusedAugment", 0.030)
    _timed(batch, "AffinityTarget", 0.002)
    _timed(batch, "MyCustomAugment", 0.001)
    ms = dict(zip(STAGES, stage_ms(batch, total_seconds=0.050), strict=True))
    assert ms["read"] == pytest.approx(15.0)
    assert ms["deform"] == pytest.approx(30.0)
    assert ms["target"] == pytest.approx(2.0)
    assert ms["other"] == pytest.approx(3.0)  # the custom node plus 2 ms nobody timed
    assert sum(ms.values()) == pytest.approx(50.0)


def test_a_run_profile_averages_batches_of_samples_into_a_table():
    profile = StageProfile()
    one = np.arange(len(STAGES), dtype=np.float64)
    profile.add(one)
    profile.add(np.stack([one, 3 * one]))  # a collated batch of two samples
    assert profile.samples == 3
    assert profile.mean_ms()["deform"] == pytest.approx(2.0 * 5 / 3)
    table = profile.table()
    assert "3 samples" in table and "deform" in table and "total" in table


@pytest.mark.parametrize("value, enabled", [("1", True), ("0", False), ("", False)])
def test_the_environment_switches_profiling(monkeypatch, value, enabled):
    monkeypatch.setenv("VOLTRAIN_PROFILE", value)
    assert profiling_enabled() == enabled
