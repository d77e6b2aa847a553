"""scripts/passkey_tables.py: the markdown of docs/evaluation.md's sweep tables, from JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "passkey_tables.py"


def row(setting: str, layout: str, length: int, correct: int, n: int = 20) -> dict:
    return {
        "eval": "passkey",
        "setting": setting,
        "layout": layout,
        "length": length,
        "pretraining_length": 8192,
        "correct": correct,
        "n": n,
    }


def test_cells_rows_and_repeats(tmp_path):
    records = [
        row("dca", "sentences", 16384, 17),
        row("dca", "sentences", 16384, 16),  # the same cell run twice: both runs are shown
        row("selfextend", "sentences", 32768, 13),
        row("none", "prose", 8192, 2),
        {"eval": "ppl", "setting": "dca", "length": 8192},  # not a pass-key record: left out
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--settings", "selfextend", "dca"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sentences, prose = out.split("prose:")
    assert "| length | × P | selfextend | dca |" in sentences
    assert "| 16,384 | 2 | – | 17/20 · 16/20 |" in sentences
    assert "| 32,768 | 4 | 13/20 | – |" in sentences
    assert "| 8,192 | 1 | – | – |" in prose  # the columns asked for; `none` is not among them
