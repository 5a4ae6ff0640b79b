"""generate.sample's key/value cache, its batch of samples and its draws, on a tiny random
LM: against LMModel read over whole windows, against sample() without the cache, against
transformers' generate, and against hand-worked distributions."""
import numpy as np
import pytest
import torch

import export
import generate
from model_pytorch import Config, LMModel, save_params

CFG = Config(n_embd=16, n_head=2, n_layer=2, embd_pdrop=0.1, attn_pdrop=0.1,
             resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')
N_VOCAB, N_SPECIAL, N_CTX = 20, 3, 10
DIMS = dict(n_vocab=N_VOCAB, n_special=N_SPECIAL, n_ctx=N_CTX)
PROMPT = [3, 7, 1, 12]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.manual_seed(2)
    model = LMModel(CFG, vocab=N_VOCAB + N_SPECIAL + N_CTX, n_ctx=N_CTX)
    # Wider than the N(0, 0.02) init, so that the next token depends on the context.
    torch.nn.init.normal_(model.transformer.embed.weight, std=1.0)
    path = str(tmp_path_factory.mktemp('lm') / 'best_params.safetensors')
    save_params(path, model, cfg=dict(CFG), **DIMS)
    return path


@pytest.fixture(scope='module')
def lm(checkpoint):
    model, dims = generate.load_lm(checkpoint)
    assert dims == DIMS
    return model


def window_inputs(rows):
    """(N, seq, 2): rows of tokens and their positions, numbered from 0."""
    positions = torch.arange(rows.size(1)) + N_VOCAB + N_SPECIAL
    return torch.stack([rows, positions.expand_as(rows)], dim=-1)


def seeded(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_the_cache_reads_one_position_and_gives_what_whole_windows_give(lm):
    """Token by token over three rows, one of them dropped midway, past n_ctx: the cached
    reader's probabilities are LMModel's over each row's last n_ctx tokens, read whole; and
    while the window has not slid, each token costs the body one position."""
    rows = torch.randint(0, N_VOCAB + N_SPECIAL, (3, 2 * N_CTX + 3),
                         generator=torch.Generator().manual_seed(0))
    reader = generate._Reader(lm, **DIMS, use_cache=True)
    read, got, kept = [], {}, {}
    hook = lm.transformer.h[0].register_forward_hook(lambda m, args, out: read.append(out.size(1)))
    try:
        for t in range(len(PROMPT), rows.size(1) + 1):
            kept[t] = [0, 1, 2] if t < N_CTX - 3 else [2, 0]
            if t == N_CTX - 3:
                reader.select([2, 0])
            got[t] = reader(rows[kept[t], :t]).softmax(-1)
    finally:
        hook.remove()
    for t, probs in got.items():
        with torch.no_grad():
            expected = lm(window_inputs(rows[kept[t], max(0, t - N_CTX):t]))[:, -1]
        torch.testing.assert_close(probs, expected[:, :N_VOCAB], atol=1e-6, rtol=1e-5)
        assert expected[:, N_VOCAB:].sum() == 0  # load_lm leaves text all the probability
    assert read == [len(PROMPT)] + [1] * (N_CTX - len(PROMPT)) + [N_CTX] * (rows.size(1) - N_CTX)


def test_a_cache_extended_by_several_positions_gives_one_pass(lm):
    """The body reading a window in three parts, a KVCache holding the parts before: the
    hidden states of one pass over the window, causal within each part too."""
    tokens = torch.randint(0, N_VOCAB, (2, N_CTX), generator=torch.Generator().manual_seed(1))
    rows = window_inputs(tokens)
    cache = lm.transformer.new_cache()
    with torch.no_grad():
        parts = [lm.transformer(rows[:, a:b], cache=cache)
                 for a, b in ((0, 3), (3, 4), (4, N_CTX))]
        expected = lm.transformer(rows)
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, atol=1e-5, rtol=1e-5)
    assert cache[0].length == N_CTX


@pytest.mark.parametrize('prompt', [PROMPT, list(range(N_CTX + 2))], ids=['short', 'past_n_ctx'])
def test_the_cache_draws_what_whole_windows_draw(lm, prompt):
    """A fixed top-k draw of three samples past n_ctx: the same ids with and without the
    cache."""
    def draw(use_cache):
        return generate.sample(lm, prompt, 2 * N_CTX, **DIMS, top_k=5, num_samples=3,
                               generator=seeded(1, 2, 3), use_cache=use_cache)
    cached = draw(True)
    assert cached == draw(False)
    assert len({tuple(s) for s in cached}) == 3


def test_each_of_many_samples_is_the_one_its_generator_draws_alone(lm):
    together = generate.sample(lm, PROMPT, 12, **DIMS, top_p=0.9, temperature=3.0,
                               num_samples=4, generator=seeded(10, 11, 12, 13))
    alone = [generate.sample(lm, PROMPT, 12, **DIMS, top_p=0.9, temperature=3.0,
                             generator=g) for g in seeded(10, 11, 12, 13)]
    assert together == alone
    assert len({tuple(s) for s in together}) == 4


def test_a_sample_ends_with_its_first_stop_sequence_the_others_go_on(lm):
    drawn = generate.sample(lm, PROMPT, 12, **DIMS, num_samples=4, generator=seeded(*range(4)))
    stop = [[drawn[0][2]], drawn[1][3:5]]
    stopped = generate.sample(lm, PROMPT, 12, **DIMS, num_samples=4, generator=seeded(*range(4)),
                              stop=stop)

    def cut(ids):
        ends = [i + len(s) for i in range(len(ids)) for s in stop if ids[i:i + len(s)] == s]
        return ids[:min(ends, default=len(ids))]
    assert stopped == [cut(ids) for ids in drawn]
    assert len(stopped[0]) <= 3 and len(stopped[1]) <= 5


def test_greedy_decoding_is_transformers_generate(checkpoint, lm, tmp_path):
    """transformers' OpenAIGPTLMHeadModel.generate on export.py's copy of the model, told not
    to draw the special tokens, which load_lm masks: the same greedy tokens up to its n_ctx,
    where transformers stops."""
    transformers = pytest.importorskip('transformers')
    export.export(checkpoint, str(tmp_path / 'hf'))
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(str(tmp_path / 'hf')).eval()
    ids = torch.tensor([PROMPT])
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=N_CTX - len(PROMPT), pad_token_id=0,
                           suppress_tokens=list(range(N_VOCAB, N_VOCAB + N_SPECIAL)))
    expected = expected[0, len(PROMPT):].tolist()
    assert len(set(expected)) > 1  # a test that a constant output could not pass
    assert generate.sample(lm, PROMPT, N_CTX - len(PROMPT), **DIMS, temperature=0) == expected


