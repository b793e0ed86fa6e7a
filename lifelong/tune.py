"""``lifelong tune``: hyper-parameter search that never tunes on the reported stream.

The protocol of Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong
Learning with A-GEM", ICLR 2019 (section 2, "Learning protocol"): the stream
of tasks is split into a short cross-validation stream ``D^CV``, its first
``T^CV`` tasks, on which hyper-parameters are searched (several passes
allowed), and the evaluation stream ``D^EV``, the remaining tasks, on which the
chosen setting is trained once and the reported numbers are measured. They
use ``T^CV = 3`` of 20 tasks (their code: ``K_FOR_CROSS_VAL = 3``, and the
training runs on ``datasets[K_FOR_CROSS_VAL:]``). Here:

* every trial trains on the first ``tune_experiences`` experiences only
  (``stream.first_experiences``; later experiences are never built), with the
  tuning seeds, and its value is the mean of ``metric`` over those seeds;
* the best setting then runs with *fresh* seeds, disjoint from the tuning
  seeds, on the experiences after the tuned ones (``final_on="rest"``, the
  paper's ``D^EV``; ``stream.skip_experiences``) or on the whole stream
  (``final_on="all"``); only those runs are reported (mean and 95 %
  Student-t interval over the fresh seeds).

The search is Optuna's (a seeded TPE sampler, so the same command gives the
same trials); the study lives in SQLite and a rerun continues it: finished
trials are kept and not rerun. A trial whose run fails (NaN loss, a value
the method refuses) is recorded as failed, with its error, and the search
goes on.

A search space is a list of ``key=distribution:args`` strings, the keys
those of ``--set`` (``train.lr``, ``strategy.mem_size``, ``plugins.0.alpha``)::

    train.lr=loguniform:0.001:0.3      strategy.mem_size=int:100:1000
    strategy.alpha=uniform:0:1         strategy.name=categorical:er,der
    strategy.batch_size=intlog:8:128

A parameter of one strategy only (``strategy.alpha`` with
``strategy.name=categorical:er,der``) is sampled only in the trials whose
strategy takes it (Optuna's define-by-run conditional spaces).

Examples
--------
>>> space = parse_space(["train.lr=loguniform:0.001:0.3", "strategy.name=categorical:er,der"])
>>> [(p.key, p.kind, p.low, p.high, p.choices) for p in space]
[('train.lr', 'loguniform', 0.001, 0.3, ()), ('strategy.name', 'categorical', None, None, ('er', 'der'))]
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.config import EVAL_KEYS, INJECTED, SELECTION_KEYS, TRAIN_KEYS, apply_overrides, resolve
from lifelong.errors import ConfigError, LifelongError
from lifelong.registry import Registry, get_registry

__all__ = ["Param", "parse_param", "parse_space", "tuning_config", "final_config", "check_seeds",
           "mean_ci", "TuneResult", "tune"]

KINDS = ("uniform", "loguniform", "int", "intlog", "categorical")
#: keys the protocol sets itself: tuning them would undo it
PROTOCOL_KEYS = ("seed", *(f"stream.{k}" for k in SELECTION_KEYS))


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("lifelong tune needs Optuna, which is not installed; install the extra: "
                          "pip install 'lifelong[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a config key and its distribution."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind in ("int", "intlog"):
            return trial.suggest_int(self.key, int(self.low), int(self.high),  # type: ignore[arg-type]
                                     log=self.kind == "intlog")
        return trial.suggest_float(self.key, float(self.low), float(self.high),  # type: ignore[arg-type]
                                   log=self.kind == "loguniform")

    def corners(self) -> list[Any]:
        """The values validated before the first trial: both ends, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"categorical:{','.join(map(str, self.choices))}"
        return f"{self.kind}:{self.low}:{self.high}"


def _number(text: str, key: str, integer: bool) -> float | int:
    from lifelong.config import safe_load

    try:
        value = safe_load(text)
    except Exception:  # noqa: BLE001 - any YAML failure is a bad number here
        value = None
    if integer:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ConfigError(f"--param {key}: {text!r} is not {'an integer' if integer else 'a number'}")
    return float(value) if not integer else int(value)  # type: ignore[arg-type]


