"""GPT-1, as in OpenAI's finetune-transformer-lm, in PyTorch.

Module and parameter names follow the TF variables (`model/h3/attn/c_attn/w` is
`h.3.attn.c_attn.w` here), so that every TF tensor maps onto one parameter.

Inputs are OpenAI's: integer tensors of shape (..., seq, 2) holding, for each position,
a token id and a position id. Both index one embedding matrix `embed`, whose rows are
[BPE tokens | special tokens | positions] (TF `model/we`), and their two rows are summed.

Pretrained weights load from OpenAI's release or from a checkpoint of transformers'
OpenAIGPT models (load_openai_pretrained_model); save_params and load_params keep
fine-tuned parameters as safetensors.
"""
import json
import math
import os
import pickle
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import atomic_write, load_json

OPENAI_MODEL_URL = 'https://github.com/openai/finetune-transformer-lm/tree/master/model'
# OpenAI's weights: one flat float32 array cut into these files, laid out by
# params_shapes.json.
SHARD_NAMES = [f'params_{i}.npy' for i in range(10)]


def gelu(x):
    # TF: 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))), the tanh form, not erf.
    return F.gelu(x, approximate='tanh')


def swish(x):
    return x * torch.sigmoid(x)


ACT_FNS = {'relu': F.relu, 'swish': swish, 'gelu': gelu}


def bernoulli_mask(shape, keep):
    """A boolean mask whose elements are True independently with probability keep, as
    torch.bernoulli draws it, in a fifth of its time on the CPU: 32 random bits per
    element from numpy's SFC64 generator, which is seeded from torch's, so that
    torch.manual_seed and a checkpoint's torch RNG state decide the masks."""
    n = math.prod(shape)
    seed = int(torch.randint(2 ** 62, ()))
    words = np.random.Generator(np.random.SFC64(seed)).bit_generator.random_raw((n + 1) // 2)
    bits = torch.from_numpy(words.view(np.int32)[:n]).view(shape)
    # uniform 32-bit words, read as int32, are uniform over [-2**31, 2**31)
    return bits < min(round(keep * 2 ** 32), 2 ** 32 - 1) - 2 ** 31


def dropout(x, p, training=True):
    """F.dropout, TF's x / keep * mask, its mask drawn by bernoulli_mask on the CPU (where
    torch's draw over the 40990 x 768 embedding matrix cost a tenth of a bf16 update)."""
    if not training or p == 0:
        return x
    # torch's draw on a GPU, and under torch.compile, which fuses it (numpy's does not trace)
    if x.device.type != 'cpu' or p >= 1 or torch.compiler.is_compiling():
        return F.dropout(x, p)
    return torch.where(bernoulli_mask(x.shape, 1 - p), x, 0).mul_(1 / (1 - p))


class Dropout(nn.Dropout):
    """nn.Dropout through dropout() above."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


class Config(dict):
    """A dict whose keys read and write as attributes; unknown names raise."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f'config has no setting {name!r}') from None

    def __setattr__(self, name, value):
        self[name] = value


DEFAULT_CONFIG = Config(n_embd=768, n_head=12, n_layer=12, embd_pdrop=0.1, attn_pdrop=0.1,
                        resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')


class LayerNorm(nn.Module):
    """TF `norm`: (x - mean) / sqrt(var + e) * g + b, epsilon inside the square root."""

    def __init__(self, n_state, e=1e-5):
        super().__init__()
        self.g = nn.Parameter(torch.ones(n_state))
        self.b = nn.Parameter(torch.zeros(n_state))
        self.e = e

    def forward(self, x):
        return F.layer_norm(x, self.g.shape, self.g, self.b, self.e)


class Conv1D(nn.Module):
    """TF `conv1d` with a receptive field of 1, which is a dense layer.

    TF stores w as [1, nx, nf]; here it is (nx, nf), and the loader drops the leading 1.
    """

    def __init__(self, nf, rf, nx):
        super().__init__()
        if rf != 1:
            raise NotImplementedError(f'Conv1D supports rf=1 only (got rf={rf}); '
                                      'fine-tuning never used wider filters')
        self.nf = nf
        self.w = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.b = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        c = torch.addmm(self.b, x.reshape(-1, x.size(-1)), self.w)
        return c.view(*x.shape[:-1], self.nf)


def attend(q, k, v, scale, p, training):
    """TF `_attn`: causal mask, softmax scaled by 1/sqrt(head size) when scale, then
    dropout on the attention weights. q, k, v are (N, head, seq, head size); with a
    KVCache, q holds the last positions of k and v only."""
    s = None if scale else 1.0
    if q.size(-2) < k.size(-2):
        # is_causal aligns the mask to the first key; the queries here are the last ones
        t, n = q.size(-2), k.size(-2)
        mask = None if t == 1 else torch.ones(t, n, dtype=torch.bool, device=q.device).tril(n - t)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=s,
                                              dropout_p=p if training else 0.0)
    # the same cases as dropout() leaves to torch, and out of training
    if (not training or p == 0 or p >= 1 or q.device.type != 'cpu'
            or torch.compiler.is_compiling()):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=s,
                                              dropout_p=p if training else 0.0)
    # On the CPU torch's fused kernel cannot drop out: it falls back to a plain path that
    # draws the mask with torch.bernoulli and took 1.4x (fp32) to 2x (bf16) this one's time.
    if scale:
        q = q * (1 / math.sqrt(q.size(-1)))  # on q, the smaller: the same, exactly, for 64
    w = torch.matmul(q, k.transpose(-1, -2))
    t = w.size(-1)
    w = w.masked_fill(torch.ones(t, t, dtype=torch.bool, device=w.device).triu_(1), -math.inf)
    w = torch.where(bernoulli_mask(w.shape, 1 - p), torch.softmax(w, -1), 0)
    return torch.matmul(w, v).mul_(1 / (1 - p))  # 1/keep on the smaller product


