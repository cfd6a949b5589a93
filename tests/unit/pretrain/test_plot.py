import json

import pytest

from pretrain.plot import plot
from pretrain.run_dir import RunDir


def test_plot_writes_a_png_from_metrics_jsonl(tmp_path):
    rows = [{"step": s, "loss": 9 - s / 10, "mlm_loss": 8 - s / 10, "nsp_loss": 0.7, "mlm_accuracy": s / 100,
             "nsp_accuracy": 0.5, "lr": 1e-3} for s in range(1, 30)]
    rows += [{"step": 10, "eval_mlm_loss": 8.0, "eval_mlm_accuracy": 0.1, "eval_nsp_accuracy": 0.5}]
    RunDir(tmp_path).metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = plot(str(tmp_path))
    assert path == RunDir(tmp_path).curves and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_plot_of_a_run_without_metrics_says_so(tmp_path):
    RunDir(tmp_path).metrics.write_text("")
    with pytest.raises(ValueError, match="no training records"):
        plot(str(tmp_path))


def test_one_colour_per_series_labelled_axes_and_the_run_name_as_title(tmp_path, monkeypatch):
    import matplotlib.figure

    run = RunDir(tmp_path / "bert-mini-7").create()
    run.write_config({"logging": {"run_name": None}})
    rows = [{"step": s, "loss": 3.0, "mlm_loss": 2.5, "nsp_loss": 0.5, "mlm_accuracy": 0.3, "nsp_accuracy": 0.6,
             "lr": 1e-3} for s in range(1, 5)]
    rows += [{"step": 4, "eval_mlm_loss": 2.6, "eval_mlm_accuracy": 0.3, "eval_nsp_accuracy": 0.6}]
    run.metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self))
    plot(str(run.root))
    fig = figures[0]
    assert fig._suptitle.get_text() == "bert-mini-7" and "/" not in fig._suptitle.get_text()
    colours = {}
    for ax in fig.axes:
        assert ax.get_ylabel() and ax.get_xlabel() == "step"
        for line in ax.get_lines():
            series = line.get_label().split()[-1]  # "train MLM", "held-out MLM" -> MLM
            colours.setdefault(series, set()).add(line.get_color())
    assert all(len(c) == 1 for name, c in colours.items() if not name.startswith("_")), colours
    assert colours["MLM"] != colours["NSP"]
