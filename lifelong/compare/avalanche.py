"""lifelong against Avalanche: the same runs through Avalanche's implementations of the same strategies.

``lifelong bench --against avalanche`` builds every cell of the grid as
``lifelong bench`` does, then trains two copies of the same initial network
on the same batches in the same order, with the same optimizer and the same
hyper-parameters: once with lifelong, once with Avalanche's strategy for that
method. Both final models are scored by one function (the average Class-IL
accuracy over the stream's test sets), and both libraries' training
throughput (samples per second over training alone: no evaluation, no
logging; Avalanche gets an ``EvaluationPlugin`` with no metrics and no
loggers) is measured in the same process at the same thread count.

The mapping (:func:`avalanche_spec`), lifelong plugin -> Avalanche strategy:

============================  ==================================================
lifelong                      Avalanche (``avalanche.training.supervised``)
============================  ==================================================
no plugin (``naive``,         ``Naive`` (on the transformed stream's
``cumulative``, ``joint``)    experiences: what ``Cumulative`` /
                              ``JointTraining`` train on)
``ewc``                       ``EWC(mode="separate", ewc_lambda=ewc_lambda / 2)``
``online_ewc``                ``EWC(mode="online", decay_factor=gamma,
                              ewc_lambda=ewc_lambda / 2)``
``si``                        ``SynapticIntelligence(si_lambda=2 c, eps=xi)``
``lwf``                       ``LwF(alpha=lwf_lambda, temperature=temperature)``
``er``                        ``Naive`` + ``ReplayPlugin(mem_size,
                              batch_size_mem=batch_size)``
``gem``                       ``GEM(patterns_per_exp=mem_size // n_experiences,
                              memory_strength)``
``agem``                      ``AGEM(patterns_per_exp=mem_size // n_experiences,
                              sample_size=batch_size)``
``der`` / ``derpp``           ``DER(mem_size, batch_size_mem=batch_size, alpha,
                              beta=0 / beta)``
``generative_replay``         ``GenerativeReplay`` with an ``MlpVAE`` of the same
(``dgr``)                     latent size trained by Adam at ``generator_lr``
============================  ==================================================

The factors keep the *objective* the same where the two write it
differently: Avalanche's EWC penalty is ``ewc_lambda * sum F (theta -
theta*)^2`` (lifelong's, the paper's, has ``lambda / 2``) and its SI penalty
``si_lambda / 2 * sum Omega (theta - theta*)^2`` (lifelong's, the paper's,
``c * sum ...``). What the two implementations still do differently is
listed in each row's ``notes`` (e.g. Avalanche's EWC uses the empirical
Fisher of mini-batch gradients, its replay memories are filled at the end
of each experience). A configuration with no counterpart (another method, a
task-free stream, a combination of methods, ``consolidate_every``) is a row
saying so; the grid goes on.

Avalanche imports torchvision. The torchvision wheels on PyPI are CUDA
builds: their compiled ops (``torchvision/_C.so``) link ``libtorch_cuda.so``
and ``libc10_cuda.so``, which a CPU-only torch does not ship, so loading
them fails. torchvision then skips every meta-kernel registration of those
ops, except two: ``torchvision/_meta_registrations.py`` registers fake
kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally,
and ``import torchvision`` dies with ``RuntimeError: operator
torchvision::nms does not exist`` (seen with torchvision 0.28.0+cu130 beside
torch 2.13.0+cpu). :func:`import_avalanche` catches exactly that error and
imports torchvision once more with those two registrations skipped, as
torchvision itself skips the others when its ops did not load (the
operators stay unavailable: ``torchvision.ops.nms`` raises torchvision's own
"Couldn't load custom C++ ops"; nothing Avalanche's strategies use needs
them). The patch lives only for the duration of that import.

Install: ``pip install 'lifelong[avalanche]'``; the extra pins torchvision
below 0.29 so that pip keeps a torch 2.13 install (torchvision 0.29 would
replace it with a CUDA build of torch 2.14).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import ConfigError, LifelongError

__all__ = ["INSTALL_HINT", "AvalancheSpec", "NoCounterpart", "avalanche_spec", "import_avalanche",
           "compare_run", "bench_against", "plugin_params"]

INSTALL_HINT = "pip install 'lifelong[avalanche]'"
_MISSING_OP = re.compile(r"operator torchvision::(\w+) does not exist")
_TORCHVISION_FAKE_OPS = ("torchvision::nms", "torchvision::qnms")


# ---------------------------------------------------------------------------
# Importing Avalanche (and torchvision beside a CPU-only torch)
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _skip_fake_kernels_of_unloaded_torchvision_ops() -> Iterator[None]:
    """While torchvision imports: skip ``register_fake`` of its ops when its ``_C`` did not load."""
    import torch.library

    original = torch.library.register_fake

    def register_fake(op: Any, func: Any = None, /, *args: Any, **kwargs: Any) -> Any:
        ext = sys.modules.get("torchvision.extension")
        if op in _TORCHVISION_FAKE_OPS and ext is not None and not ext._has_ops():
            return func if func is not None else (lambda fn: fn)
        return original(op, func, *args, **kwargs)

    torch.library.register_fake = register_fake  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.library.register_fake = original


def _missing(exc: ImportError) -> ConfigError:
    name = getattr(exc, "name", None) or "avalanche"
    return ConfigError(f"--against avalanche needs Avalanche, an optional extra: {INSTALL_HINT} "
                       f"({name} cannot be imported: {exc})")


def import_avalanche() -> ModuleType:
    """Import ``avalanche``, or raise a ConfigError naming the extra to install.

    When torchvision's import fails only because its compiled ops did not load
    beside a CPU-only torch (``operator torchvision::nms does not exist``), it is
    imported again with the two fake-kernel registrations of those ops skipped.
    """
    try:
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise _missing(exc) from exc
    except RuntimeError as exc:
        if not _MISSING_OP.search(str(exc)):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        with _skip_fake_kernels_of_unloaded_torchvision_ops():
            import torchvision  # noqa: F401,F811
    try:
        import avalanche
        import avalanche.training  # noqa: F401
    except ImportError as exc:
        raise _missing(exc) from exc
    return avalanche


# ---------------------------------------------------------------------------
# The mapping: lifelong plugins -> an Avalanche strategy (pure: imports nothing)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AvalancheSpec:
    """An Avalanche strategy to build: its class, its arguments, its plugins and the notes."""

    strategy: str  # a class of avalanche.training.supervised
    kwargs: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] | None = None  # ReplayPlugin arguments
    generator: dict[str, Any] | None = None  # GenerativeReplay's generator: latent_dim, lr, epochs
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoCounterpart:
    """No Avalanche strategy does what this configuration does; ``reason`` says why."""

    reason: str


def plugin_params(plugin: Any) -> dict[str, Any]:
    """A built plugin's parameters (stored as given), read through its registry entry."""
    from lifelong.learner import plugin_name
    from lifelong.registry import get_registry

    entry = get_registry().get("plugin", plugin_name(plugin))
    return {k: getattr(plugin, k) for k in entry.parameters() if hasattr(plugin, k)}


