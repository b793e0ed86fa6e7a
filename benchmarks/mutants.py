"""Mutation harness: semantic mutations of the methods and metrics; the tests must kill each.

Every entry of :data:`MUTANTS` is one meaning-changing edit (a dropped term,
an ignored hyper-parameter, a flipped comparison, the wrong row or column)
of one file of the package, and the tests that should catch it. For each,
the harness copies ``lifelong/`` to a temporary directory, applies that one
edit (its ``old`` text must occur exactly once), and runs the named tests
with ``python -m pytest -x -q`` against the copy (``PYTHONPATH`` points at
it). A mutant is *killed* when a test fails (pytest exit status 1), *survived*
when they pass; a collection error or a timeout proves nothing and is
listed with the survivors.
``tests/test_mutants.py`` checks, in the normal suite, that every ``old``
text still occurs exactly once in the current code, so the catalogue cannot
rot silently when the code changes.

Usage: ``python benchmarks/mutants.py [-k SUBSTRING] [--jobs N]``. Prints a
table and, as its last line, ``{"mutants": N, "killed": K, "survived": [ids]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str          # path inside the repository
    old: str           # exact text, occurring once
    new: str
    tests: tuple[str, ...]  # pytest node ids or files
    why: str = ""


M = Mutant
T_FID = "tests/test_fidelity.py"
T_MTCL = "tests/test_multitask_continual.py"
MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------ metrics
    M("forgetting-diagonal", "lifelong/metrics.py",
      "max(R[l][j] for l in range(T - 1)) - R[-1][j]", "R[j][j] - R[-1][j]",
      (f"{T_FID}::test_forgetting_takes_the_best_earlier_row_not_the_diagonal",),
      "forgetting against R[j][j] instead of the best earlier accuracy"),
    M("fwt-previous-baseline", "lifelong/metrics.py",
      "R[j - 1][j] - baseline[j]", "R[j - 1][j] - baseline[j - 1]",
      (f"{T_FID}::test_fwt_uses_the_baseline_of_the_same_column",), "FWT against b[j-1]"),
    M("bwt-first-row", "lifelong/metrics.py",
      "R[-1][j] - R[j][j] for j in range(T - 1)", "R[-1][j] - R[0][j] for j in range(T - 1)",
      ("tests/test_metrics.py",), "BWT against the first row instead of the diagonal"),
    M("acc-all-rows", "lifelong/metrics.py",
      "return sum(R[-1]) / len(R[-1])", "return sum(map(sum, R)) / sum(map(len, R))",
      ("tests/test_metrics.py",), "ACC averaged over every row, not the last"),
    M("detection-tolerance-inclusive", "lifelong/metrics.py",
      "if i < 0 or d - cps[i] > tolerance:", "if i < 0 or d - cps[i] >= tolerance:",
      (f"{T_FID}::test_a_detection_exactly_at_the_tolerance_counts",),
      "a detection exactly at the tolerance counted as false alarm"),
    M("task-il-unmasked", "lifelong/learner.py",
      "correct_t += ((logits + mask).argmax(1) == y).sum()",
      "correct_t += (logits.argmax(1) == y).sum()",
      (f"{T_FID}::test_task_il_accuracy_masks_the_logits",), "Task-IL without the logit mask"),
    # ------------------------------------------------------------------ prequential
    M("prequential-after-update", "lifelong/plugins/evaluation/prequential.py",
      "hit = (prequential_logits(step).argmax(1) == step.batch.y).sum()",
      "hit = (learner.predict(step.batch).argmax(1) == step.batch.y).sum()",
      ("tests/test_predictions.py",), "scored by the model after the update"),
    M("prequential-train-mode", "lifelong/learner.py",
      "        if self._eval_stream:  # test-then-train",
      "        if False:  # test-then-train",
      ("tests/test_predictions.py",), "train-mode logits (dropout, batch norm) scored"),
    M("dropout-trusted", "lifelong/predictions.py",
      "nn.LayerNorm, nn.GroupNorm, nn.Embedding,",
      "nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.Dropout,",
      ("tests/test_predictions.py",), "dropout counted as mode-free"),
    M("prequential-window-size", "lifelong/plugins/evaluation/prequential.py",
      "if self._steps % self.window == 0:", "if self._steps % (self.window + 1) == 0:",
      (f"{T_FID}::test_prequential_windows_are_window_batches",), "windows one batch too long"),
    M("error-signal-is-accuracy", "lifelong/plugins/boundaries/_signal.py",
      "wrong = prequential_logits(step).argmax(1) != step.batch.y",
      "wrong = prequential_logits(step).argmax(1) == step.batch.y",
      ("tests/test_predictions.py::test_error_signal_uses_the_eval_mode_predictions",),
      "the error signal is the accuracy"),
    # ------------------------------------------------------------------ EWC
    M("ewc-latest-only", "lifelong/plugins/regularization/ewc.py",
      "self.weight_[name], self.center_[name], self.const_ = merge_quadratic(\n"
      "                    w, c, self.const_, f, theta)",
      "self.weight_[name], self.center_[name] = f, theta.clone()",
      (f"{T_FID}::test_ewc_keeps_one_penalty_per_experience",),
      "EWC keeps only the latest Fisher and anchor"),
    M("ewc-no-half", "lifelong/plugins/regularization/ewc.py",
      "return {self.name: 0.5 * self.ewc_lambda * penalty}",
      "return {self.name: self.ewc_lambda * penalty}",
      (f"{T_FID}::test_ewc_keeps_one_penalty_per_experience",), "EWC without lambda / 2"),
    M("online-ewc-gamma-decay", "lifelong/plugins/regularization/ewc.py",
      "self.weight_[name] = self.gamma * w + f", "self.weight_[name] = w + f",
      (f"{T_FID}::test_online_ewc_decays_with_gamma",), "online EWC ignores gamma in F*"),
    M("online-ewc-gamma-penalty", "lifelong/plugins/regularization/ewc.py",
      "penalty = self.gamma * penalty", "penalty = penalty",
      (f"{T_FID}::test_online_ewc_decays_with_gamma",), "online EWC ignores gamma in the penalty"),
    M("ewc-fisher-abs", "lifelong/plugins/regularization/ewc.py",
      "fisher[name] += g.square().sum(0)", "fisher[name] += g.abs().sum(0)",
      ("tests/test_per_sample.py::test_fisher_one_backward_equals_vmap",),
      "Fisher of |g| instead of g^2 (the vmap reference path)"),
    M("fisher-fast-weights-p-squared", "lifelong/plugins/regularization/ewc.py",
      "return [probs[:, c].sqrt() * logp[:, c] for c in range(logp.shape[1])]",
      "return [probs[:, c] * logp[:, c] for c in range(logp.shape[1])]",
      ("tests/test_regularization.py::test_fisher_of_logistic_regression_matches_the_hand_computation",),
      "exact Fisher weighting each class by p^2 instead of p (the one-backward path)"),
    M("per-sample-reduce-after-sum", "lifelong/per_sample.py",
      'out = {"weight": red(d).T @ red(a)}', 'out = {"weight": red(d.T @ a)}',
      ("tests/test_regularization.py::test_fisher_of_logistic_regression_matches_the_hand_computation",),
      "square of the batch gradient instead of the sum of squared per-sample gradients"),
    M("ewc-merge-constant", "lifelong/plugins/regularization/ewc.py",
      "const = const + (weight * share * (center - new_center).square()).sum()",
      "const = const",
      ("lifelong/plugins/regularization/ewc.py",), "the merged quadratic loses its constant"),
    # ------------------------------------------------------------------ MAS
    M("mas-replace", "lifelong/plugins/regularization/mas.py",
      "self.importance_[name] = old + omega", "self.importance_[name] = omega",
      (f"{T_FID}::test_mas_importance_accumulates",), "MAS replaces its importance"),
    M("mas-no-abs", "lifelong/plugins/regularization/mas.py",
      "out[name] += g.abs().sum(0)", "out[name] += g.sum(0)",
      ("tests/test_per_sample.py::test_mas_one_backward_equals_vmap",),
      "signed gradients averaged (the vmap reference path)"),
    M("mas-norm-not-squared", "lifelong/plugins/regularization/mas.py",
      "return f(ps, xi, ti).square().sum()", "return f(ps, xi, ti).square().sum().sqrt()",
      ("tests/test_per_sample.py::test_mas_one_backward_equals_vmap",),
      "the l2 norm instead of its square (the vmap reference path)"),
    M("mas-fast-norm-not-squared", "lifelong/plugins/regularization/mas.py",
      "lambda logits: [logits.square().sum(1)]", "lambda logits: [logits.square().sum(1).sqrt()]",
      ("tests/test_regularization.py::test_mas_importance_of_a_linear_model_matches_the_hand_computation",),
      "the l2 norm instead of its square (the one-backward path)"),
    M("mas-fast-squares", "lifelong/plugins/regularization/mas.py",
      'reduce="abs")', 'reduce="square")',
      ("tests/test_regularization.py::test_mas_importance_of_a_linear_model_matches_the_hand_computation",),
      "MAS sums squared per-sample gradients (a Fisher) instead of absolute ones"),
    M("mas-lambda-ignored", "lifelong/plugins/regularization/mas.py",
      'return {"mas": self.mas_lambda * quadratic_penalty(',
      'return {"mas": 1.0 * quadratic_penalty(',
      (f"{T_FID}::test_mas_importance_accumulates",), "MAS ignores mas_lambda"),
    M("sgd-bound-loose", "lifelong/plugins/regularization/_common.py",
      "if ratio >= 1 and", "if ratio >= 2 and",
      ("lifelong/plugins/regularization/_common.py",), "the stability bound off by a factor 2"),
    # ------------------------------------------------------------------ SI
    M("si-omega-not-reset", "lifelong/plugins/regularization/si.py",
      "                self.omega_[name].zero_()", "                self.omega_[name].mul_(1.0)",
      (f"{T_FID}::test_si_resets_its_path_integral_and_uses_c",),
      "SI does not reset omega after a task"),
    M("si-xi-ignored", "lifelong/plugins/regularization/si.py",
      "omega / (delta.square() + xi)", "omega / (delta.square() + 0.1)",
      ("lifelong/plugins/regularization/si.py",), "SI ignores its damping xi"),
    M("si-c-ignored", "lifelong/plugins/regularization/si.py",
      "cached = self._slopes[n] = (w, (2.0 * self.c) * w)",
      "cached = self._slopes[n] = (w, (2.0 * 0.1) * w)",
      (f"{T_FID}::test_si_resets_its_path_integral_and_uses_c",), "SI ignores c"),
    M("si-surrogate-sign", "lifelong/plugins/regularization/si.py",
      "fit_to(out, slope.shape, name).sub_(given)",
      "fit_to(out, slope.shape, name).add_(given)",
      (f"{T_FID}::test_si_path_integral_excludes_its_own_penalty",),
      "SI adds its own penalty gradient to the path integral"),
    M("si-penalty-gradient-halved", "lifelong/plugins/regularization/si.py",
      "[2.0 * weights[n] for n in names]", "[weights[n] for n in names]",
      ("tests/test_regularization.py::test_si_penalty_value_and_gradient_equal_autograd_through_the_quadratic_penalty",),
      "SI's written-out penalty gradient drops the factor 2"),
    M("si-surrogate-sign-batched", "lifelong/plugins/regularization/si.py",
      "torch._foreach_sub_(bufs, given)", "torch._foreach_add_(bufs, given)",
      (f"{T_FID}::test_si_path_integral_excludes_the_gradient_its_penalty_gave_autograd",),
      "SI adds, not removes, the gradient its penalty gave autograd (the batched path)"),
    M("si-stale-task-gradient", "lifelong/plugins/regularization/si.py",
      "torch._foreach_copy_(bufs, grads)", "torch._foreach_zero_(bufs)",
      (f"{T_FID}::test_si_path_integral_excludes_the_gradient_its_penalty_gave_autograd",),
      "SI's reused gradient buffers are not refreshed"),
    M("si-path-integral-sign", "lifelong/plugins/regularization/si.py",
      "torch._foreach_addcmul_(om, g, pv)", "torch._foreach_addcmul_(om, g, pv, value=-1.0)",
      ("tests/test_regularization.py::test_si_path_integral_and_consolidation_on_a_hand_example",),
      "SI's path integral adds g * delta instead of subtracting it"),
    M("si-backward-unscaled", "lifelong/plugins/regularization/si.py",
      "grads = torch._foreach_mul(grads, g)", "grads = list(grads)",
      (f"{T_FID}::test_si_path_integral_excludes_the_gradient_its_penalty_gave_autograd",),
      "SI's penalty ignores the upstream gradient in its backward"),
    M("si-value-doubled", "lifelong/plugins/regularization/si.py",
      ".sum().mul_(0.5)", ".sum()",
      ("tests/test_regularization.py::test_si_penalty_value_and_gradient_equal_autograd_through_the_quadratic_penalty",),
      "SI's penalty value is twice the quadratic penalty"),
    M("params-cache-survives-boundary", "lifelong/learner.py",
      "        self.hooks.after_experience(self, experience)\n        self._named_params = None",
      "        self.hooks.after_experience(self, experience)",
      ("tests/test_learner.py::test_trainable_parameters_follow_the_model_through_freezing_surgery_and_growth",),
      "the cached parameter map outlives layers rebuilt at a boundary"),
    M("params-cache-ignores-new-model", "lifelong/learner.py",
      "if named is None or self._named_of is not self.model:", "if named is None:",
      ("tests/test_learner.py::test_trainable_parameters_follow_the_model_through_freezing_surgery_and_growth",),
      "the cached parameter map outlives a model assigned directly"),
    # ------------------------------------------------------------------ threads, optimizer
    M("threads-ignore-plugin-rows", "lifelong/threads.py",
      "        total += n\n", "        total += 0\n",
      ("tests/test_threads.py::test_plugins_rows_count_and_gem_on_an_mlp_gets_threads_the_batch_alone_would_not",),
      "the threads rule counts the stream batch only, not the rows plugins add"),
    M("threads-ignore-idle-cores", "lifelong/threads.py",
      "n = max(1, min(want, round(free)))", "n = want",
      ("tests/test_threads.py::test_idle_cores_cap_the_count_and_are_measured_only_when_more_than_one_thread_is_wanted",),
      "the threads rule takes cores other programs are using"),
    M("threads-resume-rederives", "lifelong/threads.py",
      "if resumed is None or min(cores, resumed) == n:", "if True:",
      ("tests/test_threads.py::test_resume_runs_with_the_count_the_checkpoint_recorded",),
      "a resumed auto run re-derives its thread count instead of keeping the checkpoint's"),
    M("fused-sgd-with-momentum", "lifelong/learner.py",
      'if spec == "sgd" and self.momentum == 0 and _fusable(params):',
      'if spec == "sgd" and _fusable(params):',
      ("tests/test_learner.py::test_plain_sgd_runs_fused_with_the_per_tensor_loops_bits_and_the_others_run_unfused",),
      "torch's fused SGD with momentum (fails on a parameter whose first gradient comes late)"),
    M("derpp-shared-draws-twice", "lifelong/plugins/replay/der.py",
      "if self.shared_batch:  # Avalanche's DER with beta > 0: one draw for both terms",
      "if False:",
      ("tests/test_replay.py::test_derpp_shared_batch_uses_one_draw_for_both_terms_as_avalanche_does",),
      "DER++ with shared_batch still draws two replay batches"),
    # ------------------------------------------------------------------ LwF
    M("lwf-temperature-ignored", "lifelong/plugins/regularization/lwf.py",
      "self._units,\n                                                 self.temperature)",
      "self._units, 1.0)",
      (f"{T_FID}::test_lwf_term_uses_temperature_and_lambda",), "LwF ignores its temperature"),
    M("lwf-multihead-temperature-ignored", "lifelong/plugins/regularization/lwf.py",
      "loss = distillation_loss(step.stream_logits, old, self.heads_, self.temperature)",
      "loss = distillation_loss(step.stream_logits, old, self.heads_, 1.0)",
      (f"{T_FID}::test_lwf_multihead_term_uses_temperature",),
      "LwF with several heads ignores its temperature"),
    M("lwf-lambda-ignored", "lifelong/plugins/regularization/lwf.py",
      'return {"lwf": self.lwf_lambda * loss}', 'return {"lwf": loss}',
      (f"{T_FID}::test_lwf_term_uses_temperature_and_lambda",), "LwF ignores lwf_lambda"),
    M("lwf-kl-reversed", "lifelong/plugins/regularization/lwf.py",
      "return (lp_old.exp() * (lp_old - lp_new)).sum(1).mean()",
      "return (lp_new.exp() * (lp_new - lp_old)).sum(1).mean()",
      (f"{T_FID}::test_lwf_term_uses_temperature_and_lambda",), "KL(new || old), one head"),
    M("lwf-grouped-kl-reversed", "lifelong/plugins/regularization/lwf.py",
      "kl = torch.where(used, lp_old.exp() * (lp_old - lp_new), 0.0)",
      "kl = torch.where(used, lp_new.exp() * (lp_new - lp_old), 0.0)",
      ("tests/test_regularization.py::test_lwf_loss_is_zero_when_new_equals_old_and_is_the_kl_per_head",),
      "KL(new || old), several heads"),
    # ------------------------------------------------------------------ replay
    M("gem-strength-ignored", "lifelong/plugins/replay/gem.py",
      "gem_project(g, G, self.memory_strength, self.eps, Gg=Gg)",
      "gem_project(g, G, 0.0, self.eps, Gg=Gg)",
      (f"{T_FID}::test_gem_uses_memory_strength",), "GEM ignores memory_strength"),
    M("gem-any-to-all", "lifelong/plugins/replay/gem.py",
      "(Gg < 0).any()]).tolist()", "(Gg < 0).all()]).tolist()",
      (f"{T_FID}::test_gem_projects_when_any_constraint_is_violated",),
      "GEM projects only when every constraint is violated"),
    M("agem-sign", "lifelong/plugins/replay/agem.py",
      "(dot < 0) & (ref_sq > 0)", "(dot > 0) & (ref_sq > 0)",
      ("tests/test_replay.py::test_agem_projection_formula",), "A-GEM projects agreeing gradients"),
    M("agem-cpu-skips-conflicts", "lifelong/plugins/replay/agem.py",
      "not float(g @ g_ref) < 0", "not float(g @ g_ref) > 0",
      ("tests/test_replay.py",), "A-GEM on CPU leaves conflicting updates unprojected"),
    M("er-batch-size-ignored", "lifelong/plugins/replay/er.py",
      "return self.buffer_.sample(self.batch_size or step.n_stream)",
      "return self.buffer_.sample(step.n_stream)",
      (f"{T_FID}::test_er_replays_batch_size_samples",), "ER ignores batch_size"),
    M("compile-unused", "lifelong/learner.py",
      "            logits = self._train_forward(x, task)\n",
      "            logits = self.forward(x, task)\n",
      ("tests/test_compiled.py::test_compile_routes_the_training_forward_through_the_compiler",),
      "train.compile accepted but the step runs eager"),
    M("whole-step-drops-weight-decay", "lifelong/compiled.py",
      "d = g.add(p, alpha=decay) if decay else g", "d = g",
      ("tests/test_compiled.py::test_the_whole_step_computes_the_eager_sgd_step_with_momentum_and_decay",),
      "the compiled update ignores SGD's weight decay"),
    M("whole-step-momentum-not-kept", "lifelong/compiled.py",
      "buf.copy_(torch.where(ok, buf * momentum + d, buf))",
      "buf = torch.where(ok, buf * momentum + d, buf)",
      ("tests/test_compiled.py::test_the_whole_step_computes_the_eager_sgd_step_with_momentum_and_decay",),
      "the compiled update uses momentum but never writes the buffer back"),
    M("whole-step-drops-plugin-terms", "lifelong/compiled.py",
      "            for plugin in plugins:\n", "            for plugin in plugins[:0]:\n",
      ("tests/test_compiled.py::test_the_whole_step_computes_the_eager_sgd_step_with_momentum_and_decay",),
      "the compiled step trains on the stream loss alone, without ER's or DER's terms"),
    M("whole-step-updates-on-nan", "lifelong/compiled.py",
      "p.sub_(torch.where(ok, d * lr, 0.0))", "p.sub_(d * lr)",
      ("tests/test_compiled.py::test_a_non_finite_loss_in_the_whole_step_updates_nothing",),
      "a non-finite loss still updates the weights inside the compiled graph"),
    M("whole-step-compiles-one-off-shapes", "lifelong/compiled.py",
      "        if seen < 2:\n", "        if seen < 1:\n",
      ("tests/test_compiled.py::test_one_off_step_shapes_run_eager_and_steady_ones_compiled",),
      "every step shape compiles at its first sight (a filling buffer compiles at every step)"),
    M("whole-step-ignores-before-update", "lifelong/compiled.py",
      '    for hook, what in (("before_update", "changes the gradients before the update"),',
      '    for hook, what in (("_none", "changes the gradients before the update"),',
      ("tests/test_compiled.py::test_compile_routes_the_training_forward_through_the_compiler",),
      "A-GEM's gradient projection is skipped by the compiled whole step"),
    M("whole-step-adam-no-bias-correction", "lifelong/compiled.py",
      "size = lr / (1 - beta1 ** t64)", "size = lr",
      ("tests/test_compiled.py::test_the_whole_step_computes_the_eager_adam_step",),
      "the compiled Adam update without the first moment's bias correction"),
    M("whole-step-adamw-decay-coupled", "lifelong/compiled.py",
      'd = g.add(p, alpha=decay) if decay and kind == "adam" else g',
      "d = g.add(p, alpha=decay) if decay else g",
      ("tests/test_compiled.py::test_the_whole_step_computes_the_eager_adam_step",),
      "AdamW's decoupled weight decay also added to the gradient, as Adam's L2"),
    M("whole-step-adam-step-count-frozen", "lifelong/compiled.py",
      "t.copy_(torch.where(ok, t1, t))", "t.copy_(t)",
      ("tests/test_compiled.py::test_the_whole_step_computes_the_eager_adam_step",),
      "the compiled Adam step never advances the optimizer's step count"),
    M("whole-step-failure-forgotten", "lifelong/compiled.py",
      "self.shapes, self.seen, self.failed = other.shapes, other.seen, other.failed",
      "self.shapes, self.seen, self.failed = other.shapes, other.seen, False",
      ("tests/test_compiled.py::test_a_resumed_run_does_not_retry_a_whole_step_that_failed",),
      "a resumed run retries a compilation the run it continues had given up"),
    M("whole-step-history-not-checkpointed", "lifelong/learner.py",
      '**({"compile_shapes": self._step_history.state_dict()} if self.compile else {})},',
      "},",
      ("tests/test_compiled.py::test_the_whole_step_resumes_exactly",),
      "a resumed compiled run forgets which step shapes ran compiled"),
    M("compile-failure-raises", "lifelong/compiled.py",
      "            self.eager = True\n            return self.model(*args)",
      "            raise",
      ("tests/test_compiled.py::test_a_compiler_failure_trains_eager_and_says_so_once",),
      "a compiler failure stops the run instead of falling back to eager"),
    M("lww-pairwise-first-wins", "lifelong/memory/buffer.py",
      "& _later(n, s.device)).any(1)", "& _later(n, s.device).T).any(1)",
      ("tests/test_memory.py::test_last_writer_wins_small_and_large_batches_match_sequential_writes",),
      "small batches: the first of two samples aimed at one slot wins"),
    M("reservoir-fill-skips-draws", "lifelong/memory/selection.py",
      "        torch.rand((n,), dtype=torch.float64, generator=buffer.generator, device=buffer.device)\n",
      "",
      ("tests/test_memory.py::test_buffer_reservoir_fast_paths_equal_the_generic_insert",),
      "the filling fast path does not advance the generator as the generic insert does"),
    M("reservoir-off-by-one", "lifelong/memory/selection.py",
      "return torch.minimum((u * (index + 1)).long(), index)",
      "return torch.minimum((u * index).long(), index)",
      (f"{T_FID}::test_reservoir_keeps_each_sample_with_probability_capacity_over_seen",),
      "reservoir draws j from {0..n-1}: the newest sample is kept too rarely"),
    M("der-alpha-ignored", "lifelong/plugins/replay/der.py",
      'return {"der": self.alpha * der_loss(', 'return {"der": 0.2 * der_loss(',
      (f"{T_FID}::test_der_terms_use_alpha_beta_and_stored_logits",), "DER ignores alpha"),
    M("derpp-beta-ignored", "lifelong/plugins/replay/der.py",
      '"derpp_labels": self.beta * F.cross_entropy', '"derpp_labels": F.cross_entropy',
      (f"{T_FID}::test_der_terms_use_alpha_beta_and_stored_logits",), "DER++ ignores beta"),
    M("der-stores-replay-rows", "lifelong/plugins/replay/der.py",
      "logits=step.stream_logits.detach())", "logits=step.logits[-step.n_stream:].detach())",
      (f"{T_FID}::test_der_terms_use_alpha_beta_and_stored_logits",),
      "DER stores the logits of the replay rows"),
    M("dgr-generator-without-replay", "lifelong/plugins/replay/generative_replay.py",
      "x_old = None if replay is None else replay.x", "x_old = None",
      (f"{T_FID}::test_dgr_generator_trains_on_replayed_inputs",),
      "the generator is trained without the replayed inputs"),
    M("dgr-ratio-flipped", "lifelong/plugins/replay/generative_replay.py",
      'return {"generative_replay": (1.0 - r) * (replayed - step.losses["ce"])}',
      'return {"generative_replay": r * (replayed - step.losses["ce"])}',
      ("tests/test_generative_replay.py::test_solver_loss_is_the_papers_mix_of_real_and_replayed",),
      "replay weighted r instead of 1 - r"),
    # ------------------------------------------------------------------ evaluation
    M("anytime-every-off-by-one", "lifelong/plugins/evaluation/anytime.py",
      "if (step.index + 1) % self.every:", "if step.index % self.every:",
      (f"{T_FID}::test_anytime_evaluates_the_seen_experiences_every_n_batches",),
      "anytime accuracy after batch 1, every+1, ..."),
    M("anytime-all-test-sets", "lifelong/plugins/evaluation/anytime.py",
      "seen = stream.test[: learner.experience_index + 1]", "seen = stream.test",
      (f"{T_FID}::test_anytime_evaluates_the_seen_experiences_every_n_batches",),
      "anytime accuracy averaged over experiences not seen yet"),
    M("accuracy-matrix-task-il-row", "lifelong/plugins/evaluation/accuracy_matrix.py",
      "self.rows_task_il_.append(list(report.task_il))",
      "self.rows_task_il_.append(list(report.class_il))",
      (f"{T_FID}::test_accuracy_matrix_keeps_class_il_and_task_il_rows_apart",),
      "the Task-IL matrix filled with Class-IL rows"),
    # ------------------------------------------------------------------ boundaries
    M("adwin-delta-ignored", "lifelong/plugins/boundaries/adwin.py",
      "drift.ADWIN(delta=self.delta,", "drift.ADWIN(delta=0.002,",
      (f"{T_FID}::test_detectors_pass_their_parameters_to_river",), "ADWIN ignores delta"),
    M("kswin-alpha-ignored", "lifelong/plugins/boundaries/kswin.py",
      "drift.KSWIN(alpha=self.alpha,", "drift.KSWIN(alpha=0.005,",
      (f"{T_FID}::test_detectors_pass_their_parameters_to_river",), "KSWIN ignores alpha"),
    M("every-n-off-by-one", "lifelong/plugins/boundaries/every_n.py",
      "return (step.index + 1) % self.every == 0", "return step.index % self.every == 0",
      ("lifelong/plugins/boundaries/every_n.py",), "a boundary after batch 1, every+1, ..."),
    M("page-hinkley-threshold-ignored", "lifelong/plugins/boundaries/page_hinkley.py",
      "threshold=self.threshold, alpha=self.alpha", "threshold=50.0, alpha=self.alpha",
      ("lifelong/plugins/boundaries/page_hinkley.py", "tests/test_page_hinkley.py"),
      "Page-Hinkley ignores its threshold"),
    M("plateau-variance-ignored", "lifelong/plugins/boundaries/plateau.py",
      "if self.peak and mean < self.mean_threshold and var < self.variance_threshold:",
      "if self.peak and mean < self.mean_threshold:",
      (f"{T_FID}::test_plateau_needs_a_low_variance_window_too",),
      "the plateau rule ignores the variance"),
    # ------------------------------------------------------------------ transfer
    M("width-augment-no-normalisation", "lifelong/plugins/transfer/width_augment.py",
      "unit = F.normalize(h.flatten(1), p=2.0, dim=1, eps=EPS).view_as(h)", "unit = h",
      ("tests/test_width_augment.py::test_normalize_and_scale_against_a_hand_computation",),
      "WA-CNN scales the activations without L2-normalising them"),
    M("width-augment-scale-dropped", "lifelong/plugins/transfer/width_augment.py",
      "return unit * gamma.view(1, -1, *([1] * (h.dim() - 2)))", "return unit",
      ("tests/test_width_augment.py::test_normalize_and_scale_against_a_hand_computation",),
      "WA-CNN normalises without the learned scale"),
    M("width-augment-new-group-unnormalised", "lifelong/plugins/transfer/width_augment.py",
      "return normalize_and_scale(old, self.scale), normalize_and_scale(new, self.scale_plus)",
      "return normalize_and_scale(old, self.scale), new",
      ("tests/test_width_augment.py::"
       "test_widening_keeps_the_pretrained_units_and_normalises_both_groups",),
      "only the pre-trained group is normalised and scaled"),
    M("width-augment-scale-init-ignored", "lifelong/plugins/transfer/width_augment.py",
      "self.scale = nn.Parameter(torch.full((n_old,), float(scale_init)))",
      "self.scale = nn.Parameter(torch.ones(n_old))",
      ("tests/test_width_augment.py::"
       "test_widening_keeps_the_pretrained_units_and_normalises_both_groups",),
      "the pre-trained group's scales start at 1, not scale_init"),
    M("width-augment-not-regrown", "lifelong/plugins/transfer/width_augment.py",
      "        if not self.widened_:\n            return None\n        return self._build(",
      "        if True:\n            return None\n        return self._build(",
      ("tests/test_width_augment.py::test_kill_and_resume_after_widening_is_bit_identical",),
      "a checkpoint of a widened model is loaded into the plain one"),
    M("width-augment-lr-mult-ignored", "lifelong/plugins/transfer/width_augment.py",
      "if self.pretrained_lr_mult == 1:", "if True:",
      ("tests/test_width_augment.py::"
       "test_lr_multipliers_pretrained_body_slower_new_parts_at_the_learners_rate",),
      "the pre-trained layers train at the new parts' rate"),
    M("width-augment-dead-new-units", "lifelong/plugins/transfer/width_augment.py",
      "w.copy_(_uniform(tuple(w.shape), fan_in, gen))", "w.zero_()",
      ("tests/test_width_augment.py::test_new_units_are_seeded_like_a_fresh_linear_layer",),
      "the new units' incoming weights start at zero"),
    # ------------------------------------------------------------------ multi-target continual
    M("mt-fisher-first-head", "lifelong/plugins/regularization/ewc.py",
      "    picks: list[tuple[str, Tensor]] = []\n    for t in tasks:",
      "    picks: list[tuple[str, Tensor]] = []\n    for t in tasks[:1]:",
      (f"{T_MTCL}::test_ewc_with_every_heads_fisher_reduces_forgetting_of_every_task",),
      "the multi-task Fisher ignores every head but the first"),
    M("mt-replay-first-task", "lifelong/plugins/replay/_targets.py",
      "present[t.name])\n            for t in tasks}",
      "present[t.name])\n            for t in tasks[:1]}",
      (f"{T_MTCL}::test_er_replaying_every_tasks_target_reduces_forgetting_of_every_task",),
      "replayed samples enter the first task's loss only"),
    M("mt-mas-first-head", "lifelong/plugins/regularization/mas.py",
      "                        for h in heads]).sum(0)",
      "                        for h in heads[:1]]).sum(0)",
      (f"{T_MTCL}::test_multi_head_mas_is_the_sensitivity_of_the_summed_squared_norms",),
      "MAS's multi-head importance from the first head's norm only"),
    M("mt-prequential-train-forward", "lifelong/learner.py",
      "                step.eval_logits = next((step.eval_logits[t.name] for t in self._tasks",
      "                step.eval_logits = None and next((step.eval_logits[t.name] for t in "
      "self._tasks",
      (f"{T_MTCL}::test_multi_target_prequential_scores_eval_mode_predictions_before_the_update",),
      "multi-target prequential scores the train-mode forward"),
    M("mt-heads-reinitialized", "lifelong/multitask.py",
      "        if t.name in heads:\n            continue",
      "        if t.name in heads and t.name.startswith('?'):\n            continue",
      (f"{T_MTCL}::test_a_new_tasks_head_grows_at_its_experience_and_is_scored_from_then_on",),
      "a head the model has is re-initialized when a task arrives"),
)


def apply(mutant: Mutant, root: Path) -> None:
    path = root / mutant.file
    text = path.read_text()
    n = text.count(mutant.old)
    if n != 1:
        raise SystemExit(f"mutant {mutant.id}: old text occurs {n} times in {mutant.file}")
    path.write_text(text.replace(mutant.old, mutant.new))


def run_one(mutant: Mutant, timeout: float) -> tuple[str, float, str]:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.id}-") as tmp:
        copy = Path(tmp)
        for tree in ("lifelong", "tests"):
            shutil.copytree(ROOT / tree, copy / tree, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md", "CONTRIBUTING.md"):
            shutil.copy(ROOT / name, copy / name)
        apply(mutant, copy)
        env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        t0 = time.perf_counter()
        try:  # run inside the copy: nothing of the real tree is importable
            out = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", *mutant.tests],
                                 cwd=copy, env=env, capture_output=True, text=True,
                                 timeout=timeout)
            # 1: a test failed (killed); 0: all passed (survived); anything else (collection
            # error, node not found) proves nothing and counts as not killed
            verdict = {0: "survived", 1: "killed"}.get(out.returncode, "error")
            tail = (out.stdout.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            verdict, tail = "timeout", "timeout"
        return verdict, time.perf_counter() - t0, tail


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="only mutants whose id contains this")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if args.k in m.id]
    for m in chosen:  # fail fast on a stale catalogue
        apply(m, _Dry(ROOT))
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda m: run_one(m, args.timeout), chosen))
    print(f"{'mutant':<34} {'file':<46} {'verdict':<9} {'s':>6}")
    for m, (verdict, secs, _tail) in zip(chosen, results):
        print(f"{m.id:<34} {m.file.removeprefix('lifelong/'):<46} {verdict:<9} {secs:6.1f}")
    survived = [m.id for m, (v, _, _) in zip(chosen, results) if v != "killed"]
    print(json.dumps({"mutants": len(chosen), "killed": len(chosen) - len(survived),
                      "survived": survived}))


class _Dry:
    """A root whose files are read but never written (the up-front catalogue check)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __truediv__(self, rel: str) -> _DryPath:
        return _DryPath(self.root / rel)


class _DryPath:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read_text(self) -> str:
        return self.path.read_text()

    def write_text(self, text: str) -> None:
        pass


if __name__ == "__main__":
    main()
