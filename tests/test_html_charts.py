"""The inline-SVG charts: ticks, open-ended bins, malformed input."""

import math

from hypothesis import given
from hypothesis import strategies as st

from gradcheck_lab.html.charts import count_map, histogram, line_chart, nice_ticks
from gradcheck_lab.html.verify import _finite_edges

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(finite, finite)
def test_nice_ticks_lie_in_the_range_and_are_increasing(a, b):
    lo, hi = min(a, b), max(a, b)
    ticks = nice_ticks(lo, hi)
    assert ticks and all(t2 > t1 for t1, t2 in zip(ticks, ticks[1:]))
    span = max(hi - lo, abs(lo) * 1e-9, 1e-300)
    assert all(lo - 1e-6 * span <= t <= hi + 1e-6 * span for t in ticks)


def test_histogram_bars_carry_their_counts():
    edges, counts = [0, 1, 2, 3], [5, 0, 7]
    svg = histogram(edges, counts, xlabel="r", limit=1.5)
    assert svg.count("data-count=") == 2 and 'data-count="5"' in svg and 'data-count="7"' in svg
    assert "tolerance" in svg


def test_malformed_bins_say_so_instead_of_drawing():
    assert "not available" in histogram([0, 1], [1, 2])
    assert "not available" in count_map([0, 1, 2], [0, 1], [[1]])


def test_open_ended_bins_are_drawn_one_bin_wide():
    assert _finite_edges([None, -1.0, 0.0, 1.0, math.inf]) == [-2.0, -1.0, 0.0, 1.0, 2.0]


def test_line_chart_skips_what_a_log_axis_cannot_show():
    svg = line_chart([("loss", [1, 2, 3], [1.0, 0.0, 0.01])], logy=True, xlabel="step", ylabel="loss")
    assert svg.count("L") >= 1 and "nan" not in svg
    assert "no finite values" in line_chart([("loss", [1], [math.nan])])
