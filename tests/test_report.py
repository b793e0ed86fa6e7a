"""`lifelong plot` / `lifelong report`: figures of a run and of a grid, the HTML report."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lifelong.cli import main
from lifelong.errors import ConfigError
from lifelong.learner import Learner
from lifelong.report import load_grid, mean_ci
from lifelong.report import plots as P
from lifelong.report.html import render
from lifelong.testing import tiny_stream

sys.path.insert(0, str(Path(__file__).parent))
from _grid_fixture import grid_rows, write_grid  # noqa: E402

RUN = """
seed: 1
device: cpu
stream: {name: blobs, n_experiences: 3, n_per_class: 20}
backbone: {name: mlp, hidden: [16]}
strategy: naive
train: {batch_size: 5, lr: 0.05}
eval: {every: 4}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    (d / "run.yaml").write_text(RUN)
    assert main(["run", str(d / "run.yaml"), "--out", str(d / "o"), "--quiet"]) == 0
    return d / "o"


# ---------------------------------------------------------------------- statistics
def test_mean_ci_is_student_t_by_hand():
    m, h, n = mean_ci([1.0, 2.0, 3.0])          # s = 1, t_{0.975, 2} = 4.3027
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    assert mean_ci([0.4]) == (0.4, None, 1)
    assert mean_ci([]) == (None, None, 0)
    assert mean_ci([1.0, None, float("nan"), 3.0])[0] == 2.0


# ---------------------------------------------------------------------- anytime per experience
def test_anytime_records_each_seen_experience_and_resumes():
    from lifelong.plugins.evaluation import AnytimeAccuracy

    stream = tiny_stream()

    def learner(p):
        torch.manual_seed(0)
        return Learner(nn.Sequential(nn.Flatten(), nn.Linear(16, 6)), plugins=[p], device="cpu",
                       batch_size=8, lr=0.05)

    full = AnytimeAccuracy(every=4)
    learner(full).fit(stream)
    per = full.summary()["anytime_per_experience"]
    assert [at for at, _ in per] == [at for at, _, _ in full.curve_] == [24, 56, 88, 120]
    assert [len(a) for _, a in per] == [1, 2, 2, 3]    # the experiences seen so far
    for (_, accs), (_, mean_c, _) in zip(per, full.curve_):
        assert sum(accs) / len(accs) == pytest.approx(mean_c)  # Class-IL, not Task-IL
    assert any(abs(c - t) > 1e-9 for _, c, t in full.curve_)
    first = AnytimeAccuracy(every=4)
    lr = learner(first)
    lr.fit(stream, stop_after=9)
    second = AnytimeAccuracy(every=4)
    learner(second).fit(stream, state=lr.state_dict())
    assert second.summary() == full.summary()


# ---------------------------------------------------------------------- grid rows
def test_grid_groups_cells_and_keeps_failed_rows(tmp_path):
    g = load_grid(write_grid(tmp_path / "g"))
    assert len(g.cells) == 8 and g.streams == ["split_mnist", "permuted_mnist"]
    er500 = next(c for c in g.cells if c.label == "er mem_size=500" and c.stream == "split_mnist")
    accs = [r["final_avg_accuracy"] for r in grid_rows() if r["strategy"] == "er"
            and r["stream"] == "split_mnist" and r["axes"] == {"strategy.mem_size": 500}]
    mean, h, n = er500.stat("final_avg_accuracy")
    assert n == 3 and mean == pytest.approx(sum(accs) / 3)
    assert h == pytest.approx(mean_ci(accs)[1])
    ewc = next(c for c in g.cells if c.label == "ewc" and c.stream == "split_mnist")
    assert len(ewc.ok) == 3 and len(ewc.failed) == 1