def parse_param(text: str) -> Param:
    """``key=kind:args`` -> :class:`Param`; every mistake is one line naming the key."""
    from lifelong.config import safe_load

    if "=" not in text:
        raise ConfigError(f"--param {text!r}: expected key=distribution:args, e.g. "
                          "train.lr=loguniform:0.001:0.3")
    key, spec = (s.strip() for s in text.split("=", 1))
    if not key:
        raise ConfigError(f"--param {text!r}: the key is empty")
    if key in PROTOCOL_KEYS:
        raise ConfigError(f"--param {key}: set by the tuning protocol itself (tuning and reporting "
                          "seeds, tuned experiences); use --seeds / --final-seeds / "
                          "--tune-experiences")
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ConfigError(f"--param {key}: unknown distribution {kind!r}; use one of "
                          f"{', '.join(KINDS)} (e.g. {key}=uniform:0:1)")
    if kind == "categorical":
        items = [s.strip() for s in rest.split(",")] if rest.strip() else []
        if len(items) < 2 or any(not s for s in items):
            raise ConfigError(f"--param {key}: categorical needs two or more comma-separated "
                              f"choices, got {rest!r}")
        choices = tuple(safe_load(s) for s in items)
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"--param {key}: a choice is given twice in {rest!r}")
        return Param(key, kind, choices=choices)
    parts = rest.split(":")
    if len(parts) != 2:
        raise ConfigError(f"--param {key}: {kind} needs low:high, e.g. {key}={kind}:1:10; got "
                          f"{spec!r}")
    integer = kind in ("int", "intlog")
    low, high = (_number(p.strip(), key, integer) for p in parts)
    if low >= high:
        raise ConfigError(f"--param {key}: low must be below high, got {low} >= {high}")
    if kind in ("loguniform", "intlog") and low <= 0:
        raise ConfigError(f"--param {key}: {kind} needs low > 0, got {low}")
    return Param(key, kind, low, high)


def parse_space(items: Sequence[str], from_yaml: Mapping[str, Any] | None = None) -> list[Param]:
    """The search space from ``--param`` strings and/or a YAML mapping ``key: spec``.

    In YAML a spec is the same string (``train.lr: loguniform:0.001:0.3``) or a
    list of choices (``strategy.name: [er, der]``). A key given twice is refused.
    """
    texts: list[str] = []
    for key, spec in (from_yaml or {}).items():
        if isinstance(spec, list):
            spec = "categorical:" + ",".join(json.dumps(v) if not isinstance(v, str) else v
                                             for v in spec)
        if not isinstance(spec, str):
            raise ConfigError(f"search space {key}: expected 'distribution:args' or a list of "
                              f"choices, got {spec!r}")
        texts.append(f"{key}={spec}")
    space = [parse_param(t) for t in [*texts, *items]]
    seen: set[str] = set()
    for p in space:
        if p.key in seen:
            raise ConfigError(f"--param {p.key}: given twice; give each key once")
        seen.add(p.key)
    if not space:
        raise ConfigError("lifelong tune: no search space; give --param key=distribution:args "
                          "(e.g. --param train.lr=loguniform:0.001:0.3) or --space FILE")
    return space


# ---------------------------------------------------------------------------
# Which keys a config takes
# ---------------------------------------------------------------------------


def _params_of(reg: Registry, kind: str, name: str) -> set[str]:
    return {k for k in reg.get(kind, name).parameters() if k not in INJECTED}


def _name_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value["name"]
    return None