_NO_BOUNDARY_CONSOLIDATION = ("consolidate_every={v} (consolidation every N batches) has no "
                              "Avalanche counterpart: Avalanche consolidates at experience ends; "
                              "set consolidate_every: 0")


def avalanche_spec(plugins: Sequence[tuple[str, dict[str, Any]]], *, n_experiences: int | None,
                   batch_size: int, task_aware: bool = True,
                   task_conditioned: bool = False) -> AvalancheSpec | NoCounterpart:
    """The Avalanche strategy with the same method and hyper-parameters as ``plugins``.

    ``plugins`` are ``(registry name, parameters)`` pairs of the run's method
    plugins (not its evaluation observers); ``batch_size`` is the run's.

    >>> avalanche_spec([("ewc", {"ewc_lambda": 100.0, "mode": "separate"})], n_experiences=5,
    ...                batch_size=10).kwargs
    {'ewc_lambda': 50.0, 'mode': 'separate'}
    >>> avalanche_spec([("mas", {})], n_experiences=5, batch_size=10).reason[:40]
    "lifelong's 'mas' is not mapped to Avalan"
    """
    if not task_aware:
        return NoCounterpart("a task-free stream: Avalanche trains experience by experience, at "
                             "announced boundaries")
    if task_conditioned:
        return NoCounterpart("a task-conditioned model (forward(x, task)): Avalanche's strategies "
                             "call model(x)")
    if len(plugins) > 1:
        names = " + ".join(n for n, _ in plugins)
        return NoCounterpart(f"{names}: no single Avalanche strategy combines these methods")
    if not plugins:
        return AvalancheSpec("Naive")
    name, p = plugins[0]
    if p.get("consolidate_every"):
        return NoCounterpart(_NO_BOUNDARY_CONSOLIDATION.format(v=p["consolidate_every"]))
    fisher = ("Avalanche's Fisher is the empirical one (squared mini-batch gradients of the "
              "observed labels over the whole experience); lifelong's the true Fisher on the "
              f"last {p.get('fisher_samples', 1024)} inputs")
    if name == "ewc" and p.get("mode", "separate") == "separate":
        return AvalancheSpec("EWC", {"ewc_lambda": p.get("ewc_lambda", 100.0) / 2,
                                     "mode": "separate"},
                             notes=("ewc_lambda / 2: Avalanche's penalty has no 1/2", fisher))
    if name in ("ewc", "online_ewc"):
        return AvalancheSpec("EWC", {"ewc_lambda": p.get("ewc_lambda", 100.0) / 2, "mode": "online",
                                     "decay_factor": p.get("gamma", 1.0)},
                             notes=("ewc_lambda / 2: Avalanche's penalty has no 1/2", fisher))
    if name == "si":
        return AvalancheSpec("SynapticIntelligence", {"si_lambda": 2 * p.get("c", 0.1),
                                                      "eps": p.get("xi", 0.1)},
                             notes=("si_lambda = 2 c: Avalanche's penalty is si_lambda / 2 * ...",
                                    "Avalanche clips each importance at 0.001"))
    if name == "lwf":
        if p.get("multihead"):
            return NoCounterpart("lwf multihead=true (one softmax per experience's classes): "
                                 "Avalanche's LwF has heads only with a multi-task model")
        return AvalancheSpec("LwF", {"alpha": p.get("lwf_lambda", 1.0),
                                     "temperature": p.get("temperature", 2.0)})
    if name == "er":
        notes = []
        if p.get("memory", "reservoir") != "experience_balanced_end":
            notes.append("Avalanche's memory is experience-balanced, filled at experience ends "
                         "(lifelong's: a reservoir, filled online; memory=experience_balanced_end "
                         "is Avalanche's)")
        if p.get("replay_loss", "sum") != "joint_mean":
            notes.append("Avalanche's loss is one mean over stream + replay rows (lifelong's: the "
                         "sum of the two means; replay_loss=joint_mean is Avalanche's)")
        return AvalancheSpec("Naive", replay={"mem_size": p.get("mem_size", 200),
                                              "batch_size_mem": p.get("batch_size") or batch_size},
                             notes=tuple(notes))
    if name in ("gem", "agem"):
        if not n_experiences:
            return NoCounterpart(f"{name}: Avalanche keeps mem_size / n_experiences samples per "
                                 "experience, and this stream does not say how many it has")
        per = max(1, p.get("mem_size", 5120 if name == "gem" else 200) // n_experiences)
        if name == "gem":
            return AvalancheSpec("GEM", {"patterns_per_exp": per,
                                         "memory_strength": p.get("memory_strength", 0.5)},
                                 notes=("Avalanche stores the first patterns_per_exp samples of "
                                        "each experience (lifelong: the last)",))
        return AvalancheSpec("AGEM", {"patterns_per_exp": per,
                                      "sample_size": p.get("batch_size", 128)},
                             notes=("Avalanche's memory: patterns_per_exp per experience, filled "
                                    "at its end (lifelong's: one reservoir of mem_size)",))
    if name in ("der", "derpp"):
        notes = ["Avalanche's memory is class-balanced, its logits taken at experience ends "
                 "(lifelong's: a reservoir, logits at arrival; memory=class_balanced_end is "
                 "Avalanche's)"] if p.get("memory", "reservoir") != "class_balanced_end" else []
        if name == "derpp":
            notes.append("Avalanche draws one replay batch for both terms (DER++: two)")
        return AvalancheSpec("DER", {"mem_size": p.get("mem_size", 200),
                                     "batch_size_mem": p.get("batch_size", 10),
                                     "alpha": p.get("alpha", 0.2),
                                     "beta": p.get("beta", 1.0) if name == "derpp" else 0.0},
                             notes=tuple(notes))
    if name == "generative_replay":
        ratio = p.get("ratio")
        kwargs: dict[str, Any]
        if ratio is None:  # r = 1/N: Avalanche replays (N - 1) x the batch, one mean over all
            kwargs = {"increasing_replay_size": True, "replay_size": None}
        else:  # one mean over b real + n generated rows weighs the real ones b / (b + n) = r
            kwargs = {"increasing_replay_size": False,
                      "replay_size": max(1, round(batch_size * (1 - ratio) / ratio))}
        notes = ["Avalanche's generator (its MlpVAE layers, same latent size) trains "
                 "generator_steps epochs on each experience after it ends (lifelong's: "
                 "generator_steps steps per batch, online)"]
        if p.get("replay_size") is not None:
            notes.append("replay_size is ignored: Avalanche weighs by the number of replayed rows, "
                         "which ratio sets")
        return AvalancheSpec("GenerativeReplay", kwargs,
                             generator={"latent_dim": p.get("latent_dim", 32),
                                        "lr": p.get("generator_lr", 1e-3),
                                        "epochs": p.get("generator_steps", 10)},
                             notes=tuple(notes))
    return NoCounterpart(f"lifelong's {name!r} is not mapped to Avalanche (mapped: ewc, "
                         "online_ewc, si, lwf, er, gem, agem, der, derpp, generative_replay and "
                         "runs without a method plugin)")


# ---------------------------------------------------------------------------
# One cell: the same run through both libraries
# ---------------------------------------------------------------------------


def _ordered_experiences(stream: Any, batch_size: int, seed: int) -> list[tuple[Tensor, Tensor, int]]:
    """Each experience's samples in the order lifelong's learner trains them (first epoch)."""
    out = []
    for e in stream.experiences():
        batches = list(e.batches(batch_size, epochs=1, seed=seed))
        tid = e.task_id if stream.task_labels and e.task_id is not None else 0
        out.append((torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches]), tid))
    return out


