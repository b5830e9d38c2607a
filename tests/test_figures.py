"""The report's figures keep their words inside their canvas: a title or label cut off at the
PNG's edge fails here."""

import numpy as np
import pytest

from lmkit.report import figures


def outside(fig) -> list[str]:
    """Every title, suptitle and axis label of ``fig`` that reaches past the figure's edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in (fig._suptitle,) if t is not None]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
    cut = []
    for t in texts:
        if not t.get_text():
            continue
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
            cut.append(t.get_text()[:50])
    return cut


def test_the_saliency_figure_keeps_its_title_inside():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    maps = rng.random((6, 64, 64))
    fig = figures.saliency_figure(images, maps, [f"face {i}: NME 0.05" for i in range(6)])
    try:
        assert not outside(fig)
    finally:
        figures.plt.close(fig)


def test_the_check_sees_a_clipped_title():
    fig, ax = figures.plt.subplots(figsize=(3, 2))
    fig.suptitle(
        "a title far too long for a three-inch-wide figure to hold on one line of text at all"
    )
    try:
        assert outside(fig)
    finally:
        figures.plt.close(fig)


@pytest.mark.parametrize("n_points", [68, 194])
def test_the_scheme_figure_keeps_its_title_inside(n_points):
    from lmkit.study.schemes import scheme_for_points

    rng = np.random.default_rng(1)
    mean = rng.random((n_points, 2)) * 200 + 50
    fig = figures.scheme_figure(
        mean, scheme_for_points(n_points), "mean training shape, a data set"
    )
    try:
        assert not outside(fig)
    finally:
        figures.plt.close(fig)
