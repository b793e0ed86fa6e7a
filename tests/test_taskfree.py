"""Task-free learning: boundary detectors, drift streams, label delay, detection scores."""

from __future__ import annotations

import io
import itertools
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from lifelong import hookimpl
from lifelong.errors import CheckpointError, ConfigError
from lifelong.metrics import report_detections
from lifelong.plugins.boundaries import ADWIN, KSWIN, PageHinkley
from lifelong.plugins.boundaries._signal import batch_signal
from lifelong.plugins.boundaries.every_n import EveryN
from lifelong.plugins.boundaries.plateau import Plateau, plateau_boundaries
from lifelong.plugins.evaluation import Prequential
from lifelong.registry import Registry, get_registry
from lifelong.run import build
from lifelong.stream import drift as ds
from lifelong.stream.adapters import from_tensors
from lifelong.stream.delay import label_delay
from lifelong.stream.synthetic import blobs
from lifelong.testing import assert_same_state, make_learner


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models on a shared machine: one intra-op thread is many times faster
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---------------------------------------------------------------------------
# Detectors on a hand-made loss signal
# ---------------------------------------------------------------------------


def feed(plugin, values, batch=10):
    """Drive a detector plugin with a loss sequence, as the learner would; batch indices fired."""
    learner = NS(device=torch.device("cpu"), samples_seen=0)
    plugin.before_training(learner, None)
    fired = []
    for i, v in enumerate(values):
        learner.samples_seen = (i + 1) * batch
        if plugin.detect_boundary(learner, NS(index=i, losses={"ce": torch.tensor(float(v))})):
            fired.append(i)
    return fired


def noisy(level_and_length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([(lvl + 0.1 * torch.randn(n, generator=g)).clamp(min=0)
                      for lvl, n in level_and_length]).tolist()


RIVER = [ADWIN, PageHinkley, KSWIN]


@pytest.mark.parametrize("cls", RIVER, ids=lambda c: c.name)
def test_river_detector_fires_soon_after_an_obvious_change(cls):
    fired = feed(cls(), noisy([(0.3, 1000), (1.5, 1000)]))
    assert any(1000 <= i < 1100 for i in fired), fired


@pytest.mark.parametrize("cls", RIVER, ids=lambda c: c.name)
def test_river_detector_quiet_on_a_stationary_signal(cls):
    # KSWIN tests every batch at level alpha (river default 0.005): over thousands of
    # batches some false alarms are its nature, so it is checked at a stricter level
    plugin = cls(alpha=1e-4) if cls is KSWIN else cls()
    assert feed(plugin, noisy([(0.5, 1000)], seed=1)) == []


def test_detections_are_recorded_at_the_batch_river_flags_whatever_the_sync():
    values = noisy([(0.3, 500), (1.5, 300)])
    at_once = PageHinkley()
    fired = feed(at_once, values)
    buffered = PageHinkley(sync_every=7)
    fired_late = feed(buffered, values)
    assert at_once.detections_ == buffered.detections_ and at_once.detections_
    # the learner hears of it at the flush: within sync_every - 1 batches, at a flush
    assert all(0 <= late - early < 7 and (late + 1) % 7 == 0
               for early, late in zip(fired, fired_late))


def test_error_signal_is_the_batch_error_rate():
    step = NS(stream_logits=torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]]),
              batch=NS(y=torch.tensor([0, 0, 1, 1])), losses={"ce": torch.tensor(0.7)})
    assert float(batch_signal(step, "error")) == pytest.approx(0.5)
    assert float(batch_signal(step, "loss")) == pytest.approx(0.7)


@pytest.mark.parametrize("kwargs", [{"signal": "accuracy"}, {"sync_every": 0}, {"delta": 2.0}])
def test_bad_detector_parameters_name_the_plugin(kwargs):
    with pytest.raises(ConfigError, match="adwin"):
        ADWIN(**kwargs)


