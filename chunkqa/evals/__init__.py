"""Evaluations of a model with and without Dual Chunk Attention: perplexity, pass key, needle.

Each evaluation is split into pure pieces (texts and windows, prompts, scoring: `data`, `ppl`,
`passkey`, `needle`) and the loop that runs them over lengths and DCA settings with one loaded
model (`runner`). `table` turns records into plain text, `plot` draws the needle heatmap, and
`selftest` is the short pass-key check behind `chunkqa selftest`. Nothing here prints.
"""
