"""The built wheel carries what the installed tool needs: prompts, the bundled model, the entry point."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = tmp_path / proc.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    for prompt in ("qa", "summary", "base", "system"):
        assert f"chunkqa/prompts/{prompt}.txt" in names
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "chunkqa").rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"  # every subpackage
    shipped = {p.name for p in (ROOT / "chunkqa" / "assets" / "tiny").iterdir() if p.is_file()}
    assert {"config.json", "model.safetensors"} <= shipped
    assert {f"chunkqa/assets/tiny/{name}" for name in shipped} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "chunkqa = chunkqa.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
