"""Page-Hinkley's parameters reach river: the plugin flags drifts exactly where river's own detector does."""

from types import SimpleNamespace

import pytest
import torch
from river import drift

from lifelong.plugins.boundaries import PageHinkley


def _signal():
    g = torch.Generator().manual_seed(0)
    low = 0.2 + 0.05 * torch.randn(300, generator=g)
    high = 1.5 + 0.05 * torch.randn(300, generator=g)
    return torch.cat([low, high]).tolist()


def _plugin_detections(plugin, values):
    learner = SimpleNamespace(device=torch.device("cpu"), samples_seen=0)
    plugin.before_training(learner, None)
    fired = []
    for i, v in enumerate(values):
        learner.samples_seen = i + 1
        step = SimpleNamespace(losses={"ce": torch.tensor(v)})
        if plugin.detect_boundary(learner, step):
            fired.append(i + 1)
    return fired


def _river_detections(values, **kw):
    d = drift.PageHinkley(**kw)
    out = []
    for i, v in enumerate(values):
        d.update(v)
        if d.drift_detected:
            out.append(i + 1)
    return out


@pytest.mark.parametrize("kw", [dict(threshold=5.0, delta=0.005, min_instances=30),
                                dict(threshold=200.0, delta=0.005, min_instances=30),
                                dict(threshold=5.0, delta=0.5, min_instances=30),
                                dict(threshold=5.0, delta=0.005, min_instances=400)])
def test_detections_equal_rivers_page_hinkley(kw):
    values = _signal()
    want = _river_detections(values, mode="up", **kw)
    got = _plugin_detections(PageHinkley(mode="up", sync_every=1, **kw), values)
    assert got == want


def test_the_threshold_changes_where_it_fires():
    values = _signal()
    low = _plugin_detections(PageHinkley(mode="up", sync_every=1, threshold=5.0), values)
    high = _plugin_detections(PageHinkley(mode="up", sync_every=1, threshold=200.0), values)
    assert low and low[0] > 300 and (not high or high[0] > low[0])
