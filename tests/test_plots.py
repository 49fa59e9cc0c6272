"""Tests of the plot helpers that do not need a trained model."""

import matplotlib.colors
import matplotlib.pyplot as plt
import pytest

from autoloss_tf import plots

GAN_METHODS = ("1:1", "1:3", "1:5", "1:7", "1:9", "1:11", "3:1", "5:1",
               "7:1", "9:1", "11:1", "AutoLoss")
NMT_METHODS = ("MT", "FixedRatio", "FineTunedMT", "AutoLoss")


@pytest.mark.parametrize("methods", [GAN_METHODS, NMT_METHODS])
def test_method_colors_distinct(methods):
    colors = {matplotlib.colors.to_hex(plots.method_color(m))
              for m in methods}
    assert len(colors) == len(methods)


def test_unknown_method_color_is_stable():
    first = plots.method_color("2:3")
    assert plots.method_color("2:3") == first
    assert matplotlib.colors.is_color_like(first)


def _nmt_results(methods):
    curve = [[0.0, 0, 0, 100.0], [10.0, 50, 30, 80.0]]
    probabilities = [[50, 0.6, 0.2, 0.2]]
    return {
        "mode": "quick", "trials": 1,
        "methods": {m: {"mean": 80.0, "curves": [curve],
                        "probabilities": [probabilities]}
                    for m in methods},
    }


def _line_colors(draw, results, path, monkeypatch):
    """Draw with `draw` and return {legend label: line colour} of axis 0."""
    monkeypatch.setattr(plots.plt, "close", lambda figure: None)
    draw(results, path)
    figure = plt.gcf()
    colors = {}
    for line in figure.axes[0].lines:
        label = line.get_label().split(" (")[0]
        if not label.startswith("_"):
            colors[label] = matplotlib.colors.to_hex(line.get_color())
    plt.close(figure)
    return colors


@pytest.mark.parametrize("draw", [plots.plot_nmt_curves,
                                  plots.plot_nmt_probabilities])
def test_subset_keeps_method_colors(draw, tmp_path, monkeypatch):
    everything = _line_colors(draw, _nmt_results(NMT_METHODS),
                              tmp_path / "all.png", monkeypatch)
    subset = _line_colors(draw, _nmt_results(("FineTunedMT", "AutoLoss")),
                          tmp_path / "subset.png", monkeypatch)
    assert set(everything) == set(NMT_METHODS)
    assert subset == {m: everything[m] for m in ("FineTunedMT", "AutoLoss")}
