"""Writes weight shards in exactly the format of OpenAI's model/ folder, for tests."""
import json
import math
import os

import numpy as np


def published_shapes(n_layer=12, n_embd=768, n_vocab=40478, n_ctx=512):
    """params_shapes.json of OpenAI's release (for the defaults) or of a smaller model
    laid out the same way: positions, tokens, then 12 tensors per block."""
    block = [[1, n_embd, 3 * n_embd], [3 * n_embd], [1, n_embd, n_embd], [n_embd],
             [n_embd], [n_embd], [1, n_embd, 4 * n_embd], [4 * n_embd],
             [1, 4 * n_embd, n_embd], [n_embd], [n_embd], [n_embd]]
    return [[n_ctx, n_embd], [n_vocab, n_embd]] + block * n_layer


def write_shards(folder, shapes, seed=0):
    """One flat float32 array with the given shapes, cut into 10 consecutive .npy files.
    Returns the arrays, reshaped, in file order."""
    os.makedirs(folder, exist_ok=True)
    total = sum(math.prod(s) for s in shapes)
    flat = np.random.default_rng(seed).standard_normal(total, dtype=np.float32)
    with open(os.path.join(folder, 'params_shapes.json'), 'w') as f:
        json.dump(shapes, f)
    for i, piece in enumerate(np.array_split(flat, 10)):
        np.save(os.path.join(folder, f'params_{i}.npy'), piece)
    offsets = np.cumsum([math.prod(s) for s in shapes])[:-1]
    return [a.reshape(s) for a, s in zip(np.split(flat, offsets), shapes)]