def accepts(cfg: Mapping[str, Any], key: str, reg: Registry) -> str | None:
    """``None`` when ``cfg`` takes ``key``, else the reason it does not (one phrase)."""
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    sections = {"train": TRAIN_KEYS, "eval": EVAL_KEYS}
    if head in sections:
        if len(rest) != 1 or rest[0] not in sections[head]:
            return f"{head} has no key {'.'.join(rest)!r}; keys: {', '.join(sorted(sections[head]))}"
        return None
    if head in ("strategy", "stream", "backbone", "target"):
        name = _name_of(cfg.get(head) or ({"name": "mlp"} if head == "backbone" else None))
        if len(rest) != 1:
            return f"expected {head}.<parameter>"
        if rest[0] == "name":
            return None
        if name is None:
            return f"the config has no {head}"
        kind = "stream" if head == "target" else head
        allowed = _params_of(reg, kind, name)
        if head == "stream":
            allowed |= {"label_delay", "task_free"}
        if rest[0] not in allowed:
            return (f"{kind} {name!r} has no parameter {rest[0]!r}; its parameters: "
                    f"{', '.join(sorted(allowed)) or 'none'}")
        return None
    if head == "plugins":
        plugins = cfg.get("plugins") or []
        if len(rest) != 2 or not rest[0].isdigit():
            return "expected plugins.<index>.<parameter>"
        i = int(rest[0])
        if i >= len(plugins):
            return f"the config has {len(plugins)} plugins, so no plugins.{i}"
        name = _name_of(plugins[i])
        if name is None or rest[1] == "name":
            return None if rest[1] == "name" else f"plugins.{i} has no name"
        allowed = _params_of(reg, "plugin", name)
        if rest[1] not in allowed:
            return (f"plugin {name!r} has no parameter {rest[1]!r}; its parameters: "
                    f"{', '.join(sorted(allowed)) or 'none'}")
        return None
    if head == "device":
        return None
    return f"unknown key {head!r} (keys start with train., eval., strategy., stream., backbone., " \
           "plugins.<i>.)"