class KVCache:
    """One block's keys and values of the positions it has read, so that a model reading a
    sequence a token at a time (sampling) computes each position once. It holds n_ctx
    positions: a window that slides past them moves every position, and is read afresh."""

    def __init__(self, n_ctx):
        self.n_ctx = n_ctx
        self.k = self.v = None
        self.length = 0

    def extend(self, k, v):
        """k, v (N, head, seq, head size) of the next positions -> those of every position
        so far."""
        if self.k is None:
            # room for the whole window at once: appending by torch.cat would copy it each token
            shape = (*k.shape[:2], self.n_ctx, k.size(-1))
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        end = self.length + k.size(-2)
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def select(self, rows):
        """Keeps the sequences rows (indices, which may repeat) in that order."""
        self.k, self.v = self.k[rows], self.v[rows]


class Attention(nn.Module):
    def __init__(self, nx, n_ctx, cfg, scale=False):
        super().__init__()
        if nx % cfg.n_head != 0:
            raise ValueError(f'n_embd={nx} must be divisible by n_head={cfg.n_head}')
        self.n_head = cfg.n_head
        self.scale = scale
        self.attn_pdrop = cfg.attn_pdrop
        self.c_attn = Conv1D(nx * 3, 1, nx)
        self.c_proj = Conv1D(nx, 1, nx)
        self.resid_dropout = Dropout(cfg.resid_pdrop)

    def split_heads(self, x):
        n, t, c = x.shape
        return x.view(n, t, self.n_head, c // self.n_head).transpose(1, 2)

    def merge_heads(self, x):
        n, h, t, d = x.shape
        return x.transpose(1, 2).reshape(n, t, h * d)

    def forward(self, x, packing=None, cache=None):
        c = self.c_attn(x)
        if packing is not None:
            c = packing.unpack(c)  # attention needs each sequence's own positions
        q, k, v = c.split(x.size(-1), dim=-1)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        if cache is not None:
            k, v = cache.extend(k, v)
        a = self.merge_heads(attend(q, k, v, self.scale, self.attn_pdrop, self.training))
        if packing is not None:
            a = packing.pack(a)
        return self.resid_dropout(self.c_proj(a))


class MLP(nn.Module):
    def __init__(self, n_state, cfg):
        super().__init__()
        nx = cfg.n_embd
        self.c_fc = Conv1D(n_state, 1, nx)
        self.c_proj = Conv1D(nx, 1, n_state)
        self.act = ACT_FNS[cfg.afn]
        self.dropout = Dropout(cfg.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """A post-norm transformer block, as in TF `block`."""

    def __init__(self, n_ctx, cfg, scale=False):
        super().__init__()
        nx = cfg.n_embd
        self.attn = Attention(nx, n_ctx, cfg, scale)
        self.ln_1 = LayerNorm(nx)
        self.mlp = MLP(4 * nx, cfg)
        self.ln_2 = LayerNorm(nx)

    def forward(self, x, packing=None, cache=None):
        n = self.ln_1(x + self.attn(x, packing, cache))
        return self.ln_2(n + self.mlp(n))


class Packing:
    """Where the real tokens of a padded batch lie, so that the position-wise layers (all
    but attention) run on real tokens only.

    mask (N, seq) is 1 at real tokens, which must come before any padding in each row:
    then causal attention never lets a real position see padding, and skipping padding
    computes the same function. n_real, the mask's sum when the caller knows it, spares
    a device-to-host sync.
    """

    def __init__(self, mask, n_real=None):
        self.shape = mask.shape
        flat = mask.reshape(-1) != 0
        self.index = (flat.nonzero().squeeze(1) if n_real is None
                      else torch.nonzero_static(flat, size=n_real).squeeze(1))

    def pack(self, x):
        """(N, seq, ...) -> (n_real, ...)"""
        return x.reshape(-1, *x.shape[2:])[self.index]

    def unpack(self, x):
        """(n_real, ...) -> (N, seq, ...), zeros at padding"""
        out = x.new_zeros(self.shape[0] * self.shape[1], *x.shape[1:])
        return out.index_copy(0, self.index, x).view(*self.shape, *x.shape[1:])


class TransformerModel(nn.Module):
    """The GPT-1 body: returns hidden states of shape (N, seq, n_embd), N the product of
    the input's leading dimensions."""

    def __init__(self, cfg, vocab=40990, n_ctx=512):
        super().__init__()
        if cfg.afn not in ACT_FNS:
            raise ValueError(f'afn must be one of {sorted(ACT_FNS)}, got {cfg.afn!r}')
        self.vocab = vocab
        self.n_ctx = n_ctx
        self.embed = nn.Embedding(vocab, cfg.n_embd)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.drop = Dropout(cfg.embd_pdrop)
        self.h = nn.ModuleList([Block(n_ctx, cfg, scale=True) for _ in range(cfg.n_layer)])

    def dropped_embedding(self):
        # TF drops out the embedding matrix itself, not the looked-up vectors; the same
        # dropped matrix then feeds the tied LM head (see DoubleHeadModel.forward).
        return self.drop(self.embed.weight)

    def forward(self, x, we=None, packing=None, cache=None):
        """x (..., seq, 2); we: the dropped embedding matrix when the caller shares it with
        an LM head; packing: skip padding (see Packing); cache: one KVCache per block,
        holding the positions before x's, which x then extends."""
        if we is None:
            we = self.dropped_embedding()
        x = x.reshape(-1, x.size(-2), x.size(-1))
        if packing is not None:
            x = packing.pack(x)
        # one lookup of both ids: its backward fills one vocab-sized gradient, not two
        h = F.embedding(x, we).sum(-2)
        for block, block_cache in zip(self.h, cache or [None] * len(self.h)):
            h = block(h, packing, block_cache)
        return h if packing is None else packing.unpack(h)

    def new_cache(self):
        """An empty KVCache for each block, for forward's cache."""
        return [KVCache(self.n_ctx) for _ in self.h]


def lm_target_rows(mask, n=None):
    """The row layout of LM logits computed only where the loss counts, shared by LMHead
    and loss.lm_losses: flat indices into the grid (N, seq - 1) of positions 0..seq-2 of
    every sequence (each predicting the token after it), keeping those whose target has
    mask 1, in row-major order. mask is (..., seq); n, their number when the caller knows
    it, spares a device-to-host sync."""
    keep = (mask.reshape(-1, mask.size(-1))[:, 1:] != 0).reshape(-1)
    if n is None:
        return keep.nonzero().squeeze(1)
    return torch.nonzero_static(keep, size=n).squeeze(1)


class LMHead(nn.Module):
    """Language model head, its decoder tied to the embedding matrix."""

    def __init__(self, model, cfg, trunc_and_reshape=True):
        super().__init__()
        self.n_embd = cfg.n_embd
        self.decoder = nn.Linear(cfg.n_embd, model.embed.weight.size(0), bias=False)
        self.decoder.weight = model.embed.weight
        self.trunc_and_reshape = trunc_and_reshape

    def rows(self, h, mask=None, n_targets=None):
        """The hidden states whose logits forward returns: h itself, or with
        trunc_and_reshape, positions 0..seq-2, which predict tokens 1..seq-1, as rows
        (N * (seq - 1), n_embd); with mask (N, seq), only the rows of
        lm_target_rows(mask, n_targets): padding costs no work."""
        if not self.trunc_and_reshape:
            return h
        h = h[:, :-1].reshape(-1, self.n_embd)
        return h if mask is None else h[lm_target_rows(mask, n_targets)]

    def forward(self, h, we=None, mask=None, n_targets=None):
        """Logits of rows(h, mask, n_targets) from hidden states h (N, seq, n_embd), with
        the (dropped) embedding matrix we when given."""
        we = self.decoder.weight if we is None else we
        return F.linear(self.rows(h, mask, n_targets), we)


class LMRows(NamedTuple):
    """LM logits left as the product h @ we.T that makes them: h the hidden states of the
    rows (rows, n_embd), we the (dropped) embedding matrix, both cast as autocast casts
    them for the product. loss.py computes the loss from it a block of rows at a time,
    never holding the rows x vocab logits in float32."""
    h: torch.Tensor
    we: torch.Tensor

    @classmethod
    def of(cls, h, we):
        # the dtype F.linear runs in here (torch < 2.4 cannot ask autocast by device)
        dtype = F.linear(h[:1], we[:1]).dtype
        return cls(h.to(dtype), we.to(dtype))


def pool_clf_h(h, x, clf_token):
    """The hidden state at the first classify token of each sequence, as TF's argmax over
    (token == clf_token); a sequence without one pools position 0, as in TF."""
    tokens = x[..., 0].reshape(h.size(0), h.size(1))
    pool_idx = (tokens == clf_token).int().argmax(dim=1)
    return h[torch.arange(h.size(0), device=h.device), pool_idx]


def init_head(linear):
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)


class MultipleChoiceHead(nn.Module):
    """One logit per choice; x is (batch, n_choices, seq, 2)."""

    def __init__(self, clf_token, cfg):
        super().__init__()
        self.n_embd = cfg.n_embd
        self.clf_token = clf_token
        self.clf_pdrop = cfg.clf_pdrop
        self.linear = nn.Linear(cfg.n_embd, 1)
        init_head(self.linear)

    def forward(self, h, x):
        clf_h = pool_clf_h(h, x, self.clf_token).view(-1, x.size(1), self.n_embd)
        # TF noise_shape [batch, 1, n_embd]: all choices of an example share one mask.
        clf_h = clf_h * dropout(torch.ones_like(clf_h[:, :1]), self.clf_pdrop, self.training)
        return self.linear(clf_h).squeeze(-1)


class ClfHead(nn.Module):
    """n_class logits per sequence; x is (batch, seq, 2)."""

    def __init__(self, clf_token, cfg, n_class):
        super().__init__()
        self.clf_token = clf_token
        self.dropout = Dropout(cfg.clf_pdrop)
        self.linear = nn.Linear(cfg.n_embd, n_class)
        init_head(self.linear)

    def forward(self, h, x):
        return self.linear(self.dropout(pool_clf_h(h, x, self.clf_token)))


class SimilarityHead(nn.Module):
    """The paper's similarity head: x is (batch, 2, seq, 2), the two orderings of each
    pair, whose representations are added before the linear layer. n_class outputs per
    pair: 1, a score (regression, as STS-B), or class logits (as MRPC and QQP)."""

    def __init__(self, clf_token, cfg, n_class=1):
        super().__init__()
        self.n_embd = cfg.n_embd
        self.clf_token = clf_token
        self.dropout = Dropout(cfg.clf_pdrop)
        self.linear = nn.Linear(cfg.n_embd, n_class)
        init_head(self.linear)

    def forward(self, h, x):
        sim_h = pool_clf_h(h, x, self.clf_token).view(-1, x.size(1), self.n_embd).sum(1)
        logits = self.linear(self.dropout(sim_h))
        return logits.squeeze(-1) if logits.size(-1) == 1 else logits


class LMModel(nn.Module):
    """Transformer with the language model head: logits (N, seq, vocab) for every
    position, or, with return_probs, next-token probabilities that never choose a
    position row."""

    def __init__(self, cfg, vocab=40990, n_ctx=512, return_probs=False):
        super().__init__()
        self.transformer = TransformerModel(cfg, vocab=vocab, n_ctx=n_ctx)
        self.lm_head = LMHead(self.transformer, cfg, trunc_and_reshape=False)
        self.return_probs = return_probs
        if return_probs:
            pos_emb_mask = torch.zeros(vocab, dtype=torch.bool)
            pos_emb_mask[vocab - n_ctx:] = True
            self.register_buffer('pos_emb_mask', pos_emb_mask, persistent=False)

    def forward(self, x, lm='logits'):
        """x (..., seq, 2). lm='rows' returns, in place of the logits, LMRows of every
        position (each predicting the token after it, which pre-training's window holds),
        from which loss.py's fused LM loss computes pre-training's loss."""
        we = self.transformer.dropped_embedding()
        h = self.transformer(x, we)
        if lm == 'rows':
            return LMRows.of(h.reshape(-1, h.size(-1)), we)
        lm_logits = self.lm_head(h, we)
        if self.return_probs:
            return F.softmax(lm_logits.masked_fill(self.pos_emb_mask, float('-inf')), dim=-1)
        return lm_logits


def make_task_head(clf_token, cfg, task_head_type):
    if task_head_type == 'multiple_choice':
        return MultipleChoiceHead(clf_token, cfg)
    if task_head_type == 'similarity':
        return SimilarityHead(clf_token, cfg)
    if task_head_type == 'inference':
        return ClfHead(clf_token, cfg, 3)  # entailment, contradiction, neutral
    if isinstance(task_head_type, (tuple, list)) and len(task_head_type) == 2:
        kind, n_class = task_head_type
        if kind == 'classification':
            return ClfHead(clf_token, cfg, n_class)
        if kind == 'similarity':
            return SimilarityHead(clf_token, cfg, n_class)
    raise ValueError("task_head_type must be 'multiple_choice', 'similarity', 'inference', "
                     f"('classification', n_class) or ('similarity', n_class), got "
                     f"{task_head_type!r}")


class DoubleHeadModel(nn.Module):
    """Transformer with the language model head and a task head, as fine-tuned in the
    paper. Returns (lm_logits, task_logits); see LMHead for the lm_logits rows."""

    def __init__(self, cfg, clf_token, task_head_type, vocab=40990, n_ctx=512):
        super().__init__()
        self.transformer = TransformerModel(cfg, vocab=vocab, n_ctx=n_ctx)
        self.lm_head = LMHead(self.transformer, cfg)
        self.task_head = make_task_head(clf_token, cfg, task_head_type)

    def forward(self, x, mask=None, n_real=None, lm=True):
        """x (..., seq, 2). With mask (..., seq), 1 at real tokens, which come first in
        each sequence (at least its start token), padding is skipped (see Packing): the
        same results for less work, and LM logits only at the rows lm_target_rows(mask)
        whose loss counts. n_real, the mask's sum when the caller knows it, spares
        device-to-host syncs. lm=False skips the LM head (lm_logits None), for a loss
        without the LM term or for classifying; lm='rows' returns LMRows in place of the
        logits, for loss.py's fused LM loss."""
        we = self.transformer.dropped_embedding()
        packing = None if mask is None else Packing(mask.reshape(-1, mask.size(-1)), n_real)
        h = self.transformer(x, we, packing)
        lm_logits = None
        if lm:
            # every sequence's real tokens but its first are targets
            n_targets = None if n_real is None else n_real - h.size(0)
            if lm == 'rows':
                lm_logits = LMRows.of(self.lm_head.rows(h, mask, n_targets), we)
            else:
                lm_logits = self.lm_head(h, we, mask, n_targets)
        return lm_logits, self.task_head(h, x)


def block_param_names(n_layer):
    """Names of the block parameters in the order OpenAI's shards store them (the order
    in which TF created its variables)."""
    return [f'h.{i}.{name}' for i in range(n_layer) for name in (
        'attn.c_attn.w', 'attn.c_attn.b', 'attn.c_proj.w', 'attn.c_proj.b',
        'ln_1.g', 'ln_1.b', 'mlp.c_fc.w', 'mlp.c_fc.b', 'mlp.c_proj.w', 'mlp.c_proj.b',
        'ln_2.g', 'ln_2.b')]


def transformers_name(name):
    """The name transformers' OpenAIGPTModel gives one of our block parameters: the same
    module path, its leaf a weight or a bias (h.3.attn.c_attn.w -> h.3.attn.c_attn.weight,
    h.3.ln_1.g -> h.3.ln_1.weight). Its Conv1D stores w as (nx, nf), as ours does."""
    module, leaf = name.rsplit('.', 1)
    return f"{module}.{'bias' if leaf == 'b' else 'weight'}"


# A checkpoint that transformers' OpenAIGPTModel, OpenAIGPTLMHeadModel or
# OpenAIGPTDoubleHeadsModel wrote with save_pretrained, as the Hub's openai-community/
# openai-gpt; of the two weight files, the first present is read.
HF_CONFIG = 'config.json'
HF_WEIGHTS = ['model.safetensors', 'pytorch_model.bin']
HF_VOCAB, HF_MERGES = 'vocab.json', 'merges.txt'
# What transformers' OpenAIGPTConfig takes for a field that config.json leaves out.
HF_DEFAULTS = dict(vocab_size=40478, n_positions=512, n_embd=768, n_layer=12, n_head=12,
                   afn='gelu', layer_norm_epsilon=1e-5)
HF_AFN = {'silu': 'swish'}  # transformers' other name for it
# The files each layout needs, every one given as its alternatives.
WEIGHT_LAYOUTS = {'openai': [['params_shapes.json']] + [[name] for name in SHARD_NAMES],
                  'transformers': [[HF_CONFIG], HF_WEIGHTS]}


def weights_layout(path):
    """Which pretrained weights the folder `path` holds, and which of their files it lacks.

    Returns (layout, missing). layout: 'openai' for OpenAI's model/ folder
    (params_shapes.json, params_0.npy..params_9.npy), 'transformers' for a checkpoint of
    transformers' OpenAIGPT models (config.json, and model.safetensors or
    pytorch_model.bin), or None when the folder, which may not exist, holds a file of
    neither. missing: the paths of the files that layout still needs, [] when it is
    complete (for a transformers checkpoint without weights, model.safetensors); for
    None, those of OpenAI's folder, the default. A complete layout wins over an
    incomplete one, and OpenAI's over a transformers checkpoint.
    """
    unmet = {layout: [alternatives[0] for alternatives in needs
                      if not any(os.path.isfile(os.path.join(path, a)) for a in alternatives)]
             for layout, needs in WEIGHT_LAYOUTS.items()}
    complete = [layout for layout in unmet if not unmet[layout]]
    begun = [layout for layout in unmet if len(unmet[layout]) < len(WEIGHT_LAYOUTS[layout])]
    layout = (complete + begun + [None])[0]
    return layout, [os.path.join(path, name) for name in unmet[layout or 'openai']]


def _missing(what, path):
    return FileNotFoundError(
        f"{what} not found: {path}. The pretrained weights are the model/ folder of "
        f"OpenAI's repository ({OPENAI_MODEL_URL}): run `python download.py` or copy that "
        "folder here, and pass its location as path.")


def _no_weights(path):
    return FileNotFoundError(
        f"no pretrained weights in {path}: found neither OpenAI's "
        f"{os.path.join(path, 'params_shapes.json')} and params_0.npy..params_9.npy (the "
        f"model/ folder of {OPENAI_MODEL_URL}: run `python download.py`) nor a transformers "
        f"checkpoint's {os.path.join(path, HF_CONFIG)} and {' or '.join(HF_WEIGHTS)} (run "
        "`python download.py --from hub`); pass the folder that holds them as path.")


def _layout(path):
    """weights_layout(path)'s layout, once the folder holds all of its files; raises
    FileNotFoundError naming what is missing."""
    layout, missing = weights_layout(path)
    if layout is None:
        raise _no_weights(path)
    if missing and layout == 'openai':
        raise _missing(os.path.basename(missing[0]), missing[0])
    if missing:
        raise FileNotFoundError(f'{missing[0]} not found: a transformers checkpoint is '
                                f'{HF_CONFIG} with {" or ".join(HF_WEIGHTS)}, as '
                                'save_pretrained writes them')
    return layout


def shard_length(path):
    """Number of float32 values in one of OpenAI's shards, read from its header; raises
    ValueError unless the file holds exactly what its header promises (a truncated
    transfer or trailing bytes fail)."""
    try:
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f'{path} is not a valid .npy file ({err}); download it again') from None
    if dtype != np.float32 or len(shape) != 1:
        raise ValueError(f'{path} holds {dtype} of shape {shape}; OpenAI\'s shards hold '
                         'one-dimensional float32 arrays')
    expected = offset + shape[0] * 4
    if os.path.getsize(path) != expected:
        raise ValueError(f'{path} is truncated or corrupt: {os.path.getsize(path)} bytes, '
                         f'its header promises {expected}; download it again')
    return shape[0]