def test_river_defaults_are_exposed_as_keywords():
    from river import drift

    for ours, theirs in ((ADWIN, drift.ADWIN), (PageHinkley, drift.PageHinkley),
                         (KSWIN, drift.KSWIN)):
        import inspect

        mine = inspect.signature(ours.__init__).parameters
        for name, p in inspect.signature(theirs.__init__).parameters.items():
            if name in ("self", "window"):
                continue
            assert name in mine, (ours.name, name)
            if name != "seed":  # river's None is not reproducible; ours is the run's seed
                assert mine[name].default == p.default, (ours.name, name)


# ---------------------------------------------------------------------------
# Plateau rule and every_n
# ---------------------------------------------------------------------------


def test_plateau_rule_on_a_hand_made_loss_sequence():
    losses = ([2.0, 1.5, 1.0, 0.5, 0.3]      # learning: window means too high
              + [0.1] * 5                    # window [0.3, 0.1 x 4] at 8: mean 0.14, var 0.0064:
              + [0.1] * 5                    # the first plateau (needs no peak); then quiet
              + [2.0, 2.0, 1.0]              # a peak: window mean 0.48 > 0.14 + 0.08
              + [0.15] * 5                   # settles: fires when the window is all 0.15 (22)
              + [0.1] * 3)                   # a plateau, but no new peak
    assert plateau_boundaries(losses) == [8, 22]
    assert plateau_boundaries([0.1] * 4) == []  # windows are full before the rule applies
    # a peak is a window mean above the last plateau's mean + std; the window that shows
    # the peak may itself be the next plateau
    assert plateau_boundaries([0.1, 0.1, 0.1, 0.18, 0.19, 0.19], window=2,
                              mean_threshold=0.2, variance_threshold=0.1) == [1, 3, 4]
    assert plateau_boundaries([0.1, 0.1, 0.1, 0.3, 0.3, 0.19, 0.19], window=2,
                              mean_threshold=0.2, variance_threshold=0.1) == [1, 6]


