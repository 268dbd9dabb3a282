"""The Fine-tune tab's SVG charts: round ticks, a dot for a lone point, both loss series, the lengths histogram."""

from __future__ import annotations

import re

from playground.finetune.result import LossPoint
from playground.ui.i18n import Texts
from playground.ui.render import histogram_html, line_chart_html, nice_ticks
from playground.ui.tabs.finetune import loss_chart


def ticks(chart: str, axis: str) -> list[str]:
    return re.findall(rf'class="chart-{axis}-tick"[^>]*>([^<]*)<', chart)


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 40, 6, integer=True) == [0, 10, 20, 30, 40]
    assert nice_ticks(1, 1, 6, integer=True) == [0, 1, 2]
    values = nice_ticks(1.7964, 1.8164)
    assert values[0] <= 1.7964 and values[-1] >= 1.8164 and len(values) <= 6


def test_one_point_is_a_dot_in_a_padded_range_with_whole_step_ticks():
    chart = line_chart_html({"train": [(1, 1.806412)]}, x_title="step", y_title="loss")
    assert chart.count('class="chart-point"') == 1
    x_ticks = ticks(chart, "x")
    assert x_ticks and all(t.isdigit() for t in x_ticks)
    assert "1.806412" not in "".join(ticks(chart, "y")) and len(ticks(chart, "y")) >= 3


def test_train_and_validation_are_both_drawn_with_a_legend():
    points = [LossPoint(s, 2.0 - 0.1 * s, "train") for s in range(1, 41)] + [
        LossPoint(20, 1.5, "validation"), LossPoint(40, 1.2, "validation")]
    chart = loss_chart(points, Texts("fr"))
    assert 'data-series="entraînement"' in chart and 'data-series="validation"' in chart
    assert chart.count('class="chart-point"') == 42 and "chart-legend" in chart
    assert ticks(chart, "x") == ["0", "10", "20", "30", "40"]
    assert "pas" in chart and "loss" in chart


def test_histogram_marks_max_length():
    chart = histogram_html([(10, 19, 3, "fits"), (20, 29, 1, "cut")], marker=25, marker_label="max_length = 25")
    assert chart.count('class="chart-bar"') == 2 and "chart-marker" in chart and "max_length = 25" in chart
    assert all(t.isdigit() for t in ticks(chart, "x") + ticks(chart, "y"))


def test_empty_charts_say_what_comes():
    assert "nothing yet" in line_chart_html({"train": []}, empty="nothing yet")