def _apply(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    return apply_overrides(dict(base), [f"{k}={json.dumps(v)}" for k, v in values.items()])


def _ordered(space: Sequence[Param]) -> list[Param]:
    """Names first (``strategy.name`` decides which strategy parameters exist)."""
    return sorted(space, key=lambda p: not p.key.endswith(".name"))


def sample(space: Sequence[Param], base: Mapping[str, Any], pick: Callable[[Param], Any],
           reg: Registry) -> tuple[dict[str, Any], list[str]]:
    """Values for one trial: each parameter the resulting config takes, via ``pick``.

    Returns the values and the keys not sampled because the chosen names do not
    take them (a conditional space).
    """
    values: dict[str, Any] = {}
    absent: list[str] = []
    for p in _ordered(space):
        if accepts(_apply(base, values), p.key, reg) is None:
            values[p.key] = pick(p)
        else:
            absent.append(p.key)
    return values, absent


def validate_space(space: Sequence[Param], base: Mapping[str, Any], tune_experiences: int,
                   reg: Registry | None = None) -> None:
    """Before the first trial: every key is taken by the config (for some choice of the
    names in the space), and both ends of every range / every choice build a run."""
    from lifelong.run import build

    reg = reg or get_registry()
    names = [p for p in _ordered(space) if p.key.endswith(".name")]
    combos: list[dict[str, Any]] = [{}]
    for p in names:  # every choice of every name parameter (a few at most)
        combos = [{**c, p.key: v} for c in combos for v in p.choices or [p.low]]
    for p in space:
        if p in names:
            continue
        reasons = [accepts(_apply(base, c), p.key, reg) for c in combos]
        if all(r is not None for r in reasons):
            raise ConfigError(f"--param {p.key}: not a key this config takes ({reasons[0]})")
    for p in space:
        for value in p.corners():
            for c in combos:
                if p in names and c.get(p.key) != value:
                    continue
                cfg = _apply(base, c)
                if p not in names and accepts(cfg, p.key, reg) is not None:
                    continue
                cfg = tuning_config(_apply(cfg, {p.key: value}), tune_experiences, 0)
                try:
                    build(cfg, registry=reg)
                except LifelongError as exc:
                    raise ConfigError(f"--param {p.key}={value}: {exc}") from None
                break


# ---------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------


def _with_stream(cfg: Mapping[str, Any], **keys: Any) -> dict[str, Any]:
    out = copy.deepcopy(dict(cfg))
    stream = out.get("stream")
    if isinstance(stream, str):
        stream = {"name": stream}
    if not isinstance(stream, dict):
        raise ConfigError("stream: missing; name a stream, e.g. stream: {name: split_mnist}")
    for k in SELECTION_KEYS:
        if k in stream:
            raise ConfigError(f"stream.{k}: set by lifelong tune (--tune-experiences); drop it "
                              "from the config")
    out["stream"] = {**stream, **keys}
    return out


def tuning_config(cfg: Mapping[str, Any], tune_experiences: int, seed: int) -> dict[str, Any]:
    """The config of one tuning run: the first ``tune_experiences`` experiences, seed ``seed``."""
    out = _with_stream(cfg, first_experiences=tune_experiences)
    out["seed"] = seed
    return out


def final_config(cfg: Mapping[str, Any], tune_experiences: int, seed: int,
                 final_on: str = "rest") -> dict[str, Any]:
    """The config of one reported run: the experiences after the tuned ones, or all of them."""
    if final_on not in ("rest", "all"):
        raise ConfigError(f"--final-on must be 'rest' or 'all', got {final_on!r}")
    out = (_with_stream(cfg, skip_experiences=tune_experiences) if final_on == "rest"
           else _with_stream(cfg))
    out["seed"] = seed
    return out


def check_seeds(seeds: Sequence[int], final_seeds: Sequence[int]) -> None:
    """Tuning and reporting seeds: each list non-empty, no repeats, and no seed in both."""
    for flag, s in (("--seeds", seeds), ("--final-seeds", final_seeds)):
        if not s:
            raise ConfigError(f"{flag}: give at least one seed")
        if len(set(s)) != len(s):
            raise ConfigError(f"{flag}: a seed is given twice in {list(s)}")
        if any(not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < 2**63 for x in s):
            raise ConfigError(f"{flag}: seeds must be integers in 0..2**63-1, got {list(s)}")
    both = sorted(set(seeds) & set(final_seeds))
    if both:
        raise ConfigError(f"--final-seeds: seed(s) {', '.join(map(str, both))} are also tuning "
                          "seeds; the reported runs must use fresh seeds (e.g. --final-seeds "
                          f"{max(seeds) + 1},{max(seeds) + 2},{max(seeds) + 3})")


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value): the
    grid summary's :func:`lifelong.bench.summary.mean_ci`, with 0 where it has no interval.

    >>> m, h = mean_ci([0.8, 0.9, 1.0]); round(m, 3), round(h, 3)
    (0.9, 0.248)
    """
    from lifelong.bench.summary import mean_ci as student_t

    m, half = student_t(values, level)
    return m, 0.0 if half is None else half


def _metric(m: Mapping[str, Any], metric: str) -> float:
    if metric not in m:
        numeric = sorted(k for k, v in m.items() if isinstance(v, int | float)
                         and not isinstance(v, bool))
        raise ConfigError(f"--metric {metric}: not in the run's metrics; numeric metrics: "
                          f"{', '.join(numeric)}")
    v = m[metric]
    if v is None:
        return math.nan
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise ConfigError(f"--metric {metric}: not a number ({type(v).__name__}); choose a "
                          "numeric metric such as final_avg_accuracy")
    return float(v)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    kind = "" if isinstance(exc, LifelongError) else f"{type(exc).__name__}: "
    return f"{kind}{text.splitlines()[0] if text else ''}"[:300]


@dataclass
class TuneResult:
    """What :func:`tune` found and measured (also written to ``tune.json``)."""

    study_name: str
    storage: str
    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]
    final: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


def tune(base: Mapping[str, Any], space: Sequence[Param], *, n_trials: int,
         tune_experiences: int, out_dir: str | Path, seeds: Sequence[int] = (0,),
         final_seeds: Sequence[int] = (1, 2, 3), final_on: str = "rest",
         metric: str = "final_avg_accuracy", direction: str = "maximize",
         study_name: str = "lifelong", storage: str | None = None, sampler_seed: int = 0,
         run: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
         on_trial: Callable[[dict[str, Any]], None] | None = None) -> TuneResult:
    """Search ``space`` on the first ``tune_experiences`` experiences, then report fresh seeds.

    ``n_trials`` is the study's total: a study that already holds finished
    trials (a rerun after an interruption) runs only the missing ones.
    ``run`` (default :func:`lifelong.run.run_config`) runs one config and
    returns its metrics. Returns a :class:`TuneResult`; ``out_dir/tune.json``
    holds the same.
    """
    optuna = _optuna()
    from lifelong.run import _atomic_write, build, run_config

    run = run or run_config
    reg = get_registry()
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"--direction must be maximize or minimize, got {direction!r}")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"--n-trials must be a positive integer, got {n_trials!r}")
    check_seeds(seeds, final_seeds)
    final_config(base, 1, final_seeds[0], final_on)  # checks final_on and the stream section
    resolve(tuning_config(base, 1, seeds[0]), reg)
    n = build(final_config(base, 0, final_seeds[0], "all"), registry=reg).stream.n_experiences
    if n is None:
        raise ConfigError("--tune-experiences: the stream does not know its number of "
                          "experiences; tuning on its first experiences needs a stream that does")
    most = n - 1 if final_on == "rest" else n
    if not isinstance(tune_experiences, int) or not 1 <= tune_experiences <= most:
        why = "; --final-on rest needs one left to report on" if final_on == "rest" else ""
        raise ConfigError(f"--tune-experiences must be in 1..{most} (the stream has {n} "
                          f"experiences{why}), got {tune_experiences!r}")
    validate_space(space, base, tune_experiences, reg)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        probe = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                    direction=direction)
    except (ValueError, KeyError, ImportError) as exc:  # a bad URL, or a study of other direction
        raise ConfigError(f"--storage {storage}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy errors (unwritable path, not a db)
        raise ConfigError(f"--storage {storage}: cannot open the study ({_first_line(exc)})") from None
    if probe.direction.name.lower() != direction:
        raise ConfigError(f"--direction {direction}: study {study_name!r} in {storage} was created "
                          f"to {probe.direction.name.lower()}; keep its direction or use another "
                          "--study-name")
    settings = {"space": [f"{p.key}={p.describe()}" for p in space], "metric": metric,
                "tune_experiences": tune_experiences, "seeds": list(seeds),
                "config": json.loads(json.dumps(base, default=str))}
    old = probe.user_attrs.get("settings")
    if old is None:
        probe.set_user_attr("settings", settings)
    elif old != settings:
        diff = [k for k in settings if old.get(k) != settings[k]]
        raise ConfigError(f"--study-name {study_name}: that study was run with other settings "
                          f"({', '.join(diff)} differ); rerun with the same ones to continue it, "
                          "or choose another --study-name")
    TS = optuna.trial.TrialState
    done = [t for t in probe.trials if t.state in (TS.COMPLETE, TS.FAIL)]
    # the sampler's seed moves on with the study, so a resumed search draws new points
    # (a TPE sampler reseeded alike would repeat its first random draws)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=sampler_seed +
                                                                 len(probe.trials)))

    def objective(trial: Any) -> float:
        values, absent = sample(space, base, lambda p: p.suggest(trial), reg)
        if absent:
            trial.set_user_attr("not_sampled", absent)
        scores = []
        for seed in seeds:
            try:
                m = run(tuning_config(_apply(base, values), tune_experiences, seed))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the search goes on
                trial.set_user_attr("error", f"seed {seed}: {_first_line(exc)}")
                return math.nan
            score = _metric(m, metric)  # a metric that does not exist ends the search
            if not math.isfinite(score):
                trial.set_user_attr("error", f"seed {seed}: {metric} is {score}")
                return math.nan
            scores.append(score)
        return statistics.fmean(scores)

    def report(study: Any, trial: Any) -> None:
        if on_trial is not None:
            on_trial(_trial_row(trial))

    todo = n_trials - len(done)
    if todo > 0:
        study.optimize(objective, n_trials=todo, callbacks=[report])
    trials = [_trial_row(t) for t in study.trials]
    complete = [t for t in study.trials if t.state == TS.COMPLETE]
    if not complete:
        raise ConfigError(f"no trial of study {study_name!r} finished ({len(trials)} failed; "
                          f"first error: {trials[0].get('error') if trials else '-'}); widen or "
                          "fix the search space")
    best = study.best_trial
    best_cfg = _apply(base, best.params)

    runs = []
    for seed in final_seeds:
        cfg = final_config(best_cfg, tune_experiences, seed, final_on)
        try:
            m = run(cfg)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded; the other seeds go on
            runs.append({"seed": seed, "status": "failed", "error": _first_line(exc)})
            continue
        runs.append({"seed": seed, "status": "ok", metric: _metric(m, metric),
                     **{k: m.get(k) for k in ("final_avg_accuracy", "avg_forgetting", "bwt")
                        if k != metric}})
    ok = [r[metric] for r in runs if r["status"] == "ok" and math.isfinite(r[metric])]
    mean, half = mean_ci(ok) if ok else (math.nan, math.nan)
    first, last = (tune_experiences, n - 1) if final_on == "rest" else (0, n - 1)
    final = {"on": final_on, "experiences": [first, last], "seeds": list(final_seeds),
             "runs": runs, "metric": metric, "mean": mean, "ci95": half, "n": len(ok)}
    summary = {
        "tuning": f"{', '.join(map(str, seeds))} (experiences 0-{tune_experiences - 1} of {n})",
        "reported": f"{', '.join(map(str, final_seeds))}, never used in tuning (experiences "
                    f"{first}-{last} of {n})",
    }
    result = TuneResult(study_name, storage, dict(best.params), float(best.value), trials, final,
                        summary)
    payload = {"study_name": study_name, "storage": storage, "metric": metric,
               "direction": direction, "space": settings["space"],
               "tune_experiences": tune_experiences, "n_experiences": n,
               "tuning_seeds": list(seeds), "final_seeds": list(final_seeds),
               "sampler": f"TPE(seed={sampler_seed})", "n_trials": len(trials),
               "n_complete": len(complete), "n_failed": sum(t["state"] == "FAIL" for t in trials),
               "best_trial": best.number, "best_params": result.best_params,
               "best_tuning_value": result.best_value, "final": final, "summary": summary,
               "trials": trials}
    text = json.dumps(payload, indent=2, default=str)
    _atomic_write(out / "tune.json", lambda tmp: tmp.write_text(text))
    if not ok:
        raise ConfigError(f"every reported run failed ({runs[0].get('error')}); the tuning "
                          f"results are in {out / 'tune.json'}")
    return result


def _trial_row(t: Any) -> dict[str, Any]:
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
            "not_sampled": t.user_attrs.get("not_sampled", []), "error": t.user_attrs.get("error")}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render(result: TuneResult, console: Any) -> None:
    """The trials table, the best setting and the reported runs, with rich."""
    from rich.table import Table

    keys = sorted({k for t in result.trials for k in t["params"]})
    last = [k.rsplit(".", 1)[-1] for k in keys]  # short headers where they stay unambiguous
    heads = [s if last.count(s) == 1 else k for k, s in zip(keys, last)]
    t = Table(title=f"study {result.study_name!r}: {len(result.trials)} trials (value: mean over "
                    "the tuning seeds, tuned experiences only)")
    for col in ("#", "state", "value", *heads, "error"):
        t.add_column(col)
    for row in result.trials:
        best = row["params"] == result.best_params and row["state"] == "COMPLETE"
        t.add_row(str(row["number"]), row["state"], _fmt(row["value"]),
                  *[_fmt(row["params"].get(k)) if k in row["params"] else
                    ("n/a" if k in row["not_sampled"] else "-") for k in keys],
                  _fmt(row["error"]), style="bold" if best else None)
    console.print(t)
    console.print("best setting: " + ", ".join(f"{k}={_fmt(v)}" for k, v in
                                               result.best_params.items())
                  + f" (tuning value {result.best_value:.4f})")
    f = result.final
    ft = Table(title=f"reported: the best setting on experiences {f['experiences'][0]}-"
                     f"{f['experiences'][1]}, fresh seeds")
    for col in ("seed", "status", f["metric"], "error"):
        ft.add_column(col)
    for r in f["runs"]:
        ft.add_row(str(r["seed"]), r["status"], _fmt(r.get(f["metric"])), _fmt(r.get("error")))
    console.print(ft)
    console.print(f"{f['metric']}: {f['mean']:.4f} +- {f['ci95']:.4f} (95% CI, Student t, "
                  f"{f['n']} seeds)")
    console.print(f"tuning seeds: {result.summary['tuning']}")
    console.print(f"reported seeds: {result.summary['reported']}")