def test_grid_last_write_wins_and_a_cut_last_line_is_skipped(tmp_path):
    rows = grid_rows(streams=("s",), seeds=(0,))
    rerun = dict(rows[-1], status="ok", final_avg_accuracy=0.5, samples_per_second=1.0)
    later_failure = dict(rows[0], status="failed", error="killed")  # an ok row stays
    g = load_grid(write_grid(tmp_path / "g", [*rows, rerun, later_failure],
                             tail='{"hash": "x", "sta'))
    assert g.skipped_lines == [len(rows) + 3]
    assert next(c for c in g.cells if c.strategy == "naive").ok[0]["status"] == "ok"
    ewc = next(c for c in g.cells if c.strategy == "ewc")
    assert not ewc.failed and len(ewc.ok) == 2       # the failed run reran fine: one row
    bad = tmp_path / "bad"
    write_grid(bad, rows)
    text = (bad / "bench_runs.jsonl").read_text().splitlines()
    (bad / "bench_runs.jsonl").write_text("\n".join([text[0], "{oops", *text[1:]]) + "\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_grid(bad)


@pytest.mark.parametrize("case,match", [
    ("missing", "no such file"), ("empty_dir", "not a run directory"),
    ("no_ok", "no finished run"), ("not_json", "not valid JSON"),
])
def test_bad_input_is_one_line(tmp_path, capsys, case, match):
    p = tmp_path / "x"
    if case == "empty_dir":
        p.mkdir()
    elif case == "no_ok":
        write_grid(p, [r for r in grid_rows() if r["status"] == "failed"])
    elif case == "not_json":
        p.mkdir()
        (p / "metrics.json").write_text("{not json")
    assert main(["plot", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err


# ---------------------------------------------------------------------- figures
def test_grid_points_and_bars_are_the_cells_means_and_cis(tmp_path):
    g = load_grid(write_grid(tmp_path / "g"))
    fig = P.figure_accuracy_vs_throughput(g)
    ax = fig.axes[0]
    cells = [c for c in g.cells if c.stream == "split_mnist"]
    assert len(ax.containers) == len(cells)           # one point per cell
    for cont, c in zip(ax.containers, cells):
        line, caps, _ = cont
        x, xh, _ = c.stat("samples_per_second")
        y, yh, _ = c.stat("final_avg_accuracy")
        assert (line.get_xdata()[0], line.get_ydata()[0]) == pytest.approx((x, y))
        ys = sorted(v for cap in caps for v in cap.get_ydata())
        assert ys[0] == pytest.approx(y - yh) and ys[-1] == pytest.approx(y + yh)
        xs = sorted(v for cap in caps for v in cap.get_xdata())
        assert xs[0] == pytest.approx(x - xh) and xs[-1] == pytest.approx(x + xh)
    assert ax.get_xlabel() and ax.get_ylabel() and fig.get_suptitle()
    bars = P.figure_accuracy_forgetting(g)
    acc_ax, forg_ax = bars.axes[:2]
    heights = sorted(round(b.get_height(), 9) for b in forg_ax.patches)
    want = sorted(round(c.stat("avg_forgetting")[0], 9) for c in g.cells)
    assert heights == want
    assert acc_ax.get_ylabel() and forg_ax.get_title()


def test_run_figures_heat_map_values_and_curves(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    fig = P.figure_accuracy_matrix(m)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [f"{v:.2f}" for row in m["accuracy_matrix"] for v in row]
    fig = P.figure_experience_accuracy(m)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    per = m["anytime_per_experience"]
    assert list(lines["experience 1"].get_ydata()) == [a[1] for _, a in per if len(a) > 1]
    assert ax.get_xlabel() == "training samples seen" and ax.get_title()
    fig = P.figure_accuracy_over_time(m)
    labels = {ln.get_label() for ln in fig.axes[0].get_lines()}
    assert {"true boundary", "anytime (held-out, seen experiences)"} <= labels


def test_plot_cli_run_and_grid_write_png_and_svg(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "r")]) == 0
    for name in ("accuracy_matrix", "experience_accuracy", "accuracy_over_time"):
        assert (tmp_path / "r" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (tmp_path / "r" / f"{name}.svg").read_bytes()[:2000]
    grid = write_grid(tmp_path / "g")
    assert main(["plot", str(grid), "--format", "png", "--html"]) == 0
    assert {p.name for p in (grid / "plots").iterdir()} == {
        "accuracy_vs_throughput.png", "accuracy_forgetting.png", "report.html"}
    assert main(["plot", str(run_dir), "--html"]) == 2
    assert main(["plot", str(grid), "--format", "pdf"]) == 2
    capsys.readouterr()


def test_html_report_is_self_contained_with_tables(tmp_path):
    grid = write_grid(tmp_path / "g")
    assert main(["report", str(grid)]) == 0
    text = (grid / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(?!data:)", text)   # nothing fetched
    assert "<script" not in text and "<link" not in text and "@import" not in text
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(imgs) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in imgs)
    g = load_grid(grid)
    c = next(c for c in g.cells if c.label == "er mem_size=500" and c.stream == "split_mnist")
    mean, h, _ = c.stat("final_avg_accuracy")
    assert f'<td class="best">{mean:.3f} <span class="ci">&plusmn; {h:.3f}</span></td>' in text
    fm, fh, _ = c.stat("avg_forgetting")                 # lower is better: the least forgetting
    assert f'<td class="best">{fm:.3f} <span class="ci">&plusmn; {fh:.3f}</span></td>' in text
    assert text.count('class="best"') == 2 * 6   # per stream, each column once; FWT and peak
    #                                              memory are equal in every cell: none bold
    assert "ConfigError: bad lr" in text and "Failed runs (1)" in text
    html = render(g)
    assert html.count("<table>") == 3                  # two streams + the failed runs


def test_rows_of_an_older_bench_without_throughput_still_plot(tmp_path):
    rows = [{"stream": "blobs", "strategy": s, "seed": k, "status": "ok",
             "final_avg_accuracy": a + k / 100, "avg_forgetting": 0.5 - a}
            for s, a in (("naive", 0.4), ("joint", 0.9)) for k in range(2)]
    g = load_grid(write_grid(tmp_path / "g", rows))
    assert list(P.grid_figures(g)) == ["accuracy_forgetting"]
    assert [c.stat("final_avg_accuracy")[2] for c in g.cells] == [2, 2]


def test_report_of_a_real_grid(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 0\ndevice: cpu\nstream: {name: blobs, n_experiences: 2, n_per_class: 8, "
                    "n_test_per_class: 4}\nbackbone: {name: mlp, hidden: [8]}\n"
                    "train: {batch_size: 4, lr: 0.05}\n")
    out = tmp_path / "grid"
    assert main(["bench", "--config", str(base), "--strategies", "naive,er", "--seeds", "0,1",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0 and main(["plot", str(out), "--format", "png"]) == 0
    g = load_grid(out)
    rows = [json.loads(x) for x in (out / "bench_runs.jsonl").read_text().splitlines()]
    assert [c.strategy for c in g.cells] == ["naive", "er"] and all(len(c.ok) == 2 for c in g.cells)
    for c in g.cells:
        accs = [r["final_avg_accuracy"] for r in rows if r["strategy"] == c.strategy]
        assert c.stat("final_avg_accuracy")[:2] == pytest.approx(mean_ci(accs)[:2])
        run = out / c.ok[0]["run_dir"]                   # each run's own figures, too
        assert main(["plot", str(run), "--format", "png"]) == 0
    text = (out / "report.html").read_text()
    assert "Stream blobs" in text and text.count("data:image/png;base64,") == 2
    assert (out / "plots" / "accuracy_vs_throughput.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
