"""CUDA throughput: naive, ER, DER++ and EWC with the reduced ResNet-18 at batch 32.

Online split MNIST subset (5 experiences of 2 digits, one pass), SGD lr
0.1, ``resnet`` backbone (nf 20), batch 32, on the first CUDA device.
Training time only, with ``torch.cuda.synchronize()`` around each timing;
interleaved repeats, median. ``naive`` and ``er`` are also run as bare,
hand-written torch loops on the device (the same passes: one forward over
stream + replay rows, the summed cross-entropies), and the ratio is
lifelong / bare. DER++ and EWC report their time over the bare naive loop
(what the method costs on top of plain training).

Without a CUDA device it prints one line saying so and exits 0.

Last line: ``{"<method>": {"samples_per_second": .., "over_bare": ..}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lifelong import Learner
from lifelong.backbones import resnet
from lifelong.plugins.regularization import EWC
from lifelong.plugins.replay import ER, DERpp
from lifelong.stream.base import batch_seed
from lifelong.stream.catalog import split_mnist

LR, BATCH = 0.1, 32


def _sync() -> None:
    torch.cuda.synchronize()


def bare(method: str, stream, dev: torch.device, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = resnet(input_shape=(1, 28, 28), num_classes=10).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    gen = torch.Generator(device=dev).manual_seed(seed)
    mem_x = torch.zeros(200, 1, 28, 28, device=dev)
    mem_y = torch.zeros(200, dtype=torch.long, device=dev)
    seen = 0
    data = []
    for exp in stream.experiences():
        g = torch.Generator().manual_seed(batch_seed(seed, exp.id, 0))
        perm = torch.randperm(len(exp.y), generator=g)
        data.append((exp.x[perm].to(dev), exp.y[perm].to(dev)))
    _sync()
    t0 = time.perf_counter()
    for x, y in data:
        for i in range(0, len(y), BATCH):
            xb, yb = x[i:i + BATCH], y[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            n = min(seen, 200)
            if method == "er" and n:
                idx = torch.randint(0, n, (len(yb),), generator=gen, device=dev)
                out = model(torch.cat([xb, mem_x[idx]]))
                loss = F.cross_entropy(out[:len(yb)], yb) + F.cross_entropy(out[len(yb):], mem_y[idx])
            else:
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if method == "er":
                pos = seen + torch.arange(len(yb), device=dev)
                slot = torch.where(pos < 200, pos,
                                   (torch.rand(len(yb), generator=gen, device=dev) * (pos + 1)).long())
                keep = slot < 200
                mem_x[slot[keep]], mem_y[slot[keep]] = xb[keep], yb[keep]
                seen += len(yb)
    _sync()
    return time.perf_counter() - t0


def with_lifelong(method: str, stream, dev: torch.device, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = resnet(input_shape=(1, 28, 28), num_classes=10)
    plugins = {"naive": [], "er": [ER(mem_size=200, seed=seed)],
               "derpp": [DERpp(mem_size=200, seed=seed)], "ewc": [EWC(seed=seed)]}[method]
    learner = Learner(model, plugins=plugins, lr=LR, batch_size=BATCH, device=dev, seed=seed,
                      optimizer="sgd")
    _sync()
    t0 = time.perf_counter()
    learner.fit(stream, evaluate=False)
    _sync()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here (torch "
              f"{torch.__version__}); nothing measured")
        return 0
    dev = torch.device("cuda")
    stream = split_mnist(n_experiences=5, seed=0)
    n = sum(len(e.y) for e in stream.experiences())
    with_lifelong("naive", stream, dev)   # warm-up: cuDNN autotuning, allocator
    t = {k: [] for k in ("bare_naive", "bare_er", "naive", "er", "derpp", "ewc")}
    for _ in range(args.repeats):
        t["bare_naive"].append(bare("naive", stream, dev))
        t["naive"].append(with_lifelong("naive", stream, dev))
        t["bare_er"].append(bare("er", stream, dev))
        t["er"].append(with_lifelong("er", stream, dev))
        t["derpp"].append(with_lifelong("derpp", stream, dev))
        t["ewc"].append(with_lifelong("ewc", stream, dev))
    med = {k: statistics.median(v) for k, v in t.items()}
    ref = {"naive": "bare_naive", "er": "bare_er", "derpp": "bare_naive", "ewc": "bare_naive"}
    print(f"{torch.cuda.get_device_name(dev)}; torch {torch.__version__}; "
          f"python {sys.version.split()[0]}; {args.repeats} interleaved repeats, median")
    print(f"{'method':<8}{'samples/s':>11}{'over':>14}{'ratio':>8}")
    out = {}
    for m in ("naive", "er", "derpp", "ewc"):
        ratio = med[m] / med[ref[m]]
        print(f"{m:<8}{n / med[m]:>11,.0f}{ref[m]:>14}{ratio:>8.3f}")
        out[m] = {"samples_per_second": round(n / med[m], 1), "over_bare": round(ratio, 3),
                  "bare": ref[m]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
