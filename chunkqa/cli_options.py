"""Every command-line option of chunkqa as a reusable type: the flag, its CHUNKQA_* twin and its help.

Commands declare parameters with these so that `ask`, `chat`, `inspect` and `eval` spell and
document each option the same way. Defaults are None: chunkqa.settings fills what is unset.
"""

from __future__ import annotations

from typing import Annotated

import typer

Model = Annotated[
    str | None,
    typer.Option(
        "-m",
        "--model",
        envvar="CHUNKQA_MODEL",
        help="Hub id, local directory, or 'tiny' (bundled demo model).",
    ),
]

Revision = Annotated[str | None, typer.Option("--revision", envvar="CHUNKQA_REVISION", help="Hub revision.")]

Dtype = Annotated[
    str | None,
    typer.Option(
        "--dtype", envvar="CHUNKQA_DTYPE", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."
    ),
]

Device = Annotated[
    str | None, typer.Option("--device", envvar="CHUNKQA_DEVICE", help="auto, cpu, cuda, cuda:N.")
]

TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Run model code from the hub (off).")
]

PretrainingLength = Annotated[
    int | None,
    typer.Option(
        "--pretraining-length",
        envvar="CHUNKQA_PRETRAINING_LENGTH",
        help="P; default: the model config's max_position_embeddings.",
    ),
]

ChunkSize = Annotated[
    int | None,
    typer.Option("--chunk-size", envvar="CHUNKQA_CHUNK_SIZE", help="DCA chunk size c; default 3P/4."),
]

LocalWindow = Annotated[
    int | None,
    typer.Option("--local-window", envvar="CHUNKQA_LOCAL_WINDOW", help="DCA local window w; default P/8."),
]

LogitScale = Annotated[
    str | None,
    typer.Option(
        "--logit-scale",
        envvar="CHUNKQA_LOGIT_SCALE",
        help="auto (x(0.05 ln(L/P)+1)^2 past P), auto:<coef>, or a number (1 = off).",
    ),
]

NoDca = Annotated[bool, typer.Option("--no-dca", help="Run the model as it is, without DCA.")]

Kernel = Annotated[
    str | None, typer.Option("--kernel", envvar="CHUNKQA_KERNEL", help="DCA attention kernel.", hidden=True)
]

Color = Annotated[str | None, typer.Option("--color", envvar="CHUNKQA_COLOR", help="auto, always or never.")]

Quiet = Annotated[bool, typer.Option("--quiet", help="Print only the answer.")]

Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]

Questions = Annotated[list[str] | None, typer.Option("-q", "--question", help="A question (repeatable).")]

MaxNewTokens = Annotated[
    int | None,
    typer.Option(
        "--max-new-tokens", envvar="CHUNKQA_MAX_NEW_TOKENS", help="Longest answer, in tokens [512]."
    ),
]

Temperature = Annotated[
    float | None, typer.Option("--temperature", envvar="CHUNKQA_TEMPERATURE", help="0 = greedy [0].")
]

TopP = Annotated[
    float | None, typer.Option("--top-p", envvar="CHUNKQA_TOP_P", help="Nucleus sampling mass [1].")
]

Seed = Annotated[int | None, typer.Option("--seed", envvar="CHUNKQA_SEED", help="Sampling seed.")]

System = Annotated[
    str | None,
    typer.Option(
        "--system",
        envvar="CHUNKQA_SYSTEM",
        help="System prompt ('' for none); default prompts/system.txt for instruct models.",
    ),
]

Template = Annotated[
    str | None,
    typer.Option(
        "--template",
        envvar="CHUNKQA_TEMPLATE",
        help="qa, summary, base, or a file with {document} and {question}.",
    ),
]

MaxContext = Annotated[
    int | None,
    typer.Option(
        "--max-context",
        envvar="CHUNKQA_MAX_CONTEXT",
        help="Token limit for document + prompt + answer [sized for this machine].",
    ),
]

Truncate = Annotated[
    str | None,
    typer.Option(
        "--truncate", help="Over the limit, cut the document's start, middle or end instead of failing."
    ),
]

PrefillChunk = Annotated[
    int | None,
    typer.Option("--prefill-chunk", envvar="CHUNKQA_PREFILL_CHUNK", help="Tokens per prefill step [4096]."),
]

Password = Annotated[
    str | None,
    typer.Option("--password", envvar="CHUNKQA_PDF_PASSWORD", help="Password of an encrypted PDF."),
]

Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per answer instead of text.")]

NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the on-disk document cache.")]

CacheMinTokens = Annotated[
    int | None,
    typer.Option(
        "--cache-min-tokens",
        envvar="CHUNKQA_CACHE_MIN_TOKENS",
        help="Keep a document's KV cache on disk from this many prefix tokens [2048].",
    ),
]

CacheDir = Annotated[
    str | None,
    typer.Option(
        "--cache-dir",
        envvar="CHUNKQA_CACHE_DIR",
        help="Document cache folder [$XDG_CACHE_HOME/chunkqa/kv].",
    ),
]
Tp = Annotated[
    int | None,
    typer.Option(
        "--tp",
        envvar="CHUNKQA_TP",
        help="Shard the model over N processes with DeepSpeed (tp extra); launch with torchrun.",
    ),
]