def test_plateau_plugin_matches_the_pure_rule():
    values = noisy([(2.0, 20), (0.05, 40), (2.5, 20), (0.05, 40)])
    plugin = Plateau(sync_every=3)
    feed(plugin, values)
    assert plugin.detections_ == [10 * (i + 1) for i in plateau_boundaries(values)]
    low = [d // 10 - 1 for d in plugin.detections_]
    assert any(20 <= i < 60 for i in low) and any(80 <= i < 120 for i in low)
    assert all(20 <= i < 60 or 80 <= i < 120 for i in low)  # plateaus only where loss is low


def test_every_n_fires_exactly_every_n_batches():
    stream = blobs(n_experiences=2, n_per_class=40, task_aware=False)  # 160 samples, 20 batches
    learner = make_learner([EveryN(every=6)], stream).fit(stream)
    assert learner.boundaries_detected == [48, 96, 144]
    with pytest.raises(ConfigError, match="every_n"):
        EveryN(every=0)


# ---------------------------------------------------------------------------
# Detectors inside the learner
# ---------------------------------------------------------------------------


class Anchor:
    """Consolidates at every detected boundary: an L2 pull towards the weights there."""

    name = "anchor"
    requires = ("boundaries",)

    def __init__(self):
        self.anchor_ = None
        self.ends = []

    @hookimpl
    def after_experience(self, learner, experience):
        self.ends.append(experience)
        self.anchor_ = [p.detach().clone() for p in learner.model.parameters()]

    @hookimpl
    def loss_terms(self, learner, step):
        if self.anchor_ is None:
            return None
        return {"anchor": sum(((p - a) ** 2).sum() for p, a in
                              zip(learner.model.parameters(), self.anchor_))}

    def state_dict(self):
        return {"anchor": self.anchor_, "ends": len(self.ends)}

    def load_state_dict(self, state):
        self.anchor_ = state["anchor"]
        self.ends = [None] * state["ends"]


def switching_stream(n=200, seed=0):
    """Two Gaussian classes; the middle third has random labels: a sustained rise in loss."""
    b = blobs(n_experiences=1, n_per_class=n, n_test_per_class=20, input_shape=[4], seed=seed)
    x, y = next(b.experiences()).x, next(b.experiences()).y
    noise = torch.randint(0, 2, y.shape, generator=torch.Generator().manual_seed(seed))
    xt, yt = b.test[0].x, b.test[0].y
    return from_tensors(torch.cat([x, x, x]), torch.cat([y, noise, y]), x_test=torch.cat([xt] * 3),
                        y_test=torch.cat([yt] * 3), experience_ids=torch.arange(3).repeat_interleave(
                            len(y)), test_experience_ids=torch.arange(3).repeat_interleave(len(yt)),
                        task_aware=False, name="switching")


DETECTORS = {
    "adwin": lambda: ADWIN(clock=1),
    "page_hinkley": lambda: PageHinkley(mode="up", threshold=5.0, min_instances=10),
    "page_hinkley_sync": lambda: PageHinkley(mode="up", threshold=5.0, min_instances=10,
                                             sync_every=4),
    "kswin": lambda: KSWIN(window_size=40, stat_size=10, signal="error"),
    "plateau": lambda: Plateau(mean_threshold=0.3),
    "every_n": lambda: EveryN(every=15),
}


@pytest.mark.parametrize("make", DETECTORS.values(), ids=DETECTORS.keys())
def test_detections_fire_experience_hooks_and_consolidate(make):
    stream = switching_stream()
    det, anchor = make(), Anchor()
    learner = make_learner([det, anchor], stream).fit(stream)
    assert learner.boundaries_detected, "the detector never fired on an obvious switch"
    assert anchor.ends == [None] * (len(learner.boundaries_detected) + 1)  # + the stream's end
    if hasattr(det, "detections_") and det.sync_every is None:
        assert det.detections_ == learner.boundaries_detected


@pytest.mark.parametrize("make", DETECTORS.values(), ids=DETECTORS.keys())
def test_detector_state_roundtrips_and_resumes_exactly(make):
    stream = switching_stream()
    full = make_learner([make(), Anchor()], stream).fit(stream)
    for stop in (41, 97):  # inside experience 0 / 1, at different flush phases
        first = make_learner([make(), Anchor()], stream)
        first.fit(stream, stop_after=stop)
        state = first.plugins[0].state_dict() if hasattr(first.plugins[0], "state_dict") else {}
        assert_same_state(state, roundtrip(state))
        second = make_learner([make(), Anchor()], stream)
        second.fit(stream, state=roundtrip(first.state_dict()))
        assert second.boundaries_detected == full.boundaries_detected
        assert getattr(second.plugins[0], "detections_", None) == getattr(
            full.plugins[0], "detections_", None)
        assert_same_state({k: v for k, v in full.model.state_dict().items()},
                          dict(second.model.state_dict()), "weights (resumed vs uninterrupted)")


def test_adwin_state_from_another_river_version_is_refused_clearly():
    plugin = ADWIN(clock=1)
    feed(plugin, noisy([(0.5, 50)]))
    state = plugin.state_dict()
    state["detector"]["river"] = "0.0.1"
    state["detector"]["window"] = torch.tensor([1, 2, 3], dtype=torch.uint8)
    with pytest.raises(CheckpointError, match="river 0.0.1"):
        ADWIN(clock=1).load_state_dict(state)


# ---------------------------------------------------------------------------
# Drift streams
# ---------------------------------------------------------------------------


def sea_raw(stream, x):
    """Undo the standardization (constants from concept 0's held-out data, in meta)."""
    return x * torch.tensor(stream.meta["scale"]["std"]) + torch.tensor(stream.meta["scale"]["mean"])


def test_sea_drift_change_points_and_concepts():
    s = ds.sea_drift(n_samples=4000, n_concepts=4, variants=[0, 3, 2, 1], n_test=400, seed=3)
    assert s.change_points == [1000, 2000, 3000] and not s.task_aware
    assert s.n_experiences == 4 and len(s.test) == 4 and s.meta["n_train"] == 4000
    thresholds = [8.0, 9.5, 7.0, 9.0]  # SEA variants 0, 3, 2, 1
    for k, exp in enumerate(s.experiences()):
        xs, ys = zip(*((b.x, b.y) for b in exp.batches(64)))
        x, y = torch.cat(xs), torch.cat(ys)
        assert len(y) == 1000
        raw = sea_raw(s, x)
        assert raw.min() > -1e-4 and raw.max() < 10 + 1e-4  # SEA features are U(0, 10)
        # the labels follow concept k's threshold on x0 + x1, and no other concept's
        fit = [((raw[:, 0] + raw[:, 1] > t).long() == y).float().mean().item() for t in thresholds]
        assert fit[k] > 0.995 and max(f for j, f in enumerate(fit) if j != k) < 0.99, (k, fit)
        rawt = sea_raw(s, s.test[k].x)
        fit_t = ((rawt[:, 0] + rawt[:, 1] > thresholds[k]).long() == s.test[k].y).float().mean()
        assert fit_t > 0.995


def test_gradual_drift_mixes_concepts_around_the_change_point():
    idx = np.arange(0, 2000)
    u = np.random.default_rng(0).random(len(idx))
    which = ds.concept_of(idx, [1000], 400, u)
    share = [which[i:i + 200].mean() for i in range(0, 2000, 200)]
    assert share[0] < 0.01 and share[-1] > 0.99
    assert all(b >= a - 0.05 for a, b in zip(share, share[1:]))  # rises through the change
    assert 0.3 < which[900:1100].mean() < 0.7
    sudden = (idx >= 500).astype(int) + (idx >= 1500).astype(int)
    assert (ds.concept_of(idx, [500, 1500], 0) == sudden).all()


def test_drift_streams_are_lazy_and_resumable_at_any_batch():
    pulled = []

    def counting(seed):
        from river.datasets import synth

        for row in synth.SEA(seed=seed):
            pulled.append(1)
            yield row

    s = ds.concept_drift([counting, counting], n_samples=1_000_000, n_test=50, name="lazy")
    assert len(pulled) == 100  # the held-out sets only
    exps = s.experiences()
    first = next(exps)
    b = next(first.batches(10))
    assert len(b) == 10 and len(pulled) <= 100 + ds.CHUNK
    skipped = next(first.batches(10, start=30))
    again = list(itertools.islice(first.batches(10), 31))[-1]
    assert torch.equal(skipped.x, again.x) and torch.equal(skipped.y, again.y)
    m = ds.mnist_endless(n_samples=1_000_000, n_experiences=5)
    assert m.change_points == [200_000, 400_000, 600_000, 800_000]
    bm = next(next(m.experiences()).batches(10))
    assert set(bm.y.tolist()) <= {0, 1} and bm.x.shape == (10, 1, 28, 28)


@pytest.mark.parametrize("factory", ds.STREAMS, ids=lambda f: f.__name__)
def test_registered_drift_streams_build_small_and_train(factory):
    kwargs = {"n_samples": 300, "n_test": 20} if factory is not ds.mnist_endless else \
        {"n_samples": 300}
    s = factory(**kwargs, seed=1)
    assert not s.task_aware and len(s.test) == s.n_experiences and s.change_points is not None
    learner = make_learner([], s, batch_size=30).fit(s)
    assert learner.samples_seen == 300


def test_drift_streams_registered_with_typed_keywords():
    reg = Registry()
    ds.register(reg)
    assert set(reg.names("stream")) == {f.__name__ for f in ds.STREAMS}
    for entry in reg.entries("stream"):
        params = entry.parameters()
        assert "seed" in params and entry.summary
        assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in params.values())