def bf16_copy(lm):
    model = LMModel(CFG, vocab=N_VOCAB + N_SPECIAL + N_CTX, n_ctx=N_CTX, return_probs=True)
    model.load_state_dict(lm.state_dict())
    return model.to(torch.bfloat16)


def test_bf16_weights_by_columns_draw_what_they_draw_by_rows(lm):
    """cast_for_sampling's layout holds the same weights, which sample() multiplies by one
    row with torch's own kernel: the same greedy tokens as oneDNN's products over the
    weights as they were, with and without the cache, oneDNN left on."""
    plain = bf16_copy(lm)
    cast = generate.cast_for_sampling(bf16_copy(lm), torch.bfloat16)
    for (name, p), q in zip(plain.named_parameters(), cast.parameters()):
        assert torch.equal(p, q) and p.shape == q.shape, name
    weights = [conv.w for conv in generate._dense_layers(cast)]
    assert len(weights) == 4 * CFG.n_layer and all(w.stride(0) == 1 for w in weights)
    greedy = [generate.sample(model, PROMPT, 2 * N_CTX, **DIMS, temperature=0, use_cache=c)
              for model in (plain, cast) for c in (True, False)]
    assert all(g == greedy[0] for g in greedy) and len(set(greedy[0])) > 1
    assert torch.backends.mkldnn.enabled


PROBS = [0.5, 0.3, 0.15, 0.05]


@pytest.mark.parametrize('top_k, top_p, temperature, expected', [
    (0, 1.0, 1.0, PROBS),
    (0, 0.75, 1.0, [0.625, 0.375, 0, 0]),  # 0.5 short of 0.75, then 0.8 is enough
    (0, 0.6, 1.0, [0.625, 0.375, 0, 0]),
    (0, 0.6, 0.5, [1, 0, 0, 0]),  # the temperature first: p**2 gives the first 0.68
    (3, 0.83, 1.0, [0.625, 0.375, 0, 0]),  # top_k first: 0.5 / 0.95 + 0.3 / 0.95 = 0.84
    (0, 0.83, 1.0, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]),
])
def test_top_p_keeps_the_fewest_tokens_that_reach_it(top_k, top_p, temperature, expected):
    """Nucleus sampling as transformers orders it (temperature, top_k, top_p), by the
    frequencies of 4000 draws."""
    n = 4000
    logits = torch.tensor(PROBS).log().expand(n, -1)
    draws = generate._draw(logits, top_k, temperature, top_p, seeded(0) * n)
    counts = np.bincount(draws.numpy(), minlength=4) / n
    assert all(counts[np.array(expected) == 0] == 0)
    np.testing.assert_allclose(counts, expected, atol=0.03)