@torch.no_grad()
def average_accuracy(model: nn.Module, eval_sets: Sequence[Any], device: torch.device,
                     batch_size: int = 1000) -> float:
    """Mean over ``eval_sets`` of the Class-IL accuracy (argmax over all outputs)."""
    was = model.training
    model.eval()
    accs = []
    for es in eval_sets:
        hits = 0
        for i in range(0, len(es.y), batch_size):
            x = es.x[i:i + batch_size].to(device)
            hits += int((model(x).argmax(1) == es.y[i:i + batch_size].to(device)).sum())
        accs.append(hits / max(len(es.y), 1))
    model.train(was)
    return sum(accs) / len(accs) if accs else float("nan")


def _optimizer(spec: Any, params: Any, lr: float, momentum: float, weight_decay: float) -> Any:
    if spec == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if spec == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=weight_decay)


def _avalanche_strategy(av: Any, spec: AvalancheSpec, model: nn.Module, optimizer: Any,
                        batch_size: int, epochs: int, device: torch.device,
                        input_shape: Sequence[int], num_classes: int) -> Any:
    from avalanche.training import supervised
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin

    common: dict[str, Any] = dict(model=model, optimizer=optimizer,
                                  criterion=nn.CrossEntropyLoss(), train_mb_size=batch_size,
                                  train_epochs=epochs, eval_mb_size=1000, device=device,
                                  evaluator=EvaluationPlugin(loggers=[]))
    plugins = [ReplayPlugin(**spec.replay)] if spec.replay is not None else None
    if spec.generator is not None:
        from avalanche.models.generator import MlpVAE, VAE_loss
        from avalanche.training.plugins import GenerativeReplayPlugin

        g = spec.generator
        vae = MlpVAE(tuple(input_shape), nhid=g["latent_dim"], n_classes=num_classes,
                     device=device)
        gen = supervised.VAETraining(
            model=vae, optimizer=torch.optim.Adam(vae.parameters(), lr=g["lr"]),
            criterion=VAE_loss, train_mb_size=batch_size, train_epochs=g["epochs"],
            eval_mb_size=1000, device=device, evaluator=EvaluationPlugin(loggers=[]),
            plugins=[GenerativeReplayPlugin(**spec.kwargs)])
        return supervised.GenerativeReplay(**common, generator_strategy=gen, **spec.kwargs)
    return getattr(supervised, spec.strategy)(**common, **spec.kwargs, plugins=plugins)


