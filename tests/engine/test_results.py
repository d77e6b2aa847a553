"""chunkqa.engine.results: the prefill piece a device gets when none is asked for."""

from __future__ import annotations

import torch

from chunkqa.engine.results import PREFILL_PIECE, PREFILL_PIECE_GPU, default_piece


def test_a_gpu_prefills_in_larger_pieces_than_a_cpu():
    assert default_piece(torch.device("cpu")) == PREFILL_PIECE == 4096
    assert default_piece(torch.device("cuda", 1)) == PREFILL_PIECE_GPU == 16384
    assert default_piece("cuda:0") == 16384 and default_piece("cpu") == 4096  # names work too
    assert default_piece(torch.device("mps")) == 4096
