"""Chart geometry for the console's inline SVG charts (the markup is in `charts.html`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orderflow.observability.buckets import Window

WIDTH, HEIGHT = 640, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 8, 22  # room for the axes' labels
BAND_ROW = 22


@dataclass
class Line:
    name: str
    css: str  # series-0, series-1…: colour and dash pattern (never colour alone)
    segments: list[str]  # "x,y x,y …" per <polyline>; a gap (no sample) starts a new one


@dataclass
class LineChart:
    width: int
    height: int
    lines: list[Line]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    top: int = TOP
    left: int = LEFT
    bottom: float = HEIGHT - BOTTOM
    right: float = WIDTH - RIGHT


def _nice_max(value: int) -> int:
    """A round upper bound for the y axis: 1, 2, 5, 10, 20, 50…"""
    bound = 1
    while True:
        for factor in (1, 2, 5):
            if bound * factor >= value:
                return bound * factor
        bound *= 10


def _x(window: Window, index: float) -> float:
    span = WIDTH - LEFT - RIGHT
    return round(LEFT + span * index / max(window.count - 1, 1), 1)


def _x_ticks(window: Window) -> list[tuple[float, str]]:
    every = 10 if window.name == "hour" else 16  # every 10 min, or every 4 h
    return [
        (_x(window, i), f"{start:%H:%M}")
        for i, start in enumerate(window.starts())
        if i % every == 0 and window.count - i > every // 2  # no label crowding the last
    ]


def line_chart(window: Window, series: dict[str, list[int | None]]) -> LineChart:
    """One polyline (or several segments, across gaps) per series, on a shared y axis."""
    peak = max((v for values in series.values() for v in values if v is not None), default=0)
    top = _nice_max(max(peak, 1))
    bottom = HEIGHT - BOTTOM
    lines = []
    for n, (name, values) in enumerate(series.items()):
        segments: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                if segments[-1]:
                    segments.append([])
                continue
            y = round(bottom - (bottom - TOP) * value / top, 1)
            segments[-1].append(f"{_x(window, i)},{y}")
        parts = [" ".join(s) for s in segments if s]
        lines.append(Line(name, f"series-{n % 6}", parts))
    y_ticks = [(round(bottom - (bottom - TOP) * f, 1), f"{top * f:,g}") for f in (0, 0.5, 1)]
    return LineChart(WIDTH, HEIGHT, lines, y_ticks, _x_ticks(window))


def band_chart(window: Window, bands: list[dict[str, Any]]) -> dict[str, Any]:
    """Each dependency a row; each span of its state a rectangle (up: solid, down: hatched)."""
    start, end = window.start.timestamp(), window.end.timestamp()
    span = WIDTH - LEFT - RIGHT - 60

    def x(moment: datetime) -> float:
        share = (max(min(moment.timestamp(), end), start) - start) / max(end - start, 1)
        return round(LEFT + 60 + span * share, 1)

    rows = []
    for i, band in enumerate(bands):
        rects = []
        for s in band["spans"]:
            left, right = x(s["start"]), x(s["end"])
            if s["state"] == "open":  # an outage stays visible however short, at any scale
                right = max(right, left + 2)
            if right > left:
                rects.append({"x": left, "width": round(right - left, 1), **s})
        rows.append({"label": band["label"], "y": TOP + i * BAND_ROW, "rects": rects})
    height = TOP + max(len(rows), 1) * BAND_ROW + BOTTOM
    ticks = [(x(moment), label) for moment, label in _band_ticks(window)]
    return {"width": WIDTH, "height": height, "rows": rows, "x_ticks": ticks, "left": LEFT + 60}


def _band_ticks(window: Window) -> list[tuple[datetime, str]]:
    every = 10 if window.name == "hour" else 16
    return [
        (moment, f"{moment:%H:%M}") for i, moment in enumerate(window.starts()) if i % every == 0
    ]