@dataclass
class CellResult:
    """Both libraries' result for one run, or why the Avalanche side has none."""

    lifelong: dict[str, Any]
    avalanche: dict[str, Any]
    notes: tuple[str, ...] = ()


def compare_run(raw: dict[str, Any], av: ModuleType | None = None) -> CellResult:
    """Train ``raw``'s run with lifelong, then the same run through Avalanche."""
    import warnings

    from lifelong.learner import plugin_name
    from lifelong.run import build

    raw = {**raw, "eval": {**(raw.get("eval") or {}), "prequential": False, "matrix": False,
                           "every": 0}}
    run = build(raw)
    learner, stream = run.learner, run.stream
    seed, bs, epochs = run.config["seed"], learner.batch_size, learner.epochs
    device = learner.device
    init = copy.deepcopy(learner.model)
    order = _ordered_experiences(stream, bs, seed)
    n = sum(len(y) for _, y, _ in order) * epochs
    spec = avalanche_spec([(plugin_name(p), plugin_params(p)) for p in run.plugins],
                          n_experiences=stream.n_experiences, batch_size=bs,
                          task_aware=stream.task_aware,
                          task_conditioned=bool(getattr(init, "task_conditioned", False)))
    t0 = time.perf_counter()
    learner.fit(stream, evaluate=False)
    t_l = time.perf_counter() - t0
    left = {"final_avg_accuracy": average_accuracy(learner.model, stream.test, device),
            "samples_per_second": n / t_l, "train_s": t_l, "threads": torch.get_num_threads()}
    if isinstance(spec, NoCounterpart):
        return CellResult(left, {"status": "no_counterpart", "error": spec.reason})
    av = av or import_avalanche()
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
        create_generic_benchmark_from_tensor_lists,
    )

    train = [[x, y] for x, y, _ in order]
    with warnings.catch_warnings():
        # Avalanche's deprecation notices (its own code calling its deprecated helpers) set their
        # own "always" filter; not showing them keeps the table readable
        warnings.simplefilter("ignore")
        warnings.showwarning = lambda *args, **kwargs: None
        # Avalanche's own evaluation is not used (both models are scored by average_accuracy):
        # its test stream is the training data, which no code path reads
        bm = create_generic_benchmark_from_tensor_lists(train, train,
                                                        task_labels=[t for _, _, t in order])
        tr = run.config["train"]
        model = init.to(device).train()
        opt = _optimizer(tr["optimizer"], model.parameters(), float(tr["lr"]),
                         float(tr["momentum"]), float(tr["weight_decay"]))
        torch.manual_seed(seed)
        strategy = _avalanche_strategy(av, spec, model, opt, bs, epochs, device,
                                       stream.input_shape, stream.num_classes)
        t_a = 0.0
        for exp in bm.train_stream:
            t0 = time.perf_counter()
            strategy.train(exp, shuffle=False, num_workers=0)
            t_a += time.perf_counter() - t0
    notes = spec.notes + (("epochs > 1: Avalanche repeats the first epoch's order "
                           "(lifelong reshuffles)",) if epochs > 1 else ())
    right = {"final_avg_accuracy": average_accuracy(model, stream.test, device),
             "samples_per_second": n / t_a, "train_s": t_a, "threads": torch.get_num_threads(),
             "avalanche_strategy": spec.strategy + (" + ReplayPlugin" if spec.replay else "")}
    return CellResult(left, right, notes)


