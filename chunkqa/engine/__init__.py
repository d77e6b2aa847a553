"""The engine: model loading (`hub`, `loading`), tensor parallelism (`parallel`), generation
(`generate`, `results`), the in-place KV cache (`kvcache`) and CUDA-graph decode steps
(`cuda_graphs`). No planning and no terminal: it runs what the plan decided.
"""
