"""Context-extension methods: plain tensor code that imports only torch and chunkqa.errors.

`spec` (a method as asked for, resolved for a model), `patching` (the instance patch, undo handle
and per-forward sharing every method uses), `adapters` (which model families, and their parts),
`kernels` (attention kernels returning the log-sum-exp, and their exact merge), `rope`, and one
package per method: `dca/` (Dual Chunk Attention), `selfextend/` (SelfExtend).
"""
