"""chunkqa runs from a source checkout that is not installed (PYTHONPATH=checkout), prompts included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_prompts_are_found_without_installing(tmp_path):
    code = (
        "import sys; "
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]; "
        "sys.path.insert(0, sys.argv[1]); import chunkqa.prompt as p; "
        "assert p.__file__.startswith(sys.argv[1]), p.__file__; "
        "assert str(p.prompts_folder()) == sys.argv[1] + '/prompts', p.prompts_folder(); "
        "print(p.packaged_text('base'))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code, str(ROOT)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("{document}\n\nQuestion: {question}")