def check_shard_total(folder, shapes, lengths):
    """The shards are one flat array cut in pieces: together (lengths: shard name -> values)
    they must hold exactly the values that the shapes of params_shapes.json lay out."""
    need, total = sum(math.prod(s) for s in shapes), sum(lengths.values())
    if total != need:
        counts = ', '.join(f'{name}: {n}' for name, n in lengths.items())
        raise ValueError(f'the shards in {folder} hold {total} float32 values ({counts}), but '
                         f'params_shapes.json lays out {need}: a shard is missing data or '
                         'from another release')


class _FlatReader:
    """Reads OpenAI's one flat array shard by shard, so that loading holds at most one
    shard beside the model."""

    def __init__(self, paths):
        self.paths = iter(paths)
        self.shard = np.empty(0, np.float32)
        self.pos = 0

    def read_into(self, dest):
        dest = dest.view(-1)
        done = 0
        while done < dest.numel():
            if self.pos == len(self.shard):
                self.shard, self.pos = np.load(next(self.paths), allow_pickle=False), 0
            n = min(dest.numel() - done, len(self.shard) - self.pos)
            dest[done:done + n].copy_(torch.from_numpy(self.shard[self.pos:self.pos + n]))
            done += n
            self.pos += n


def _read_tensor_file(path, what, map_location='cpu', tensors=True):
    """(metadata, tensors by name) of a safetensors file, or (None, the object) of a
    torch.save file, told apart by the zip archive torch.save writes; neither runs
    pickled code. Raises ValueError saying that path is not `what` when it cannot be read
    (truncated, garbage), FileNotFoundError when it does not exist. Without tensors, a
    safetensors file's header alone is read and checked, and its names returned."""
    with open(path, 'rb') as f:
        zipped = f.read(4) == b'PK\x03\x04'
    # Imported here, so that importing this module needs torch and numpy only.
    from safetensors import SafetensorError, safe_open
    try:
        if zipped:
            return None, torch.load(path, map_location=map_location, weights_only=True)
        with safe_open(path, framework='pt', device=str(map_location)) as f:
            if not tensors:
                return f.metadata() or {}, list(f.keys())
            return f.metadata() or {}, {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        # the reader's first sentence: torch goes on for a paragraph
        reason = str(err).split('\n')[0].split('. ')[0] or type(err).__name__
        raise ValueError(f'{path} is not {what} ({reason})') from None


def check_params_shapes(path):
    """OpenAI's params_shapes.json: the positions [n_ctx, n_embd], the tokens [n_vocab,
    n_embd], then 12 tensors per block, each shape a list of sizes."""
    shapes = load_json(path)
    if not (isinstance(shapes, list) and all(
            isinstance(s, list) and all(type(d) is int and d >= 0 for d in s) for s in shapes)):
        raise ValueError(f'{path} is not a list of tensor shapes (lists of whole numbers)')
    if not (len(shapes) >= 2 and len(shapes) % 12 == 2 and len(shapes[0]) == len(shapes[1]) == 2
            and shapes[0][1] == shapes[1][1]):
        raise ValueError(f"{path} does not lay out OpenAI's model: expected [n_ctx, n_embd], "
                         '[n_vocab, n_embd], then 12 shapes per block; found '
                         f'{len(shapes)} shapes, starting {shapes[:2]}')


def check_weights_files(model_dir):
    """Before anything heavy loads, what of the weights in model_dir can be checked at
    once: OpenAI's params_shapes.json lays out OpenAI's model; a transformers checkpoint's
    model.safetensors has a whole header (a truncated or overwritten file fails). Absent
    files are left to the loader, whose message says how to get them."""
    layout = weights_layout(model_dir)[0]
    shapes = os.path.join(model_dir, 'params_shapes.json')
    if layout == 'openai' and os.path.isfile(shapes):
        check_params_shapes(shapes)
    weights = os.path.join(model_dir, HF_WEIGHTS[0])
    if layout == 'transformers' and os.path.isfile(weights):
        _read_tensor_file(weights, 'a checkpoint of transformers', tensors=False)


def _read_shapes(path):
    with open(os.path.join(path, 'params_shapes.json')) as f:
        return [tuple(s) for s in json.load(f)]


def _read_config(path):
    """config.json of a transformers checkpoint, transformers' defaults filling the fields
    it leaves out."""
    file = os.path.join(path, HF_CONFIG)
    try:
        with open(file, encoding='utf-8') as f:
            return {**HF_DEFAULTS, **json.load(f)}
    except (ValueError, TypeError) as err:  # not JSON, or not an object
        raise ValueError(f'{file} is not the config.json of a checkpoint ({err})') from None


def _read_transformers_state(path):
    """(file, tensors by name) of a transformers checkpoint, the body's names without the
    'transformer.' prefix that the head models give them."""
    file = next(p for p in (os.path.join(path, name) for name in HF_WEIGHTS) if os.path.isfile(p))
    _, state = _read_tensor_file(file, 'a checkpoint of transformers')
    if not isinstance(state, dict):
        raise ValueError(f'{file} is not a checkpoint of transformers (no tensors by name)')
    return file, {name.removeprefix('transformer.'): t for name, t in state.items()}


def bpe_rows(path, n_rows, config):
    """How many of the n_rows token embeddings of the transformers checkpoint in path are
    BPE tokens: as many as its vocab.json has entries (40478 for the Hub's); without a
    vocab.json, all but the n_special that export.py records in config.json (0 in
    transformers' own). The rows after them, an export's special tokens, are not loaded."""
    vocab_path = os.path.join(path, HF_VOCAB)
    if os.path.isfile(vocab_path):
        with open(vocab_path, encoding='utf-8') as f:
            n_vocab = len(json.load(f))
        source = f'{vocab_path} has {n_vocab} tokens'
    else:
        n_vocab = n_rows - config.get('n_special', 0)
        source = f"n_special={config.get('n_special', 0)} in config.json leaves {n_vocab} tokens"
    if not 0 < n_vocab <= n_rows:
        raise ValueError(f'{source}, but the checkpoint in {path} embeds {n_rows}')
    return n_vocab


def _afn_name(act):
    return next(name for name, fn in ACT_FNS.items() if fn is act)


def pretrained_settings(path):
    """(cfg, n_vocab, n_ctx) of the pretrained weights in the folder path, OpenAI's or a
    transformers checkpoint (see weights_layout): a Config that builds a model taking all
    their blocks (dropouts as in DEFAULT_CONFIG; OpenAI's release does not record n_head,
    which is 12), the number of BPE tokens (see bpe_rows) and of positions. Raises
    FileNotFoundError as load_openai_pretrained_model does."""
    if _layout(path) == 'openai':
        shapes = _read_shapes(path)
        (n_ctx, n_embd), n_vocab = shapes[0], shapes[1][0]
        cfg = Config(DEFAULT_CONFIG, n_embd=n_embd, n_layer=(len(shapes) - 2) // 12)
        return cfg, n_vocab, n_ctx
    config = _read_config(path)
    cfg = Config(DEFAULT_CONFIG, n_embd=config['n_embd'], n_layer=config['n_layer'],
                 n_head=config['n_head'], afn=HF_AFN.get(config['afn'], config['afn']))
    return cfg, bpe_rows(path, config['vocab_size'], config), config['n_positions']


def _resolve_n_ctx(n_ctx, n_pretrained):
    n_ctx = n_pretrained if n_ctx == -1 else n_ctx
    if not 0 < n_ctx <= n_pretrained:
        raise ValueError(f'n_ctx={n_ctx}: the pretrained model has {n_pretrained} positions, '
                         f'so n_ctx must be between 1 and {n_pretrained} (or -1 for all)')
    return n_ctx


def _check_embed(we, n_vocab, n_special, n_ctx, n_embd):
    expected = (n_vocab + n_special + n_ctx, n_embd)
    if tuple(we.shape) != expected:
        raise ValueError(f'embed.weight: the model has shape {tuple(we.shape)}, the weights '
                         f'give {expected} ({n_vocab} tokens + n_special={n_special} + '
                         f'n_ctx={n_ctx}); build the model with vocab={expected[0]}')


def _blocks_to_load(transformer, n_transfer, n_released, path):
    """The names of the parameters of the first n_transfer blocks, at most as many as the
    model has: as TF's zip of variables and arrays, a model with fewer blocks than the
    weights takes the first ones."""
    n_blocks = min(n_transfer, len(transformer.h))
    if n_blocks > n_released:
        raise ValueError(f'n_transfer={n_transfer} and the model has {len(transformer.h)} '
                         f'blocks, but the weights in {path} hold {n_released} '
                         f'(n_layer={n_released}): lower n_transfer or build the model with '
                         f'n_layer={n_released}')
    return block_param_names(n_blocks)


def _check_shapes(params, given, source):
    """given: parameter name -> (the shape the weights give it, that shape as `source`
    writes it)."""
    for name, (shape, written) in given.items():
        if tuple(params[name].shape) != tuple(shape):
            raise ValueError(f'{name}: the model has shape {tuple(params[name].shape)}, '
                             f'{source} gives {list(written)}')


def _check_config(config, transformer, blocks, path):
    """The settings of config.json that change what the weights compute must be the
    model's: its width, and when blocks are loaded, heads, activation and epsilon."""
    ours = {'n_embd': transformer.embed.weight.size(1)}
    if blocks:
        block = transformer.h[0]
        ours.update(n_head=block.attn.n_head, afn=_afn_name(block.mlp.act),
                    layer_norm_epsilon=block.ln_1.e)
    theirs = {**config, 'afn': HF_AFN.get(config['afn'], config['afn'])}
    diff = [f'{key} {theirs[key]!r} there, {value!r} in the model' for key, value in ours.items()
            if theirs[key] != value]
    if diff:
        raise ValueError(f'{os.path.join(path, HF_CONFIG)} describes another model: '
                         f'{", ".join(diff)}')


def _special_rows(n_special, n_embd):
    # numpy's global generator, as TF's train.py: the same seed gives the same rows.
    return torch.from_numpy((np.random.randn(n_special, n_embd) * 0.02).astype(np.float32))


def _fill_embed_tail(we, n_vocab, n_special, positions):
    """The rows after the n_vocab BPE tokens: the special tokens, then the positions."""
    we[n_vocab:n_vocab + n_special] = _special_rows(n_special, we.size(1))
    we[n_vocab + n_special:] = positions


def load_openai_pretrained_model(model, n_ctx=-1, n_special=-1, n_transfer=12, n_embd=768,
                                 path='./model/'):
    """Loads GPT-1's pretrained weights from the folder path into a TransformerModel, or
    into a model holding one as `.transformer`. The folder is OpenAI's model/ folder
    (params_shapes.json, params_0.npy..params_9.npy) or a checkpoint of transformers'
    OpenAIGPTModel, OpenAIGPTLMHeadModel or OpenAIGPTDoubleHeadsModel (config.json and
    model.safetensors or pytorch_model.bin, as `python download.py --from hub` fetches),
    told apart by weights_layout.

    The embedding becomes [the BPE tokens | n_special rows drawn N(0, 0.02) | the first
    n_ctx positions] (n_ctx=-1: all the weights have; n_special=-1: none). The first
    n_transfer blocks are loaded (at most as many as the model has); n_transfer=-1 loads
    nothing at all, not even the embedding, as in OpenAI's train.py. Task heads start
    afresh, as in OpenAI's fine-tuning: a checkpoint's multiple-choice head is not loaded.

    The special rows come from numpy's global generator, as in OpenAI's train.py, which
    draws them even when it transfers nothing: so does this function, so that the
    training order that follows from a seed is OpenAI's for every n_transfer.

    From a transformers checkpoint: tokens_embed (which OpenAIGPTDoubleHeadsModel saves
    as lm_head.weight) gives the BPE rows, as many as bpe_rows counts, so that the
    special rows of an export.py folder are drawn afresh too; positions_embed gives the
    positions; and config.json must describe the model (n_embd; n_head, afn and
    layer_norm_epsilon when blocks are loaded).
    """
    transformer = getattr(model, 'transformer', model)
    n_special = max(n_special, 0)
    if n_transfer == -1:
        _special_rows(n_special, transformer.embed.weight.size(1))
        return
    if n_embd != transformer.embed.weight.size(1):
        raise ValueError(f'n_embd={n_embd} but the model is {transformer.embed.weight.size(1)} wide')
    if n_transfer < 0:
        raise ValueError(f'n_transfer={n_transfer}: expected a number of blocks, or -1 for none')
    load = _load_shards if _layout(path) == 'openai' else _load_transformers
    load(transformer, n_ctx, n_special, n_transfer, path)


def _load_shards(transformer, n_ctx, n_special, n_transfer, path):
    shapes = _read_shapes(path)
    n_ctx = _resolve_n_ctx(n_ctx, shapes[0][0])
    shard_paths = [os.path.join(path, name) for name in SHARD_NAMES]
    check_shard_total(path, shapes, {os.path.basename(p): shard_length(p) for p in shard_paths})
    we = transformer.embed.weight
    n_vocab = shapes[1][0]
    _check_embed(we, n_vocab, n_special, n_ctx, shapes[1][1])
    names = _blocks_to_load(transformer, n_transfer, len(shapes[2:]) // 12, path)
    params = dict(transformer.named_parameters())
    # TF's conv w is [1, nx, nf]
    _check_shapes(params, {name: (shape[1:] if name.endswith('.w') else shape, shape)
                           for name, shape in zip(names, shapes[2:])}, 'params_shapes.json')
    with torch.no_grad():
        reader = _FlatReader(shard_paths)
        positions = torch.empty(shapes[0])
        reader.read_into(positions)
        reader.read_into(we[:n_vocab])
        _fill_embed_tail(we, n_vocab, n_special, positions[:n_ctx])
        for name in names:
            reader.read_into(params[name].data)


def _load_transformers(transformer, n_ctx, n_special, n_transfer, path):
    config = _read_config(path)
    _check_config(config, transformer, min(n_transfer, len(transformer.h)) > 0, path)
    names = _blocks_to_load(transformer, n_transfer, config['n_layer'], path)
    file, state = _read_transformers_state(path)

    def tensor(*candidates):
        found = next((state[name] for name in candidates if name in state), None)
        if found is None:
            raise ValueError(f'{file} has no tensor {candidates[0]}: it is not a checkpoint '
                             "of transformers' OpenAIGPT models")
        return found

    # OpenAIGPTDoubleHeadsModel saves the matrix it ties under its LM head's name.
    tokens = tensor('tokens_embed.weight', 'lm_head.weight')
    positions = tensor('positions_embed.weight')
    n_ctx = _resolve_n_ctx(n_ctx, positions.size(0))
    n_vocab = bpe_rows(path, tokens.size(0), config)
    we = transformer.embed.weight
    _check_embed(we, n_vocab, n_special, n_ctx, tokens.size(1))
    given = {name: tensor(transformers_name(name)) for name in names}
    params = dict(transformer.named_parameters())
    _check_shapes(params, {name: (t.shape, t.shape) for name, t in given.items()}, file)
    with torch.no_grad():
        we[:n_vocab] = tokens[:n_vocab]
        _fill_embed_tail(we, n_vocab, n_special, positions[:n_ctx])
        for name, t in given.items():
            params[name].copy_(t)


PARAMS_FILE = 'a parameters file of this project'  # as save_params writes them


def save_params(path, model, **meta):
    """Writes the model's parameters as safetensors, atomically, with the settings that
    rebuild the model (meta: what json.dumps takes) as JSON in the file's metadata.
    safetensors.torch.load_file reads the file alone, and nothing in it is pickled. A
    tensor under two names (the LM decoder, tied to the embedding) is stored once, under
    its first name; load_params restores the tie."""
    from safetensors.torch import save  # here: importing this module needs torch and numpy only
    tensors, tied, first = {}, {}, {}
    for name, t in model.state_dict().items():
        where = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
        if t.numel() and where in first:
            tied[name] = first[where]
        else:
            first[where] = name
            tensors[name] = t.detach().cpu().contiguous()
    data = save(tensors, metadata={'meta': json.dumps(meta), 'tied': json.dumps(tied)})
    with atomic_write(path) as f:
        f.write(data)


def load_params(path, map_location='cpu'):
    """(meta, state_dict) from a file of save_params, on map_location; the state_dict
    holds the tied names too, as the model's own does.

    Files that earlier versions wrote with torch.save ({'meta': ..., 'model': ...}, such
    as an existing best_params.pt) still load, through torch.load(weights_only=True):
    tensors only, never pickled code. Raises FileNotFoundError when path does not exist,
    and ValueError naming path when it is not such a file (truncated, garbage, or
    another program's tensors).
    """
    metadata, content = _read_tensor_file(path, PARAMS_FILE, map_location)
    if metadata is None:
        if isinstance(content, dict) and content.keys() >= {'meta', 'model'}:
            return content['meta'], content['model']
    elif 'meta' in metadata:
        for name, first in json.loads(metadata.get('tied', '{}')).items():
            content[name] = content[first]
        return json.loads(metadata['meta']), content
    raise ValueError(f'{path} is not {PARAMS_FILE} (it holds no settings)')


# What train.py --submit records beside the parameters, enough to rebuild the model.
TRAINED_META = ('cfg', 'n_vocab', 'n_special', 'n_ctx')


def load_trained_params(path, map_location='cpu'):
    """load_params(path) of a file that train.py --submit wrote: raises ValueError when
    its settings lack one of TRAINED_META."""
    meta, state = load_params(path, map_location)
    absent = [key for key in TRAINED_META if key not in meta]
    if absent:
        raise ValueError(f'{path} lacks the settings {absent}: it was not written by '
                         'train.py --submit')
    return meta, state
