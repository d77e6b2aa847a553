"""The public API, used only through `import chunkqa`, as the README shows it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import chunkqa


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("The committee met on Tuesday. " * 30 + "The pass key is 40312. " + "It rained. " * 30)
    return path


def test_every_exported_name_resolves():
    for name in chunkqa.__all__:
        assert getattr(chunkqa, name) is not None
    with pytest.raises(AttributeError):
        chunkqa.not_a_name  # noqa: B018


def test_importing_chunkqa_loads_no_torch():
    code = "import sys, chunkqa; chunkqa.ModelSpec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_plan_then_session_then_ask(cli_models, doc):
    request = chunkqa.Request(
        documents=[chunkqa.load_document(doc)],
        model=chunkqa.ModelSpec(str(cli_models["qwen2"])),
        method=chunkqa.MethodSpec("dca", logit_scale=1.0),
        generation=chunkqa.GenerationConfig(max_new_tokens=5),
    )
    plan = chunkqa.make_plan(request, ["What is the pass key?"])
    assert plan.pretraining_length == 64 and plan.method.chunk_size == 48 and plan.fits
    assert plan.document_tokens > 64  # longer than the window: DCA does real work
    assert plan.piece == 4096  # the CPU's default prefill piece (a GPU's is 16,384)
    assert chunkqa.make_plan(dataclasses.replace(request, prefill_chunk=256), ["?"]).piece == 256
    session = chunkqa.open_session(plan)
    assert session.piece == plan.piece
    steps = list(session.ask("What is the pass key?", request.generation))
    final = steps[-1]
    assert isinstance(final, chunkqa.Step) and isinstance(final.stats, chunkqa.Stats)
    assert final.stats.generated_tokens == len(steps) - 1 <= 5
    assert session.loaded.handle.config.logit_scale == 1.0


def test_one_call_ask_equals_the_session_path(cli_models, doc):
    generation = chunkqa.GenerationConfig(max_new_tokens=4)
    model = chunkqa.ModelSpec(str(cli_models["llama"]))
    text = "".join(s.text for s in chunkqa.ask(doc, "Key?", model=model, generation=generation))
    session = chunkqa.open_document_session(doc, model=model, generation=generation)
    assert text == session.answer("Key?", generation)[0]


def test_load_applies_a_method_and_close_removes_it(cli_models):
    loaded = chunkqa.load(str(cli_models["llama"]), method="dca")
    assert loaded.handle.active and loaded.pretraining_length == 64
    loaded.close()
    assert not loaded.handle.active
    assert chunkqa.load(str(cli_models["llama"]), method="none").handle is None


def test_errors_are_catchable_by_the_base_class(cli_models, doc):
    request = chunkqa.Request(
        documents=[chunkqa.load_document(doc)],
        model=chunkqa.ModelSpec(str(cli_models["llama"])),
        max_context=50,
    )
    with pytest.raises(chunkqa.DoesNotFitError) as info:
        chunkqa.make_plan(request, ["?"])
    assert isinstance(info.value, chunkqa.ChunkqaError) and info.value.exit_code == 3
    with pytest.raises(chunkqa.UsageError):
        chunkqa.Request(documents=[])
