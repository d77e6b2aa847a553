"""Plain-text tables of evaluation records: one column per setting, lengths ascending. No terminal logic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> str:
    """Columns padded to their widest cell: those in `left` left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            str(c).ljust(w) if i in left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in [header, *rows])


def unique(values: Sequence[Any]) -> list[Any]:
    """Values in first-seen order, without repeats."""
    return list(dict.fromkeys(values))


def format_value(record: dict[str, Any]) -> str:
    value = record["value"]
    if record["metric"] == "accuracy":
        return f"{100 * value:.0f}%"
    return f"{value:,.2f}" if value < 1e5 else f"{value:.3g}"


def metric_table(records: Sequence[dict[str, Any]]) -> str:
    """ppl or passkey records: a row per length (and layout), a column per setting."""
    settings = unique([r["setting"] for r in records])
    present = {(r.get("layout"), r["length"]) for r in records}
    lengths = sorted(unique([r["length"] for r in records]))
    rows_of = [
        (lay, n) for lay in unique([r.get("layout") for r in records]) for n in lengths if (lay, n) in present
    ]
    by_key = {(r["setting"], r.get("layout"), r["length"]): r for r in records}
    show_tokens = any(r["mean_tokens"] != r["length"] for r in records)
    show_layout = len({layout for layout, _ in rows_of}) > 1
    header = [*(["layout"] if show_layout else []), "length", "x P", *(["tokens"] if show_tokens else [])]
    rows = []
    for layout, length in rows_of:
        first = next(r for r in records if r["length"] == length and r.get("layout") == layout)
        row = [*([layout] if show_layout else []), str(length), f"{first['extension']:g}"]
        if show_tokens:
            row.append(f"{first['mean_tokens']:g}")
        row += [
            format_value(by_key[s, layout, length]) if (s, layout, length) in by_key else "-"
            for s in settings
        ]
        rows.append(row)
    return aligned([*header, *settings], rows)


def needle_table(records: Sequence[dict[str, Any]]) -> str:
    """Needle records: a block per setting, a row per depth (0% first), a column per length."""
    blocks = []
    for setting in unique([r["setting"] for r in records]):
        mine = [r for r in records if r["setting"] == setting]
        lengths = sorted(unique([r["length"] for r in mine]))
        depths = sorted(unique([r["depth"] for r in mine]))
        by_key = {(r["depth"], r["length"]): r for r in mine}
        rows = [
            [f"{100 * d:g}%", *(format_value(by_key[d, n]) if (d, n) in by_key else "-" for n in lengths)]
            for d in depths
        ]
        blocks.append(f"{setting}\n" + aligned(["depth", *map(str, lengths)], rows))
    return "\n\n".join(blocks)


def selftest_table(records: Sequence[dict[str, Any]], threshold: float) -> str:
    rows = [
        [
            str(r["length"]),
            f"{r['extension']:g}",
            f"{r['mean_tokens']:g}",
            f"{r['correct']}/{r['n']}",
            "pass" if r["value"] >= threshold else "FAIL",
        ]
        for r in sorted(records, key=lambda r: r["length"])
    ]
    return aligned(["length", "x P", "tokens", "pass keys", "result"], rows)
