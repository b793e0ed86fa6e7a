"""Replay buffers: exact reservoir sampling, balanced and episodic selection, payloads, state."""

from __future__ import annotations

import io

import pytest
import torch

from lifelong import ConfigError, DataError
from lifelong.memory import (
    Buffer,
    ClassBalanced,
    Episodic,
    RandomRetrieval,
    Reservoir,
    last_writer_wins,
    reservoir_slots,
)
from lifelong.testing import assert_same_state


def ids(n: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs that name themselves: x[i] = i, labels i % 3."""
    i = torch.arange(start, start + n)
    return i.float().unsqueeze(1), i % 3


def stored_ids(buf: Buffer) -> list[int]:
    return sorted(buf.gather(buf.filled_slots()).x[:, 0].long().tolist())


def roundtrip(obj):
    b = io.BytesIO()
    torch.save(obj, b)
    b.seek(0)
    return torch.load(b, weights_only=True)


# ----------------------------------------------------------------------------- reservoir


def test_reservoir_inclusion_probability_is_capacity_over_n():
    """Over 2000 seeded runs every one of 24 samples is kept with probability 6/24.

    Batches of 5 make samples of one batch collide on a slot. Seeds are fixed,
    so the test is deterministic; the bound is 5 binomial standard deviations,
    and the chi-square statistic over all positions is checked too.
    """
    capacity, n, trials = 6, 24, 2000
    counts = torch.zeros(n)
    for seed in range(trials):
        buf = Buffer(capacity, seed=seed)
        for start in range(0, n, 5):
            buf.add(*ids(min(5, n - start), start))
        assert len(buf) == capacity
        counts[stored_ids(buf)] += 1
    p = capacity / n
    z = (counts - trials * p) / (trials * p * (1 - p)) ** 0.5
    assert z.abs().max() < 5, z
    chi2 = float(((counts - trials * p) ** 2 / (trials * p * (1 - p))).sum())
    assert chi2 < 2.5 * (n - 1), chi2  # df ~ n-1; mean n-1, a far tail at 2.5x


def test_batched_reservoir_equals_sequential_algorithm_r():
    """Writing a batch at once gives what writing its samples one at a time would."""
    cap = 5
    buf = Buffer(cap, seed=3)
    ref: dict[int, int] = {}  # slot -> sample id, written in arrival order
    seen = 0
    for size in (3, 4, 7, 1, 9, 6):
        x, y = ids(size, seen)
        gen = torch.Generator().set_state(buf.generator.get_state())
        slots = reservoir_slots(torch.arange(seen, seen + size), cap, gen)
        for i, s in enumerate(slots.tolist()):
            if s >= 0:
                ref[s] = seen + i
        written = buf.add(x, y)
        seen += size
        cols = buf.columns["x"][:cap, 0].long().tolist()
        assert {s: cols[s] for s in ref} == ref
        # returned slots: exactly the samples that survived their own batch
        survivors = {seen - size + i for i, s in enumerate(written.tolist()) if s >= 0}
        assert survivors == {v for v in ref.values() if v >= seen - size}


def test_last_writer_wins_keeps_the_latest_sample_per_slot():
    slots = torch.tensor([2, -1, 2, 0, 0, 3, 2])
    assert last_writer_wins(slots, trash=9).tolist() == [9, 9, 9, 9, 0, 3, 2]


def test_last_writer_wins_small_and_large_batches_match_sequential_writes():
    g = torch.Generator().manual_seed(0)
    for n in (1, 5, 64, 65, 300):   # the (B, B) comparison up to 64, the sort above
        slots = torch.randint(-1, 12, (n,), generator=g)
        final = {int(s): i for i, s in enumerate(slots.tolist()) if s >= 0}
        want = [s if s >= 0 and final[s] == i else 99 for i, s in enumerate(slots.tolist())]
        assert last_writer_wins(slots, trash=99).tolist() == want


class _GenericReservoir(Reservoir):
    """A Reservoir that the buffer does not recognise: it takes the generic insert path."""


def test_buffer_reservoir_fast_paths_equal_the_generic_insert():
    torch.manual_seed(0)
    for cap, size in ((30, 4), (7, 3), (5, 12), (16, 16)):
        fast, slow = Buffer(cap, seed=3), Buffer(cap, selection=_GenericReservoir(), seed=3)
        for _ in range(25):
            x, y = torch.randn(size, 2), torch.randint(0, 5, (size,))
            z = torch.randn(size, 3)
            assert torch.equal(fast.add(x, y, logits=z), slow.add(x, y, logits=z))
            assert torch.equal(fast.sample(4).x, slow.sample(4).x)
        for k in fast.columns:
            assert torch.equal(fast.columns[k][:cap], slow.columns[k][:cap])
        assert fast.generator.get_state().equal(slow.generator.get_state())


def test_reservoir_fills_in_order_then_respects_capacity():
    buf = Buffer(10, seed=0)
    buf.add(*ids(4))
    assert len(buf) == 4 and stored_ids(buf) == [0, 1, 2, 3]
    for k in range(20):
        buf.add(*ids(7, 4 + 7 * k))
        assert len(buf) == 10
    assert buf.columns["x"].shape[0] == 11  # capacity + one scratch row, nothing more


# ----------------------------------------------------------------------------- class-balanced


def test_class_balanced_gives_each_class_an_equal_share():
    buf = Buffer(30, selection=ClassBalanced(), seed=0)
    y0 = torch.zeros(100, dtype=torch.long)
    buf.add(torch.randn(100, 2), y0)
    assert buf.gather(buf.filled_slots()).y.tolist() == [0] * 30  # alone, it may use everything
    for c in (1, 2):  # classes first seen mid-stream
        buf.add(torch.randn(25, 2), torch.full((25,), c))
    labels = buf.gather(buf.filled_slots()).y
    assert torch.bincount(labels).tolist() == [10, 10, 10]
    buf.add(torch.randn(3, 2), torch.full((3,), 7))  # a rare class keeps what it has
    counts = torch.bincount(buf.gather(buf.filled_slots()).y, minlength=8).tolist()
    assert counts[7] == 3 and counts[:3] == [8, 8, 7]  # shares 30 // 4 (+1 for the first two)


def test_class_balanced_keeps_a_reservoir_sample_of_each_class():
    """Each kept sample of the large class is equally likely (statistically, seeded)."""
    hits = torch.zeros(40)
    for seed in range(400):
        buf = Buffer(8, selection=ClassBalanced(), seed=seed)
        x = torch.arange(40.).unsqueeze(1)
        buf.add(x[:20], torch.zeros(20, dtype=torch.long))
        buf.add(x[20:], torch.zeros(20, dtype=torch.long))
        buf.add(torch.full((4, 1), -1.0), torch.ones(4, dtype=torch.long))
        kept = buf.gather(buf.filled_slots())
        hits[kept.x[kept.y == 0, 0].long()] += 1
    p = 4 / 40
    z = (hits - 400 * p) / (400 * p * (1 - p)) ** 0.5
    assert z.abs().max() < 5


# ----------------------------------------------------------------------------- episodic (GEM)


@pytest.mark.parametrize("n_tasks", [4, None])
def test_episodic_keeps_the_last_m_samples_of_each_task(n_tasks):
    buf = Buffer(8, selection=Episodic(n_tasks), seed=0)
    for t in range(4):
        for start in range(0, 10, 3):  # 10 samples per task, batches of 3
            n = min(3, 10 - start)
            x, y = ids(n, 10 * t + start)
            buf.add(x, y, torch.full((n,), t))
    for t in range(4):
        got = sorted(buf.gather(buf.selection.slots_of(buf, t)).x[:, 0].long().tolist())
        assert got == [10 * t + 8, 10 * t + 9]  # m = 8 / 4 = 2, the last two


def test_episodic_needs_task_ids():
    buf = Buffer(4, selection=Episodic())
    with pytest.raises(DataError, match="task"):
        buf.add(*ids(2))


# ----------------------------------------------------------------------------- payloads, retrieval


def test_payload_columns_travel_with_their_samples():
    buf = Buffer(16, seed=1)
    for k in range(10):
        x, y = ids(5, 5 * k)
        logits = x.repeat(1, 4) * torch.tensor([1., 2., 3., 4.])
        buf.add(x, y, logits=logits, score=x[:, 0].half())
    b = buf.sample(16)
    assert b.extras is not None and set(b.extras) == {"logits", "score"}
    assert b.extras["logits"].shape == (16, 4) and b.extras["score"].dtype == torch.float16
    assert torch.equal(b.extras["logits"][:, 1], 2 * b.x[:, 0])
    assert torch.equal(b.extras["score"].float(), b.x[:, 0])
    assert torch.equal(b.y, b.x[:, 0].long() % 3)


def test_inconsistent_columns_are_refused():
    buf = Buffer(4)
    buf.add(*ids(2), logits=torch.zeros(2, 3))
    with pytest.raises(DataError, match="same columns"):
        buf.add(*ids(2))
    with pytest.raises(DataError, match="shape"):
        buf.add(*ids(2), logits=torch.zeros(2, 5))
    with pytest.raises(DataError, match="rows"):
        buf.add(*ids(2), logits=torch.zeros(3, 3))


def test_random_retrieval_draws_without_replacement_and_can_be_replaced():
    buf = Buffer(50, seed=0)
    buf.add(*ids(30))
    b = buf.sample(20)
    assert len(set(b.x[:, 0].tolist())) == 20
    assert len(buf.sample(100)) == 30  # at most what is stored

    class Newest:  # a retrieval rule of one's own (MIR would score with context["learner"])
        def __call__(self, buffer, n, generator, **context):
            assert context == {"tag": 1}
            return buffer.filled_slots()[-n:]

    buf.retrieval = Newest()
    assert buf.sample(3, tag=1).x[:, 0].tolist() == [27.0, 28.0, 29.0]
    assert isinstance(RandomRetrieval()(buf, 2, buf.generator), torch.Tensor)


def test_empty_buffer_and_bad_capacity():
    with pytest.raises(DataError, match="empty"):
        Buffer(3).sample(1)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="capacity"):
            Buffer(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- state


@pytest.mark.parametrize("selection", [Reservoir, ClassBalanced, Episodic])
def test_state_dict_roundtrip_restores_the_buffer_exactly(selection):
    def feed(buf: Buffer, k0: int, k1: int) -> None:
        for k in range(k0, k1):
            x, y = ids(6, 6 * k)
            y = torch.full((6,), k // 3) if selection is ClassBalanced else y
            buf.add(x, y, torch.full((6,), k // 2), logits=x.repeat(1, 3))

    a = Buffer(20, selection=selection(), seed=4)
    feed(a, 0, 5)
    state = roundtrip(a.state_dict())
    b = Buffer(20, selection=selection(), seed=99)
    b.load_state_dict(state)
    assert_same_state(a.state_dict(), b.state_dict())
    assert len(state["slots"]) == len(state["columns"]["x"]) == len(a)  # only the filled rows
    feed(a, 5, 12)
    feed(b, 5, 12)
    assert_same_state(a.state_dict(), b.state_dict())
    assert torch.equal(a.sample(7).x, b.sample(7).x)


def test_a_saved_buffer_is_never_dropped_on_load():
    import pytest

    from lifelong.errors import CheckpointError
    from lifelong.plugins.replay.er import ER
    from lifelong.testing import make_learner, tiny_stream

    stream = tiny_stream()
    trained = ER()
    make_learner([trained], stream).fit(stream, stop_after=5)
    state = trained.state_dict()
    with pytest.raises(CheckpointError, match="'er'.*before the run was assembled"):
        ER().load_state_dict(state)


def test_gem_past_memories_equal_the_per_task_gathers_as_a_view_or_a_copy():
    """GEM reads its past tasks' memories as one view of the buffer when they are one run of
    slots (the usual layout), and gathers them when the tasks arrived out of order."""
    from lifelong.plugins.replay.gem import GEM

    for order in ([0, 1, 2], [1, 0, 2]):
        buf = Buffer(12, selection=Episodic(), seed=0)
        for k in order:
            x = torch.randn(5, 3)
            buf.add(x, torch.arange(5), torch.full((5,), k))
        plugin = GEM(mem_size=12)
        plugin.buffer_, plugin.task_ = buf, 2
        mem, sizes = plugin._past_memories(buf)
        want = [buf.gather(buf.selection.slots_of(buf, k)) for k in range(2)]
        assert sizes == [len(w) for w in want]
        torch.testing.assert_close(mem.x, torch.cat([w.x for w in want]))
        torch.testing.assert_close(mem.task, torch.cat([w.task for w in want]))
        shares = mem.x.untyped_storage().data_ptr() == buf.columns["x"].untyped_storage().data_ptr()
        assert shares == (order == [0, 1, 2])
