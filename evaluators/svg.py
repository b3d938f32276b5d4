"""Small inline SVG charts for the HTML report: no library, no fonts, no external file.

Each chart is one `<svg>` string to put into the page as it is. Every text that reaches it
(run labels, axis titles) is escaped here, and every point carries a `<title>` element, which
browsers show on hover: the run and its numbers. Matplotlib could write SVG too, but its
text becomes glyph paths (tens of kilobytes per chart) and it has no hover text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

# matplotlib's tab10, so the page's colours match softness.png and pareto.png
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Point:
    x: float
    y: float
    title: str = ""                    # hover text
    y_low: float | None = None         # interval on y (error bar)
    y_high: float | None = None
    x_low: float | None = None         # interval on x
    x_high: float | None = None
    label: str = ""                    # drawn beside the point
    star: bool = False                 # the baseline
    ring: bool = False                 # on the Pareto front


@dataclass
class Series:
    name: str
    points: list[Point]
    colour: str = COLOURS[0]
    line: bool = True                  # join the points in order
    dashed: bool = False
    markers: bool = True               # draw the points (False: a line alone, no legend)
    radius: float = 3.2


@dataclass
class Chart:
    series: list[Series]
    x_label: str = ""
    y_label: str = ""
    title: str = ""
    log_x: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, hover text), dashed
    width: int = 340
    height: int = 230
    legend: bool = True


def _finite(*values: float | None) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def nice_ticks(low: float, high: float, n: int = 5) -> list[float]:
    """About n round tick values covering [low, high] (1, 2, 5 x 10^k steps)."""
    if not high > low:
        return [low]
    raw = (high - low) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    t = first
    while t <= high + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def render(chart: Chart) -> str:
    """The chart as an SVG element (a string)."""
    xs, ys = [], []
    for s in chart.series:
        for p in s.points:
            xs += _finite(p.x, p.x_low, p.x_high)
            ys += _finite(p.y, p.y_low, p.y_high)
    ys += _finite(*(y for y, _ in chart.hlines))
    if chart.log_x:
        xs = [x for x in xs if x > 0]
    w, h = chart.width, chart.height
    if not xs or not ys:
        return (f'<svg class="chart" width="{w}" height="40" role="img"><text x="4" y="20" '
                f'font-size="11">{escape(chart.title)}: no values</text></svg>')
    left, right, top, bottom = 52, 10, 22, 36
    fx = (lambda v: math.log2(v)) if chart.log_x else (lambda v: v)
    x0, x1 = min(map(fx, xs)), max(map(fx, xs))
    y0, y1 = min(ys), max(ys)
    pad_x = (x1 - x0) * 0.06 or 0.5
    pad_y = (y1 - y0) * 0.08 or (abs(y0) * 0.05 or 0.5)
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y

    def px(v: float) -> float:
        return left + (fx(v) - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * (h - top - bottom)

    out = [f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'font-family="sans-serif" font-size="10">',
           f'<text x="{w / 2:.0f}" y="13" text-anchor="middle" font-size="11" '
           f'font-weight="bold">{escape(chart.title)}</text>',
           f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" '
           'fill="none" stroke="#999"/>']
    for t in nice_ticks(y0, y1):
        if y0 <= t <= y1:
            out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                       f'stroke="#eee"/><text x="{left - 3}" y="{py(t) + 3:.1f}" '
                       f'text-anchor="end">{_fmt(t)}</text>')
    x_ticks = (sorted(set(xs)) if chart.log_x
               else [t for t in nice_ticks(x0, x1) if x0 <= t <= x1])
    for t in x_ticks[:12]:
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top}" y2="{h - bottom}" '
                   f'stroke="#eee"/><text x="{px(t):.1f}" y="{h - bottom + 12}" '
                   f'text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 6}" text-anchor="middle">'
               f'{escape(chart.x_label)}</text>')
    out.append(f'<text transform="translate(11,{(top + h - bottom) / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">{escape(chart.y_label)}</text>')
    for y, title in chart.hlines:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   f'stroke="#666" stroke-dasharray="4 3"><title>{escape(title)}</title>'
                   '</line>')
    for s in chart.series:
        out += _series(s, px, py, chart.log_x)
    named = [s for s in chart.series if s.markers]
    if chart.legend and len(named) > 1:
        wide = max(len(s.name) for s in named) * 5.5 + 20
        out.append(f'<rect x="{left + 2}" y="{top + 1}" width="{wide:.0f}" '
                   f'height="{11 * len(named) + 4}" fill="#fff" opacity="0.8"/>')
        for i, s in enumerate(named):
            y = top + 10 + 11 * i
            out.append(f'<rect x="{left + 5}" y="{y - 7}" width="8" height="8" '
                       f'fill="{s.colour}"/><text x="{left + 16}" y="{y}">'
                       f'{escape(s.name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _series(s: Series, px, py, log_x: bool) -> list[str]:
    pts = [p for p in s.points if _finite(p.x, p.y) == [p.x, p.y] and (p.x > 0 or not log_x)]
    out = []
    if s.line and len(pts) > 1:
        path = " ".join(f"{px(p.x):.1f},{py(p.y):.1f}" for p in pts)
        dash = ' stroke-dasharray="4 3"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                   f'stroke-width="1.3"{dash}/>')
    for p in pts if s.markers else []:
        x, y = px(p.x), py(p.y)
        if p.y_low is not None and p.y_high is not None:
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(p.y_low):.1f}" '
                       f'y2="{py(p.y_high):.1f}" stroke="#999"/>')
        if p.x_low is not None and p.x_high is not None and (p.x_low > 0 or not log_x):
            out.append(f'<line x1="{px(p.x_low):.1f}" x2="{px(p.x_high):.1f}" y1="{y:.1f}" '
                       f'y2="{y:.1f}" stroke="#999"/>')
        hover = f"<title>{escape(p.title)}</title>" if p.title else ""
        ring = ' stroke="red" stroke-width="1.6"' if p.ring else ""
        if p.star:
            star = " ".join(f"{x + r * math.sin(k * math.pi / 5):.1f},"
                            f"{y - r * math.cos(k * math.pi / 5):.1f}"
                            for k, r in zip(range(10), [6, 2.5] * 5))
            out.append(f'<polygon points="{star}" fill="black"{ring}>{hover}</polygon>')
        else:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{s.radius}" fill="{s.colour}"{ring}>'
                       f'{hover}</circle>')
        if p.label:
            out.append(f'<text x="{x + 5:.1f}" y="{y - 5:.1f}" font-size="9">'
                       f'{escape(p.label)}</text>')
    return out


def interval_bar(value: float | None, low: float | None, high: float | None, lo: float,
                 hi: float, title: str, width: int = 90, height: int = 12) -> str:
    """A cell-sized bar: the interval [low, high] as a line and the value as a dot, on the
    column's common scale [lo, hi], so the rows of a leaderboard column compare by eye."""
    if value is None or not hi > lo:
        return ""

    def x(v: float) -> float:
        return 3 + (min(max(v, lo), hi) - lo) / (hi - lo) * (width - 6)

    parts = [f'<svg class="bar" width="{width}" height="{height}" role="img">'
             f"<title>{escape(title)}</title>"]
    if low is not None and high is not None:
        parts.append(f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{height / 2}" '
                     f'y2="{height / 2}" stroke="#4a7ebb" stroke-width="4" opacity="0.45"/>')
    parts.append(f'<circle cx="{x(value):.1f}" cy="{height / 2}" r="2.6" fill="#1f3f6b"/>')
    parts.append("</svg>")
    return "".join(parts)
