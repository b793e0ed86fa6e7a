"""The one-backward per-sample gradient sums agree with the exact torch.func reference."""

import pytest
import torch
from torch import nn

from lifelong.backbones import cnn, mlp, resnet
from lifelong.per_sample import fastest, reduce_per_sample_grads, supported
from lifelong.plugins.regularization.ewc import fisher_diagonal, sample_classes
from lifelong.plugins.regularization.mas import mas_importance


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _close(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        scale = a[k].abs().max().clamp_min(1e-12)
        assert ((a[k] - b[k]).abs().max() / scale) < rtol, k


MODELS = {
    "mlp": lambda: mlp(input_shape=(1, 8, 8), num_classes=5, hidden=[16, 12]),
    "cnn": lambda: cnn(input_shape=(1, 8, 8), num_classes=5, channels=[4, 6]),
}


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("sample", [True, False])
def test_fisher_one_backward_equals_vmap(arch, sample):
    torch.manual_seed(0)
    model = MODELS[arch]()
    x = torch.randn(37, 1, 8, 8)
    ref = fisher_diagonal(model, x, sample=sample, generator=torch.Generator().manual_seed(3),
                          method="vmap")
    fast = fisher_diagonal(model, x, sample=sample, generator=torch.Generator().manual_seed(3),
                           method="backward")
    _close(ref, fast)


@pytest.mark.parametrize("arch", list(MODELS))
def test_mas_one_backward_equals_vmap(arch):
    torch.manual_seed(0)
    model = MODELS[arch]()
    x = torch.randn(29, 1, 8, 8)
    _close(mas_importance(model, x, method="vmap"), mas_importance(model, x, method="backward"))


def test_sequence_inputs_to_a_linear_layer_sum_before_reducing():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 4, 3)   # 4 positions share the weight within each sample
    got = reduce_per_sample_grads(lin, lambda: lin(x), lambda out: [out.sum((1, 2))],
                                  reduce="square")
    want_w = torch.zeros(2, 3)
    for n in range(5):
        g, = torch.autograd.grad(lin(x[n:n + 1]).sum(), [lin.weight])
        want_w += g.square()
    torch.testing.assert_close(got["weight"], want_w)


def test_auto_picks_the_faster_path_and_falls_back_where_not_covered():
    assert fastest(MODELS["mlp"]()) and not fastest(MODELS["cnn"]())
    net = resnet(input_shape=(1, 8, 8), num_classes=3, nf=4)   # BatchNorm affines: not covered
    assert not supported(net)
    x = torch.randn(6, 1, 8, 8)
    with pytest.raises(ValueError, match="vmap"):
        fisher_diagonal(net, x, method="backward")
    _close(fisher_diagonal(net, x, method="auto"), fisher_diagonal(net, x, method="vmap"))


def test_a_layer_used_twice_is_not_summed_wrongly():
    lin = nn.Linear(3, 3)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(torch.relu(self.lin(x)))

    model = Twice()
    x = torch.randn(7, 3)
    assert reduce_per_sample_grads(model, lambda: model(x), lambda o: [o.sum(1)]) is None
    _close(fisher_diagonal(model, x, method="auto"), fisher_diagonal(model, x, method="vmap"))


def test_inverse_cdf_sampling_follows_the_probabilities():
    probs = torch.tensor([[0.1, 0.6, 0.3]]).repeat(20000, 1)
    y = sample_classes(probs, torch.rand(20000, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(y, minlength=3).float() / 20000
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)
    # the draw of a row does not depend on the rows around it (chunking)
    u = torch.rand(10, generator=torch.Generator().manual_seed(1))
    p = torch.rand(10, 4).softmax(1)
    assert torch.equal(sample_classes(p, u)[5:], sample_classes(p[5:], u[5:]))


@pytest.mark.parametrize("arch", list(MODELS))
def test_grouped_gradients_equal_one_backward_per_group(arch):
    from lifelong.per_sample import grouped_grads
    from lifelong.plugins.replay._gradients import flat_grad_of, trainable

    torch.manual_seed(0)
    model = MODELS[arch]()
    sizes = [5, 1, 9]
    x = torch.randn(sum(sizes), 1, 8, 8)
    y = torch.randint(0, 5, (sum(sizes),))
    w = torch.cat([torch.full((n,), 1.0 / n) for n in sizes])
    G = grouped_grads(model, lambda: model(x), lambda out: torch.nn.functional.cross_entropy(
        out, y, reduction="none") * w, sizes)
    params = trainable(model)
    want = torch.stack([flat_grad_of(torch.nn.functional.cross_entropy(model(xs), ys), params)
                        for xs, ys in zip(x.split(sizes), y.split(sizes))])
    torch.testing.assert_close(G, want, rtol=1e-5, atol=1e-6)


def test_grouped_gradients_refuse_batch_norm_in_training_mode():
    from lifelong.per_sample import grouped_grads

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False), nn.Linear(4, 2))
    x = torch.randn(6, 3)
    assert grouped_grads(net, lambda: net(x), lambda o: o.sum(1), [3, 3]) is None
    net.eval()
    assert grouped_grads(net, lambda: net(x), lambda o: o.sum(1), [3, 3]) is not None


def test_gem_task_gradients_match_the_per_task_backward():
    from lifelong.plugins.replay._gradients import flat_grad_of, trainable
    from lifelong.plugins.replay.gem import GEM
    from lifelong.stream.base import Batch
    from lifelong.testing import make_learner, tiny_stream

    stream = tiny_stream()
    learner = make_learner([], stream)
    torch.manual_seed(1)
    mems = [Batch(torch.randn(n, *stream.input_shape), torch.randint(0, 6, (n,)),
                  torch.full((n,), k)) for k, n in enumerate([4, 7])]
    params = trainable(learner.model)
    joined = Batch(torch.cat([m.x for m in mems]), torch.cat([m.y for m in mems]),
                   torch.cat([m.task for m in mems]))
    got = GEM._task_gradients(learner, joined, [len(m) for m in mems], params)
    want = torch.stack([flat_grad_of(torch.nn.functional.cross_entropy(
        learner.forward(m.x, m.task), m.y), params) for m in mems])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