def test_bad_change_points_are_config_errors():
    with pytest.raises(ConfigError, match="strictly increasing"):
        ds.sea_drift(n_samples=100, change_points=[50, 40])
    with pytest.raises(ConfigError, match="concept ids"):
        ds.sea_drift(n_samples=100, variants=[0, 7])


# ---------------------------------------------------------------------------
# Label delay
# ---------------------------------------------------------------------------


class Trace:
    """Records what each step trains on and predicts (sample ids live in x[:, 0])."""

    def __init__(self):
        self.trained, self.predicted, self.seen = [], [], set()
        self.leaks = 0

    @hookimpl
    def after_update(self, learner, step):
        p = step.batch.predict
        ids = [] if p is None else p.x[:, 0].long().tolist()
        self.leaks += len(self.seen.intersection(ids))  # predicted after its label was used
        self.predicted.append(ids)
        self.seen.update(step.batch.x[:, 0].long().tolist())
        self.trained.append(step.batch.x[:, 0].long().tolist())


def id_stream(n_per_class=15):
    s = blobs(n_experiences=3, classes_per_experience=2, n_per_class=n_per_class,
              input_shape=[3], task_aware=False)
    # give every training sample an id in its first feature
    exps = list(s.experiences())
    start = 0
    for e in exps:
        e.x = e.x.clone()
        e.x[:, 0] = torch.arange(start, start + len(e.y), dtype=torch.float32)
        start += len(e.y)
    return s.__class__(**{**s.__dict__, "make_experiences": lambda: iter(exps)})


