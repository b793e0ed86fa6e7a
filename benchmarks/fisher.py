"""The cost of EWC's consolidation: the diagonal Fisher against one forward+backward.

EWC and online EWC consolidate on the last ``fisher_samples`` (1,024) stream
inputs with the true Fisher (labels drawn from the model). lifelong sums the
squared per-sample gradients of linear and convolutional layers from one
ordinary backward (:mod:`lifelong.per_sample`: ``(delta^2)^T a^2``, and the
unfolded equivalent for convolutions); the ``torch.func`` ``vmap(grad)``
path is the exact reference (``method="vmap"``). The target: the Fisher
within 3x the time of one forward+backward of the mean loss over the same
samples. Models: the MLP 784-256-256-10 of the performance protocol and the
small CNN, on MNIST-shaped inputs; one torch thread; interleaved repeats,
fastest run reported (CPU time). The Fisher of each path is compared too
(largest relative difference to the vmap reference, which must stay under
1e-5 as the tests require).

Last line: ``{"<model>": {"fisher_s": .., "fwd_bwd_s": .., "fisher_over_fwd_bwd": ..,
"vmap_s": .., "max_rel_diff": ..}, ..., "torch_threads": ..}``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from lifelong.backbones import cnn, mlp
from lifelong.plugins.regularization.ewc import fisher_diagonal
from lifelong.threads import apply_threads


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    apply_threads(1)
    torch.manual_seed(0)
    x = torch.rand(args.samples, 1, 28, 28)
    result: dict[str, object] = {}
    print(f"{'model':<6}{'fisher s':>10}{'fwd+bwd s':>11}{'ratio':>7}{'vmap s':>9}{'max rel diff':>14}")
    for name, model in (("mlp", mlp(input_shape=(1, 28, 28), num_classes=10)),
                        ("cnn", cnn(input_shape=(1, 28, 28), num_classes=10))):
        def fwd_bwd(model: torch.nn.Module = model) -> None:
            model.zero_grad(set_to_none=True)
            out = model(x)
            F.cross_entropy(out, out.argmax(1)).backward()

        def fisher(method: str, model: torch.nn.Module = model) -> dict[str, torch.Tensor]:
            return fisher_diagonal(model, x, sample=True, method=method,
                                   generator=torch.Generator().manual_seed(0))

        fisher("backward"), fwd_bwd()  # warm-up
        t_f = t_fb = float("inf")
        for _ in range(args.repeats):  # interleaved
            t_f = min(t_f, _time(lambda: fisher("backward"), 1))
            t_fb = min(t_fb, _time(fwd_bwd, 1))
        t_v = _time(lambda: fisher("vmap"), 2)
        fast, ref = fisher("backward"), fisher("vmap")
        diff = max(float((fast[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-30))
                   for k in ref)
        print(f"{name:<6}{t_f:>10.4f}{t_fb:>11.4f}{t_f / t_fb:>7.2f}{t_v:>9.3f}{diff:>14.2e}")
        result[name] = {"fisher_s": round(t_f, 4), "fwd_bwd_s": round(t_fb, 4),
                        "fisher_over_fwd_bwd": round(t_f / t_fb, 2), "vmap_s": round(t_v, 3),
                        "max_rel_diff": float(f"{diff:.2e}")}
    print(f"{args.samples} samples, sampled labels (the true Fisher); fastest of {args.repeats} "
          f"interleaved runs, CPU time; torch threads {torch.get_num_threads()}")
    result["torch_threads"] = torch.get_num_threads()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
