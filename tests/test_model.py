"""The model against Hugging Face transformers' OpenAIGPT models, an independent
implementation of the same network, and against TF's formulas."""
import math

import pytest
import torch

import model_pytorch as mp
from model_pytorch import Config, DoubleHeadModel, LMModel, TransformerModel, dropout

transformers = pytest.importorskip('transformers')

SMALL = Config(n_embd=32, n_head=4, n_layer=2, embd_pdrop=0.1, attn_pdrop=0.1,
               resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')


def hf_twin(ours, cfg, n_tok, n_ctx):
    """A transformers OpenAIGPTDoubleHeadsModel holding our weights."""
    hf_cfg = transformers.OpenAIGPTConfig(
        vocab_size=n_tok, n_positions=n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, afn='gelu', layer_norm_epsilon=1e-5, summary_type='cls_index',
        summary_use_proj=True, summary_proj_to_labels=True, num_labels=1)
    hf = transformers.OpenAIGPTDoubleHeadsModel(hf_cfg).eval()
    body = ours.transformer
    with torch.no_grad():
        hf.transformer.tokens_embed.weight.copy_(body.embed.weight[:n_tok])
        hf.transformer.positions_embed.weight.copy_(body.embed.weight[n_tok:])
        for ours_b, hf_b in zip(body.h, hf.transformer.h):
            for mod in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'):
                src, dst = ours_b.get_submodule(mod), hf_b.get_submodule(mod)
                dst.weight.copy_(src.w)
                dst.bias.copy_(src.b)
            for ln in ('ln_1', 'ln_2'):
                hf_b.get_submodule(ln).weight.copy_(ours_b.get_submodule(ln).g)
                hf_b.get_submodule(ln).bias.copy_(ours_b.get_submodule(ln).b)
        hf.multiple_choice_head.summary.weight.copy_(ours.task_head.linear.weight)
        hf.multiple_choice_head.summary.bias.copy_(ours.task_head.linear.bias)
    return hf


def randomize(model):
    """Weights far from their N(0, 0.02) start, so that every non-linearity is exercised
    (at the start, GELU's tanh and erf forms agree to 1e-6)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('.g'):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 2 and not name.endswith('embed.weight'):
                p.normal_(0, 1.5 / math.sqrt(p.size(0)))
            else:
                p.normal_(0, 0.5)


def story_batch(n_tok, n_ctx, clf_token, batch=2, n_choices=2, seq=11, seed=0):
    """Token ids with a classify token at a different place in each sequence, and
    OpenAI's position ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, n_tok - 3, (batch, n_choices, seq), generator=g)
    clf_pos = torch.randint(seq // 2, seq, (batch, n_choices), generator=g)
    ids.scatter_(2, clf_pos[..., None], clf_token)
    pos = (n_tok + torch.arange(seq)).expand(batch, n_choices, seq)
    return torch.stack([ids, pos], -1), ids, clf_pos


def assert_rel_close(a, b, rtol=1e-5):
    """Agreement relative to the tensor's scale: float32 sums of hundreds of terms carry
    rounding of that order, so elementwise relative error near zero means nothing."""
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= rtol * b.abs().max().item(), f'max error {err} vs scale {b.abs().max()}'


@pytest.mark.parametrize('cfg,n_tok,n_ctx', [(SMALL, 103, 16), (mp.DEFAULT_CONFIG, 40481, 512)],
                         ids=['small', 'default'])
def test_parity_with_transformers(cfg, n_tok, n_ctx):
    torch.manual_seed(0)
    clf_token = n_tok - 1
    ours = DoubleHeadModel(cfg, clf_token, 'multiple_choice', vocab=n_tok + n_ctx,
                           n_ctx=n_ctx).eval()
    randomize(ours)
    hf = hf_twin(ours, cfg, n_tok, n_ctx)
    x, ids, clf_pos = story_batch(n_tok, n_ctx, clf_token)
    with torch.no_grad():
        h = ours.transformer(x)
        lm_logits, mc_logits = ours(x)
        out = hf(input_ids=ids, mc_token_ids=clf_pos)
        hf_h = hf.transformer(input_ids=ids.view(-1, ids.size(-1))).last_hidden_state
    assert_rel_close(h, hf_h)
    assert_rel_close(lm_logits[:, :n_tok], out.logits[:, :, :-1].reshape(-1, n_tok))
    assert_rel_close(mc_logits, out.mc_logits)


def tf_attention(q, k, v):
    """TF `_attn` in float64: multiplicative band mask with -1e9, scale by 1/sqrt(d)."""
    w = q @ k.transpose(-1, -2) / math.sqrt(v.size(-1))
    n = w.size(-1)
    b = torch.tril(torch.ones(n, n, dtype=w.dtype))
    w = w * b + -1e9 * (1 - b)
    return torch.softmax(w, -1) @ v


def test_attention_matches_tf_formula():
    torch.manual_seed(1)
    attn = mp.Attention(32, 16, SMALL, scale=True).eval()
    x = torch.randn(3, 9, 32)
    c = (x.double() @ attn.c_attn.w.double() + attn.c_attn.b.double())
    q, k, v = (t.view(3, 9, 4, 8).transpose(1, 2) for t in c.split(32, -1))
    a = tf_attention(q, k, v).transpose(1, 2).reshape(3, 9, 32)
    expected = a @ attn.c_proj.w.double() + attn.c_proj.b.double()
    torch.testing.assert_close(attn(x).double(), expected, rtol=1e-5, atol=1e-6)


def test_layernorm_and_gelu_match_tf_formulas():
    x = torch.randn(4, 32, dtype=torch.float64) * 3 + 1
    ln = mp.LayerNorm(32, e=1e-5).double()
    with torch.no_grad():
        ln.g.uniform_(0.5, 1.5)
        ln.b.uniform_(-1, 1)
    u = x.mean(-1, keepdim=True)
    s = ((x - u) ** 2).mean(-1, keepdim=True)
    torch.testing.assert_close(ln(x), (x - u) / torch.sqrt(s + 1e-5) * ln.g + ln.b)
    tf_gelu = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(mp.gelu(x), tf_gelu)


def test_parameter_names_follow_tf():
    names = {n for n, _ in TransformerModel(SMALL, vocab=50, n_ctx=8).named_parameters()}
    assert names == {'embed.weight'} | set(mp.block_param_names(2))


def test_padding_does_not_change_real_positions():
    torch.manual_seed(2)
    model = TransformerModel(SMALL, vocab=60, n_ctx=16).eval()
    x, _, _ = story_batch(44, 16, 43, seq=7)
    padded = torch.cat([x, torch.zeros(2, 2, 5, 2, dtype=x.dtype)], 2)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:, :7], model(x))