@pytest.mark.parametrize("k", [1, 3, 40])
def test_label_delay_predicts_at_arrival_and_trains_k_batches_later(k):
    base = id_stream()
    plain = Trace()
    make_learner([plain], base).fit(base)
    trace = Trace()
    delayed = label_delay(base, k)
    learner = make_learner([trace], delayed).fit(delayed)
    flat = list(itertools.chain.from_iterable(plain.trained))
    # training sees exactly the original batches, in order: same experiences, same samples
    assert trace.trained == plain.trained and learner.samples_seen == len(flat)
    # every sample is predicted exactly once, in arrival order, never after its label was used
    assert list(itertools.chain.from_iterable(trace.predicted)) == flat
    assert trace.leaks == 0
    # step s predicts batch s + k (step 0 also the first k arrivals); the last k predict nothing
    n = len(plain.trained)
    assert trace.predicted[0] == list(itertools.chain.from_iterable(plain.trained[:k + 1]))
    for s in range(1, n):
        assert trace.predicted[s] == (plain.trained[s + k] if s + k < n else [])
    # prequential accuracy counts every arrival once
    preq = learner.plugins[-1]
    assert isinstance(preq, Prequential) and preq.summary() and preq.seen_total_ == len(flat)


def test_label_delay_scores_predictions_made_before_the_update():
    class Check:
        def __init__(self):
            self.hits = 0

        @hookimpl
        def replay_batch(self, learner, step):  # before the update: recompute the prediction
            p = step.batch.predict
            if p is not None and len(p):
                with torch.no_grad():
                    learner.model.eval()
                    pred = learner.model(p.x).argmax(1)
                    learner.model.train()
                assert torch.equal(pred, step.predict_logits.argmax(1))
                self.hits += int((pred == p.y).sum())

    stream = label_delay(blobs(n_experiences=3, n_per_class=30, task_aware=False), 4)
    check = Check()
    learner = make_learner([check], stream).fit(stream)
    preq = learner.plugins[-1]
    assert preq.correct_total_ == check.hits and preq.seen_total_ == 180


def test_label_delay_zero_is_no_delay_bit_for_bit():
    base = blobs(n_experiences=3, n_per_class=30, task_aware=False)
    assert label_delay(base, 0) is base
    a = make_learner([], base).fit(base)
    b = make_learner([], label_delay(base, 0)).fit(label_delay(base, 0))
    assert_same_state(dict(a.model.state_dict()), dict(b.model.state_dict()))
    assert a.plugins[-1].summary() == b.plugins[-1].summary()


