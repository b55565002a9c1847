"""The console's chart geometry: round axis bounds, gaps where nothing was sampled."""

from __future__ import annotations

from datetime import UTC, datetime

from orderflow.observability.buckets import window
from orderflow.web.console.charts import band_chart, line_chart


def test_the_y_axis_ends_on_a_round_number_above_the_peak() -> None:
    """A peak of 37 gives an axis to 50, labelled 0, 25 and 50; a peak of 1: 0, 0.5, 1."""
    hour = window("hour", datetime(2026, 11, 28, 2, 30, tzinfo=UTC))
    values: list[int | None] = [0] * 60
    values[-1] = 37
    chart = line_chart(hour, {"placed": values})
    assert [label for _, label in chart.y_ticks] == ["0", "25", "50"]
    values[-1] = 1
    assert [label for _, label in line_chart(hour, {"placed": values}).y_ticks] == ["0", "0.5", "1"]


def test_a_series_with_no_samples_in_between_is_drawn_in_two_pieces() -> None:
    """A gap (None) splits the line: nothing is drawn where nothing was sampled."""
    hour = window("hour", datetime(2026, 11, 28, 2, 30, tzinfo=UTC))
    values: list[int | None] = [1] * 10 + [None] * 40 + [3] * 10
    [line] = line_chart(hour, {"book": values}).lines
    assert len(line.segments) == 2
    assert [len(s.split()) for s in line.segments] == [10, 10]


def test_a_down_span_is_drawn_where_it_happened_in_the_window() -> None:
    """The up and down rectangles are as wide as their spans of time (44 min up, 15 down)."""
    end = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    hour = window("hour", end)
    middle = datetime(2026, 11, 28, 2, 45, tzinfo=UTC)
    spans = [
        {"state": "closed", "start": hour.start, "end": middle},
        {"state": "open", "start": middle, "end": end},
    ]
    chart = band_chart(hour, [{"label": "Bob's Post", "spans": spans}])
    [up, down] = chart["rows"][0]["rects"]
    assert up["state"] == "closed" and down["state"] == "open"
    assert hour.start == datetime(2026, 11, 28, 2, 1, tzinfo=UTC)
    assert down["x"] == round(up["x"] + up["width"], 1)
    assert abs(up["width"] / down["width"] - 44 / 15) < 0.02
