"""A ``fare.compare`` document as an HTML page with plots (matplotlib), and as text tables.

``pages(doc)`` returns file name -> bytes (``compare.html`` and its PNG plots); the caller
writes them.  matplotlib is imported here only, on first use, with the Agg backend.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

from fare.currency import exponent, format_minor

PLOTS = (("hour", "Revenue by hour of day"), ("route", "Revenue by route"),
         ("rider_category", "Revenue by rider category"))


def money(amount: int, currency: str, sign: bool = False) -> str:
    text = format_minor(amount, currency)
    return f"+{text}" if sign and amount > 0 else text


def text_report(doc: dict[str, Any]) -> str:
    """The comparison as plain text tables (what ``tapsim fare compare`` prints)."""
    cur = doc["currency"]
    a, b = doc["feeds"]["a"], doc["feeds"]["b"]
    lines = [f"Fare change: {a} -> {b}, {doc['taps']:,} taps ({cur})", ""]
    t = doc["total"]
    lines.append(f"revenue  {money(t['a'], cur):>14}  {money(t['b'], cur):>14}  "
                 f"{money(t['change'], cur, True):>12}  {_pct(t['a'], t['b'])}")
    for dim, rows in doc["by"].items():
        lines += ["", f"by {dim.replace('_', ' ')}:", f"  {'':<16}{a:>14}  {b:>14}  "
                  f"{'change':>12}"]
        for r in rows:
            lines.append(f"  {r['key']!s:<16}{money(r['a'], cur):>14}  "
                         f"{money(r['b'], cur):>14}  {money(r['change'], cur, True):>12}")
    rd = doc["riders"]
    lines += ["", f"riders: {rd['count']:,}; pay more {rd['more']:,}, less {rd['less']:,}, "
                  f"the same {rd['same']:,}"]
    p = rd["percentiles"]
    lines.append("  change per rider: " + ", ".join(
        f"{k} {money(v, cur, True)}" for k, v in p.items() if v is not None))
    dist = rd["change_distribution"]
    shown = dist if len(dist) <= 12 else dist[:6] + dist[-6:]
    for d in shown:
        lines.append(f"  {money(d['change'], cur, True):>12}: {d['riders']:,} rider(s)")
    if len(dist) > 12:
        lines.append(f"  ... {len(dist) - 12} other values (see --format json)")
    jd = doc["journeys"]
    lines += ["", f"journeys: {jd['count']:,}, {jd['changed']:,} change price; most:"]
    for j in jd["top"]:
        lines.append(f"  {j['journey']:<24}{money(j['a'], cur):>12} -> {money(j['b'], cur):>12}"
                     f"  {money(j['change'], cur, True):>10}")
    return "\n".join(lines) + "\n"


def _pct(a: int, b: int) -> str:
    return f"{(b - a) * 100 / a:+.1f} %" if a else ""


def pages(doc: dict[str, Any]) -> dict[str, bytes]:
    """``compare.html`` and the PNG plots it shows."""
    out = {f"{dim}.png": _bars(doc, dim, title) for dim, title in PLOTS}
    out["riders.png"] = _riders_plot(doc)
    out["compare.html"] = _html(doc).encode("utf-8")
    return out


def _figure() -> Any:
    import matplotlib  # noqa: PLC0415 - only the HTML report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=96)
    plt.close(fig)
    return buf.getvalue()


def _bars(doc: dict[str, Any], dim: str, title: str) -> bytes:
    plt = _figure()
    rows: Sequence[dict[str, Any]] = doc["by"][dim]
    exp = 10 ** exponent(doc["currency"])  # minor units per major unit
    keys = [str(r["key"]) for r in rows]
    xs = range(len(keys))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([x - 0.2 for x in xs], [r["a"] / exp for r in rows], 0.4, label=doc["feeds"]["a"])
    ax.bar([x + 0.2 for x in xs], [r["b"] / exp for r in rows], 0.4, label=doc["feeds"]["b"])
    ax.set_xticks(list(xs), keys, rotation=45 if len(keys) > 12 else 0)
    ax.set_ylabel(doc["currency"])
    ax.set_title(title)
    ax.legend()
    return _png(plt, fig)


def _riders_plot(doc: dict[str, Any]) -> bytes:
    plt = _figure()
    dist = doc["riders"]["change_distribution"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([format_minor(d["change"], doc["currency"]) for d in dist],
           [d["riders"] for d in dist])
    ax.set_xlabel(f"change per rider ({doc['currency']})")
    ax.set_ylabel("riders")
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - matplotlib only for the page

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # riders come whole
    ax.set_title("Distribution of the change per rider")
    if len(dist) > 12:
        ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    return _png(plt, fig)


def _html(doc: dict[str, Any]) -> str:
    cur = doc["currency"]
    a, b = html.escape(doc["feeds"]["a"]), html.escape(doc["feeds"]["b"])
    t = doc["total"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Fare change {a} -> {b}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:2px 10px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "</style></head><body>",
        f"<h1>Fare change: {a} &rarr; {b}</h1>",
        f"<p>{doc['taps']:,} taps. Revenue {money(t['a'], cur)} &rarr; {money(t['b'], cur)} "
        f"{cur} ({money(t['change'], cur, True)}, {_pct(t['a'], t['b'])}).</p>",
    ]
    rd = doc["riders"]
    parts.append(f"<h2>Riders</h2><p>{rd['count']:,} riders: {rd['more']:,} pay more, "
                 f"{rd['less']:,} less, {rd['same']:,} the same.</p>"
                 "<img src='riders.png' alt='change per rider'>")
    for dim, title in PLOTS:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{dim}.png' alt='{dim}'>")
    for dim, rows in doc["by"].items():
        parts.append(f"<h3>By {html.escape(dim.replace('_', ' '))}</h3><table>"
                     f"<tr><th></th><th>{a}</th><th>{b}</th><th>change</th></tr>")
        for r in rows:
            parts.append(f"<tr><td>{html.escape(str(r['key']))}</td><td>{money(r['a'], cur)}"
                         f"</td><td>{money(r['b'], cur)}</td>"
                         f"<td>{money(r['change'], cur, True)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Journeys whose price changes most</h2><table><tr><th>journey</th>"
                 f"<th>{a}</th><th>{b}</th><th>change</th></tr>")
    for j in doc["journeys"]["top"]:
        parts.append(f"<tr><td>{html.escape(j['journey'])}</td><td>{money(j['a'], cur)}</td>"
                     f"<td>{money(j['b'], cur)}</td><td>{money(j['change'], cur, True)}</td>"
                     "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