def test_prequential_windows_survive_a_checkpoint_mid_window():
    stream = blobs(n_experiences=3, n_per_class=100, task_aware=False)
    full = make_learner([], stream).fit(stream)
    first = make_learner([], stream)
    first.fit(stream, stop_after=33)  # window 5: three batches into a window
    first.state_dict()  # saving must not close the open window either
    second = make_learner([], stream)
    second.fit(stream, state=roundtrip(first.state_dict()))
    assert full.plugins[-1].summary() == second.plugins[-1].summary()


def test_label_delay_resumes_exactly_and_from_yaml():
    stream = label_delay(switching_stream(), 5)
    full = make_learner([PageHinkley(mode="up", threshold=5.0, min_instances=10)], stream)
    full.fit(stream)
    first = make_learner([PageHinkley(mode="up", threshold=5.0, min_instances=10)], stream)
    first.fit(stream, stop_after=77)
    second = make_learner([PageHinkley(mode="up", threshold=5.0, min_instances=10)], stream)
    second.fit(stream, state=roundtrip(first.state_dict()))
    assert_same_state(dict(full.model.state_dict()), dict(second.model.state_dict()))
    assert full.plugins[-1].summary() == second.plugins[-1].summary()
    run = build({"device": "cpu", "stream": {"name": "blobs", "label_delay": 2, "task_aware": False},
                 "backbone": {"name": "mlp", "hidden": [8]}})
    assert run.stream.meta["label_delay"] == 2 and run.config["stream"]["label_delay"] == 2
    with pytest.raises(ConfigError, match="label_delay"):
        build({"stream": {"name": "blobs", "label_delay": -1}})


# ---------------------------------------------------------------------------
# Detection scores, registration, task-free defaults
# ---------------------------------------------------------------------------


def test_report_detections():
    r = report_detections([100, 200], [50, 120, 130, 260], tolerance=50)
    assert r == {"detections": 4, "detected": 1, "missed": 1, "false_alarms": 2, "duplicates": 1,
                 "delays": [20], "mean_delay": 20.0}
    # a detection at the change point saw none of the new data; one in the next window counts there
    r = report_detections([100, 200], [100, 205], tolerance=150)
    assert r["delays"] == [5] and r["false_alarms"] == 1 and r["missed"] == 1
    r = report_detections([100, 200], [100, 205, 150], tolerance=150)
    assert r["delays"] == [50, 5] and r["missed"] == 0
    assert report_detections([], [], 10)["mean_delay"] is None
    assert report_detections([10], [], 10)["missed"] == 1
    with pytest.raises(ValueError):
        report_detections([10], [20], 0)


def test_detectors_registered_and_task_free_runs_default_to_anytime():
    reg = get_registry()
    for name in ("adwin", "page_hinkley", "kswin", "plateau", "every_n"):
        assert ("plugin", name) in reg
    run = build({"device": "cpu", "stream": {"name": "sea_drift", "n_samples": 400, "n_test": 50},
                 "backbone": {"name": "mlp", "hidden": [8]}, "plugins": ["adwin"]})
    names = [type(p).__name__ for p in run.learner.plugins]
    assert {"Prequential", "AnytimeAccuracy"} <= set(names) and run.config["eval"]["every"] == 100
    run.learner.fit(run.stream)
    any_ = next(p for p in run.learner.plugins if type(p).__name__ == "AnytimeAccuracy")
    assert len(any_.curve_) == 0  # 40 batches < every
    run = build({"device": "cpu", "stream": {"name": "sea_drift", "n_samples": 400, "n_test": 50},
                 "backbone": {"name": "mlp", "hidden": [8]}, "eval": {"every": 0}})
    assert "AnytimeAccuracy" not in [type(p).__name__ for p in run.learner.plugins]
