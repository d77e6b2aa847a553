"""Markdown tables of pass-key records (`chunkqa eval passkey --jsonl`): hits of trials per cell.

One table per layout, a row per length, a column per setting (in the order given, or first seen).
A cell run more than once shows every run (`17/20 · 16/20`). docs/evaluation.md's sweep tables
come from this script:

    python scripts/passkey_tables.py docs/results/passkey-sweep-smollm2-h200.jsonl
    python scripts/passkey_tables.py FILE --settings dca,logit_scale=1 selfextend --layouts prose
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def read(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("eval") == "passkey":
                    records.append(record)
    return records


def cells(records: list[dict]) -> dict[tuple[str, int, str], list[str]]:
    """(layout, length, setting) -> the runs' 'hits/trials'."""
    table: dict[tuple[str, int, str], list[str]] = defaultdict(list)
    for r in records:
        table[(r.get("layout") or "-", r["length"], r["setting"])].append(f"{r['correct']}/{r['n']}")
    return table


def markdown(records: list[dict], *, settings: list[str], layout: str) -> str:
    table = cells(records)
    p = records[0]["pretraining_length"] if records else 1
    lengths = sorted({r["length"] for r in records if (r.get("layout") or "-") == layout})
    header = ["length", "× P", *settings]
    lines = ["| " + " | ".join(header) + " |", "|---:|---:|" + "---:|" * len(settings)]
    for length in lengths:
        row = [f"{length:,}", f"{length / p:g}"]
        row += [" · ".join(table.get((layout, length, s), [])) or "–" for s in settings]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--settings", nargs="*", help="columns, in order (default: all, first seen)")
    parser.add_argument("--layouts", nargs="*", help="layouts (default: all, first seen)")
    args = parser.parse_args()
    records = read(args.files)
    settings = args.settings or list(dict.fromkeys(r["setting"] for r in records))
    layouts = args.layouts or list(dict.fromkeys(r.get("layout") or "-" for r in records))
    for layout in layouts:
        print(f"{layout}:\n\n{markdown(records, settings=settings, layout=layout)}\n")


if __name__ == "__main__":
    main()