def test_classifier_reads_first_classify_token():
    torch.manual_seed(3)
    model = DoubleHeadModel(SMALL, 40, 'multiple_choice', vocab=60, n_ctx=16).eval()
    x, _, _ = story_batch(44, 16, 40, batch=1, n_choices=2, seq=8)
    x[0, 0, :, 0] = torch.tensor([5, 6, 40, 7, 40, 8, 9, 10])
    x[0, 1, :, 0] = torch.tensor([5, 6, 7, 8, 9, 10, 11, 12])  # none: TF pools position 0
    with torch.no_grad():
        h = model.transformer(x)
        _, logits = model(x)
    lin = model.task_head.linear
    expected = torch.stack([lin(h[0, 2]), lin(h[1, 0])]).view(1, 2)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize('n_class', [1, 3])
def test_similarity_head_adds_both_orderings_then_its_linear_layer(n_class):
    """The paper's similarity head, worked by hand in float64: the transformer run on each
    ordering alone, each one's state at its first classify token, the two added, then the
    head's weights; on the plain path and the padding-free one. A head that read one
    ordering twice, or another token, differs."""
    cfg = Config(SMALL, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)
    torch.manual_seed(5)
    head = 'similarity' if n_class == 1 else ('similarity', n_class)
    model = DoubleHeadModel(cfg, 40, head, vocab=60, n_ctx=16).eval()
    randomize(model)
    x, _, _ = story_batch(44, 16, 40, batch=3, n_choices=2, seq=9)
    x[..., 0] = torch.where(x[..., 0] == 40, 7, x[..., 0])
    # a b c D e f C | e f D a b c C, and a second classify token after the first
    first = [[6, 6], [3, 5], [8, 2]]
    for b, places in enumerate(first):
        for k, at in enumerate(places):
            x[b, k, at, 0] = 40
    x[2, 1, 5, 0] = 40
    mask = torch.ones(3, 2, 9)
    with torch.no_grad():
        states = [model.transformer(x[:, k]).double() for k in range(2)]  # (3, 9, n_embd)
        pooled = torch.stack([states[0][b, first[b][0]] + states[1][b, first[b][1]]
                              for b in range(3)])
        w, bias = model.task_head.linear.weight.double(), model.task_head.linear.bias.double()
        expected = pooled @ w.T + bias
        expected = expected.squeeze(-1) if n_class == 1 else expected
        for kw in ({}, dict(mask=mask)):
            logits = model(x, **kw)[1]
            assert logits.shape == expected.shape
            assert_rel_close(logits.double(), expected)
        # the test's own power: one ordering twice is far from the sum of both
        twice = (2 * torch.stack([states[0][b, first[b][0]] for b in range(3)])) @ w.T + bias
        assert (twice.squeeze(-1) - expected).abs().max() > 100 * 1e-5 * expected.abs().max()