# ---------------------------------------------------------------------------
# The CLI: lifelong bench --against avalanche
# ---------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.pstdev(values)


def bench_against(args: Any) -> int:
    """``lifelong bench --against avalanche``: every cell of the grid through both libraries.

    The grid is the one ``lifelong bench`` expands (strategies with parameters,
    streams, ``--set`` axes, seeds, a grid file), run in this process. Each run
    and library is one line of ``bench_avalanche_runs.jsonl`` in ``--out`` as it
    ends; the summary rows go to ``bench_avalanche.json``.
    """
    from rich.table import Table

    from lifelong.bench.command import _backend, finish
    from lifelong.bench.grid import expand, grid_from_args
    from lifelong.cli import _console, check_out_dir

    backend, _ = _backend(args)
    if backend != "in-process":
        raise ConfigError("--against avalanche runs in-process (both libraries in one process, "
                          "one after the other, at the same thread count); drop --workers / "
                          "--backend")
    av = import_avalanche()  # the missing extra is said before anything runs
    console = _console(args.quiet)
    cells = expand(grid_from_args(args))
    out = check_out_dir(args.out) if args.out else None
    log = out / "bench_avalanche_runs.jsonl" if out is not None else None
    if log is not None:
        log.write_text("")
    groups: dict[Any, list[Any]] = {}
    for c in cells:
        groups.setdefault(c.key, []).append(c)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for group in groups.values():
        first = group[0]
        acc: dict[str, list[float]] = {"lifelong": [], "avalanche": []}
        sps: dict[str, list[float]] = {"lifelong": [], "avalanche": []}
        notes: tuple[str, ...] = ()
        reason = None
        for cell in group:
            records = []
            try:
                res = compare_run(cell.raw, av)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed run must not end the bench
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                kind = "" if isinstance(exc, LifelongError) else f"{type(exc).__name__}: "
                err = f"{kind}{msg}"[:300]
                failures.append(f"{cell.describe()}: {err}")
                records.append({"library": "both", "status": "failed", "error": err})
            else:
                notes = res.notes
                for lib, r in (("lifelong", res.lifelong), ("avalanche", res.avalanche)):
                    if "error" in r:
                        reason = r["error"]
                        records.append({"library": lib, **r})
                        continue
                    acc[lib].append(r["final_avg_accuracy"])
                    sps[lib].append(r["samples_per_second"])
                    records.append({"library": lib, "status": "ok", **r})
            if log is not None:
                with open(log, "a") as fh:
                    for r in records:
                        fh.write(json.dumps({"hash": cell.hash, "strategy": cell.strategy,
                                             "stream": cell.stream, "seed": cell.seed,
                                             "axes": cell.axes, **r}, default=str) + "\n")
        al, al_sd = _mean_std(acc["lifelong"])
        aa, aa_sd = _mean_std(acc["avalanche"])
        sl = statistics.median(sps["lifelong"]) if sps["lifelong"] else None
        sa = statistics.median(sps["avalanche"]) if sps["avalanche"] else None
        axes = ", ".join(f"{k}={v}" for k, v in first.axes.items())
        rows.append({"stream": first.stream, "strategy": first.strategy + (f" ({axes})" if axes
                                                                          else ""),
                     "axes": first.axes, "acc_lifelong": al, "std_lifelong": al_sd,
                     "acc_avalanche": aa, "std_avalanche": aa_sd,
                     "sps_lifelong": sl, "sps_avalanche": sa,
                     "speedup": sl / sa if sl and sa else None,
                     "avalanche": reason or "ok", "notes": list(notes),
                     "threads": torch.get_num_threads(), "seeds": [c.seed for c in group]})
    seeds = sorted({c.seed for c in cells})
    t = Table(title=f"lifelong vs Avalanche {getattr(av, '__version__', '')} ({len(seeds)} "
                    f"seed(s), {torch.get_num_threads()} thread(s); accuracy: final average "
                    "Class-IL, mean ± std over seeds; samples/s: training only, median)")
    for col in ("stream", "strategy", "acc lifelong", "acc avalanche", "samples/s lifelong",
                "samples/s avalanche", "speedup"):
        t.add_column(col, justify="left" if col in ("stream", "strategy") else "right")

    def pm(m: float | None, s: float | None) -> str:
        return "-" if m is None else f"{m:.3f} ± {s or 0.0:.3f}"

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        right = (pm(r["acc_avalanche"], r["std_avalanche"]) if r["avalanche"] == "ok"
                 else "no Avalanche counterpart")
        t.add_row(str(r["stream"]), r["strategy"], pm(r["acc_lifelong"], r["std_lifelong"]),
                  right, num(r["sps_lifelong"], ",.0f"), num(r["sps_avalanche"], ",.0f"),
                  "-" if r["speedup"] is None else f"{r['speedup']:.2f}x")
    console.print(t)
    for r in rows:
        if r["avalanche"] != "ok":
            console.print(f"{r['strategy']}: no Avalanche counterpart: {r['avalanche']}")
        for note in r["notes"]:
            console.print(f"{r['strategy']}: {note}")
    return finish(out, "bench_avalanche.json", rows, failures, len(cells))
