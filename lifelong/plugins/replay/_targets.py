"""Every task's target in a replay memory, and replayed samples' per-task losses; not a plugin.

On a multi-target stream (``Stream.tasks``) a memory stores, beside ``x``
and ``y``, one column per task of the stream, ``target/<task>``, and a
presence flag ``has/<task>`` (a task that arrives with a later experience
has no target in the samples stored before it). A replayed sample then
enters the loss of every task whose target it carries:
:func:`replay_losses` gives ``{task: loss}`` for the learner's current
tasks, each the mean over the rows that have that task's target
(cross-entropy for a classification, squared error for a regression, as
the learner's own ``ce/<task>`` / ``mse/<task>``). Where every row has the
target the mean is the ordinary batch mean.

Examples
--------
>>> import torch
>>> from lifelong.stream.base import Batch, TaskSpec
>>> tasks = (TaskSpec("a", "classification", 3), TaskSpec("b", "regression", 1))
>>> b = Batch(torch.zeros(2, 4), torch.tensor([0, 2]), targets={"a": torch.tensor([0, 2])})
>>> cols = target_columns(b, tasks)
>>> sorted(cols), cols["has/b"].tolist()
(['has/a', 'has/b', 'target/a', 'target/b'], [False, False])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.stream.base import Batch, TaskSpec

__all__ = ["target_columns", "replay_targets", "replay_losses", "target_payload_floats",
           "grouped_task_losses", "output_columns", "logit_matching", "TARGET", "HAS"]

TARGET, HAS = "target/", "has/"


def target_columns(batch: Batch, tasks: Sequence[TaskSpec]) -> dict[str, Tensor]:
    """The buffer payload of a stream batch: each task's target (zeros where it has none)
    and whether it has one. Empty for a single-target batch."""
    if batch.targets is None or not tasks:
        return {}
    n, dev = len(batch), batch.y.device
    cols: dict[str, Tensor] = {}
    for t in tasks:
        v = batch.targets.get(t.name)
        if v is None:
            shape = (n,) if t.kind == "classification" or t.size == 1 else (n, t.size)
            dtype = torch.long if t.kind == "classification" else batch.x.dtype
            cols[TARGET + t.name] = torch.zeros(shape, dtype=dtype, device=dev)
            cols[HAS + t.name] = torch.zeros(n, dtype=torch.bool, device=dev)
        else:
            cols[TARGET + t.name] = v
            cols[HAS + t.name] = torch.ones(n, dtype=torch.bool, device=dev)
    return cols


def replay_targets(extras: Mapping[str, Tensor] | None) -> tuple[dict[str, Tensor],
                                                                 dict[str, Tensor]]:
    """``(targets, present)`` by task name, read back from a replayed batch's extras."""
    if not extras:
        return {}, {}
    targets = {k[len(TARGET):]: v for k, v in extras.items() if k.startswith(TARGET)}
    present = {k[len(HAS):]: v for k, v in extras.items() if k.startswith(HAS)}
    return targets, present


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    w = mask.to(values.dtype)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def replay_losses(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                  present: Mapping[str, Tensor], tasks: Sequence[TaskSpec]) -> dict[str, Tensor]:
    """Each task's loss on replayed rows: the mean over the rows carrying its target.

    >>> from lifelong.stream.base import TaskSpec
    >>> out = {"r": torch.tensor([[1.0], [3.0]])}
    >>> tg, has = {"r": torch.tensor([0.0, 0.0])}, {"r": torch.tensor([True, False])}
    >>> float(replay_losses(out, tg, has, [TaskSpec("r", "regression", 1)])["r"])
    1.0
    """
    return {t.name: _masked_mean(_row_losses(t, outputs[t.name], targets[t.name]), present[t.name])
            for t in tasks}


def _row_losses(task: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
    """One task's loss per row: cross-entropy, or the squared error averaged over outputs."""
    if task.kind == "classification":
        return F.cross_entropy(output, target, reduction="none")
    return (output.reshape(target.shape) - target).square().reshape(len(target), -1).mean(1)


def target_payload_floats(tasks: Sequence[TaskSpec]) -> int:
    """Float32-equivalents per stored sample of the target columns (for ``check_fits``):
    an int64 class index is two, a regression target ``size``, a presence flag one."""
    return sum((2 if t.kind == "classification" else t.size) + 1 for t in tasks)


def grouped_task_losses(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                        present: Mapping[str, Tensor], tasks: Sequence[TaskSpec],
                        sizes: Sequence[int]) -> Tensor:
    """Per-row scalars whose sum over a group of rows is that group's ``sum_t`` task loss.

    The rows come in contiguous groups of ``sizes`` (GEM's past tasks' memories);
    row ``n`` of group ``k`` gets ``sum_t loss_t[n] has_t[n] / #{rows of k with t}``,
    so that summing a group's rows gives the sum over tasks of :func:`replay_losses`
    on that group alone (what one backward per group would differentiate).
    """
    dev = next(iter(outputs.values())).device
    group = torch.repeat_interleave(torch.arange(len(sizes), device=dev),
                                    torch.as_tensor(list(sizes), device=dev))
    total: Tensor | None = None
    for t in tasks:
        per = _row_losses(t, outputs[t.name], targets[t.name])
        w = present[t.name].to(per.dtype)
        counts = torch.zeros(len(sizes), dtype=per.dtype, device=dev).index_add_(0, group, w)
        term = per * w / counts.clamp_min(1.0)[group]
        total = term if total is None else total + term
    assert total is not None
    return total


def output_columns(outputs: Mapping[str, Tensor], tasks: Sequence[TaskSpec],
                   n: int) -> dict[str, Tensor]:
    """DER's payload on a multi-target stream: each task head's output on the ``n`` stream
    rows, ``logits/<task>`` (zeros, with ``haslogits/<task>`` false, for a task whose head
    has not arrived yet)."""
    cols: dict[str, Tensor] = {}
    ref = next(iter(outputs.values()))
    for t in tasks:
        o = outputs.get(t.name)
        if o is None:
            cols[LOGITS + t.name] = ref.new_zeros((n, t.size))
            cols[HAS_LOGITS + t.name] = torch.zeros(n, dtype=torch.bool, device=ref.device)
        else:
            cols[LOGITS + t.name] = o[:n].detach().reshape(n, t.size)
            cols[HAS_LOGITS + t.name] = torch.ones(n, dtype=torch.bool, device=ref.device)
    return cols


def logit_matching(outputs: Mapping[str, Tensor], extras: Mapping[str, Tensor],
                   tasks: Sequence[TaskSpec]) -> Tensor:
    """DER's term on a multi-output model: ``sum_t`` the mean squared error between each
    head's output and the output stored for it, over the rows that stored one."""
    total: Tensor | None = None
    for t in tasks:
        o = outputs[t.name]
        z = extras[LOGITS + t.name]
        per = (o.reshape(z.shape) - z).square().mean(1)
        term = _masked_mean(per, extras[HAS_LOGITS + t.name])
        total = term if total is None else total + term
    assert total is not None
    return total


LOGITS, HAS_LOGITS = "logits/", "haslogits/"