def test_task_heads_shapes_and_errors():
    x, _, _ = story_batch(44, 16, 40, batch=3, n_choices=2, seq=6)
    for head, shape in [('multiple_choice', (3, 2)), ('similarity', (3,)),
                        ('inference', (6, 3)), (('classification', 5), (6, 5))]:
        model = DoubleHeadModel(SMALL, 40, head, vocab=60, n_ctx=16).eval()
        xs = x if head in ('multiple_choice', 'similarity') else x.view(6, 6, 2)
        lm_logits, logits = model(xs)
        assert logits.shape == shape
        assert lm_logits.shape == (6 * 5, 60)
        lin = model.task_head.linear
        assert lin.bias.abs().sum() == 0 and 0.01 < lin.weight.std() < 0.04
    with pytest.raises(ValueError, match="task_head_type"):
        DoubleHeadModel(SMALL, 40, 'regression', vocab=60, n_ctx=16)


@pytest.mark.parametrize('n_real', [None, 23])
def test_mask_skips_padding_with_the_same_results(n_real):
    """The padding-free path against the plain one: logits, classifier logits and every
    gradient, with dropout off so that both compute one function."""
    cfg = Config(SMALL, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)
    torch.manual_seed(4)
    model = DoubleHeadModel(cfg, 40, 'multiple_choice', vocab=60, n_ctx=16)
    randomize(model)
    x, _, _ = story_batch(44, 16, 40, seq=9)
    mask = torch.zeros(2, 2, 9)
    mask[0, 0, :9] = mask[0, 1, :5] = mask[1, 0, :7] = mask[1, 1, :2] = 1
    x[..., 0] *= mask.long()  # padding ids as the data pipeline writes them
    x[0, 0, 4, 0] = x[1, 0, 6, 0] = x[0, 1, 4, 0] = x[1, 1, 1, 0] = 40  # classify tokens last
    keep = mask.view(4, 9)[:, 1:].reshape(-1) != 0
    results = []
    for kw in ({}, dict(mask=mask, n_real=n_real)):
        model.zero_grad()
        lm, clf = model(x, **kw)
        lm = lm if kw else lm[keep]
        (lm.logsumexp(-1).sum() + clf.square().sum()).backward()
        results.append((lm.detach(), clf.detach(),
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain_lm, plain_clf, plain_grads), (lm, clf, grads) = results
    torch.testing.assert_close(lm, plain_lm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(clf, plain_clf, rtol=1e-5, atol=1e-5)
    for name in plain_grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-5,
                                   msg=name)


def test_lm_rows_are_the_factors_of_the_lm_logits():
    """lm='rows' returns the hidden rows and the dropped matrix whose product is what
    lm=True returns, cast as autocast casts them for it."""
    torch.manual_seed(4)
    model = DoubleHeadModel(SMALL, 40, 'multiple_choice', vocab=60, n_ctx=16).eval()
    randomize(model)
    x, _, _ = story_batch(44, 16, 40, seq=9)
    mask = torch.ones(2, 2, 9)
    mask[1, 1, 5:] = 0
    with torch.no_grad():
        lm, clf = model(x, mask)
        rows, clf_rows = model(x, mask, lm='rows')
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16_rows, _ = model(x, mask, lm='rows')
    assert isinstance(rows, mp.LMRows) and rows.h.shape == (int(mask[..., 1:].sum()), 32)
    torch.testing.assert_close(rows.h @ rows.we.T, lm)
    torch.testing.assert_close(clf_rows, clf)
    assert bf16_rows.h.dtype == bf16_rows.we.dtype == torch.bfloat16


def share_close(mask, keep, sigmas=5):
    """The share of True in mask is keep within `sigmas` binomial standard deviations."""
    n = mask.numel()
    return abs(mask.double().mean().item() - keep) < sigmas * math.sqrt(keep * (1 - keep) / n)


@pytest.mark.parametrize('keep', [0.9, 0.5, 0.03])
def test_bernoulli_mask_keeps_at_its_rate_independently(keep):
    """Bernoulli(keep) per element: its rate, neighbours (also the two halves of one
    64-bit random word) and two successive draws independent of each other."""
    torch.manual_seed(0)
    a, b = mp.bernoulli_mask((1000, 1001), keep), mp.bernoulli_mask((1000, 1001), keep)
    assert a.dtype == torch.bool and a.shape == (1000, 1001)
    assert share_close(a, keep) and share_close(b, keep)
    flat = a.reshape(-1)
    assert share_close(flat[:-1] & flat[1:], keep ** 2)  # neighbours
    assert share_close(flat[0::2] & flat[1::2], keep ** 2)  # halves of a word
    assert share_close(a & b, keep ** 2)  # successive draws


def test_bernoulli_mask_follows_torch_rng():
    """torch.manual_seed, and torch's RNG state as a checkpoint saves it, decide the
    masks (so that a resumed run draws what an uninterrupted one does)."""
    torch.manual_seed(1)
    first = mp.bernoulli_mask((64, 64), 0.9)
    state = torch.get_rng_state()
    second = mp.bernoulli_mask((64, 64), 0.9)
    torch.manual_seed(1)
    assert torch.equal(mp.bernoulli_mask((64, 64), 0.9), first)
    torch.set_rng_state(state)
    assert torch.equal(mp.bernoulli_mask((64, 64), 0.9), second)
    assert not torch.equal(first, second)


def test_dropout_is_tf_dropout_and_passes_through_when_off():
    """x / keep where kept, 0 elsewhere; nothing dropped with p 0 or out of training; a
    gradient through the kept entries only, scaled likewise."""
    torch.manual_seed(2)
    x = torch.randn(300, 50, requires_grad=True)
    y = dropout(x, 0.25)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert share_close(kept, 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert dropout(x, 0.0) is x and dropout(x, 0.9, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


@pytest.mark.parametrize('scale', [True, False])
def test_attention_dropout_is_tf_attn(scale):
    """Training attention on the CPU (its own path, not torch's kernel) against a float64
    transcription of TF `_attn`: scores, optional 1/sqrt(head size), the causal mask as
    w * b - 1e9 * (1 - b), softmax, dropout of the weights with the mask the model drew,
    weights times values; the gradients of q, k and v too."""
    torch.manual_seed(9)
    q, k, v = (torch.randn(2, 3, 7, 5, requires_grad=True) for _ in range(3))
    torch.manual_seed(10)
    a = mp.attend(q, k, v, scale, 0.3, training=True)
    a.backward(torch.ones_like(a))
    torch.manual_seed(10)
    keep = mp.bernoulli_mask((2, 3, 7, 7), 0.7).double()
    assert 0 < keep.mean() < 1

    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    w = q64 @ k64.transpose(-1, -2)
    if scale:
        w = w / math.sqrt(5)
    b = torch.ones(7, 7, dtype=torch.float64).tril()
    w = torch.softmax(w * b - 1e9 * (1 - b), -1)
    expected = (w * keep / 0.7) @ v64
    expected.backward(torch.ones_like(expected))
    torch.testing.assert_close(a, expected.float())
    for x, x64 in zip((q, k, v), (q64, k64, v64)):
        torch.testing.assert_close(x.grad, x64.grad.float())
    # everything dropped, as dropout() and torch's kernel do it
    assert torch.equal(mp.attend(q, k, v, scale, 1.0, training=True), torch.zeros_like(a))


def test_lm_model_probs_never_choose_positions():
    torch.manual_seed(5)
    model = LMModel(SMALL, vocab=60, n_ctx=16, return_probs=True).eval()
    with torch.no_grad():
        model.transformer.embed.weight[44:] *= 50  # make position rows tempting
        x, _, _ = story_batch(44, 16, 40, batch=1, n_choices=1, seq=5)
        probs = model(x.view(1, 5, 2))
    assert probs.shape == (1, 5, 60)
    assert probs[..., 44:].sum() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 5))


def test_embedding_dropout_reaches_lm_head_in_training():
    cfg = Config(SMALL, embd_pdrop=0.5, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)
    torch.manual_seed(6)
    model = DoubleHeadModel(cfg, 40, 'multiple_choice', vocab=60, n_ctx=16).train()
    x, _, _ = story_batch(44, 16, 40, seq=6)
    torch.manual_seed(7)
    lm_logits, _ = model(x)
    # Replay the one mask the model drew: the same dropped matrix must explain both the
    # hidden states (input lookup) and the logits (tied decoder).
    torch.manual_seed(7)
    we = dropout(model.transformer.embed.weight, 0.5)
    h = model.transformer(x, we)
    torch.testing.assert_close(lm_logits, h[:, :-1].reshape(-1, 32) @ we.t())
    undropped = h[:, :-1].reshape(-1, 32) @ model.transformer.embed.weight.t()
    assert not torch.allclose(lm_logits, undropped)


def test_embedding_dropout_drops_at_its_rate_and_scales_the_rest():
    """TF's dropout of the embedding matrix: each entry kept with probability 1 - p and
    then divided by it, the rest zero."""
    torch.manual_seed(8)
    model = TransformerModel(Config(SMALL, embd_pdrop=0.3), vocab=2000, n_ctx=16).train()
    with torch.no_grad():
        model.embed.weight.fill_(1.0)
        we = model.dropped_embedding()
    kept = we != 0
    assert torch.equal(we[kept], torch.full_like(we[kept], 1 / 0.7))
    # 64,000 entries: the kept share within 4 standard deviations (0.0072) of 0.7
    assert abs(kept.double().mean().item() - 0.7) < 4 * math.sqrt(0.7 * 0.3 / we.numel())


def test_nothing_drops_in_eval_mode():
    cfg = Config(SMALL, embd_pdrop=0.9, attn_pdrop=0.9, resid_pdrop=0.9, clf_pdrop=0.9)
    model = DoubleHeadModel(cfg, 40, 'multiple_choice', vocab=60, n_ctx=16).eval()
    x, _, _ = story_batch(44, 16, 40, seq=6)
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_classifier_dropout_mask_is_shared_by_choices():
    cfg = Config(SMALL, clf_pdrop=0.5)
    head = mp.MultipleChoiceHead(0, cfg).train()
    with torch.no_grad():
        head.linear.weight.fill_(1.0)
        head.linear.bias.zero_()
    n_choices, seq = 4, 3
    x = torch.zeros(50, n_choices, seq, 2, dtype=torch.long)  # classify token at 0
    h = torch.ones(50 * n_choices, seq, 32)
    logits = head(h, x)  # each logit: 2 * number of kept features
    assert (logits == logits[:, :1]).all(), 'choices of an example got different masks'
    assert logits[:, 0].unique().numel() > 3, 'examples should get different masks'
    kept = logits / 2
    assert 0.3 < kept.mean() / 32 < 0.7
