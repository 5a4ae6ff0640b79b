import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from loss import CHUNK, ClassificationLossCompute, MultipleChoiceLossCompute, linear_cross_entropy
from model_pytorch import LMRows

V = 5  # vocabulary size


def criteria():
    return nn.CrossEntropyLoss(reduction='none'), nn.CrossEntropyLoss(reduction='none')


def ce(row, target):
    """Cross-entropy of one row of logits, in float64 NumPy."""
    row = np.asarray(row, dtype=np.float64)
    return float(np.log(np.exp(row - row.max()).sum()) + row.max() - row[target])


def direct_lm_losses(X, M, lm_logits):
    """Per-sequence LM losses from full lm_logits rows, token by token."""
    X, M, L = X.numpy(), M.numpy(), lm_logits.detach().numpy()
    seq = X.shape[-2]
    X, M = X.reshape(-1, seq, 2), M.reshape(-1, seq)
    out = []
    for i in range(X.shape[0]):
        num = sum(M[i, j] * ce(L[i * (seq - 1) + j - 1], X[i, j, 0]) for j in range(1, seq))
        out.append(num / M[i, 1:].sum())
    return np.array(out)


def random_batch(shape, seed, lengths):
    """X (*shape, 2) and M (*shape) with padding after lengths[i] tokens of sequence i."""
    g = torch.Generator().manual_seed(seed)
    *lead, seq = shape
    X = torch.stack([torch.randint(0, V, shape, generator=g),
                     torch.arange(seq).expand(shape)], -1)
    M = (torch.arange(seq) < torch.tensor(lengths).view(*lead, 1)).float()
    n_rows = int(np.prod(lead)) * (seq - 1)
    lm_logits = torch.randn(n_rows, V, generator=g, dtype=torch.float64).float()
    return X, M, lm_logits.requires_grad_()


def test_hand_worked_classification_loss():
    X = torch.zeros(2, 4, 2, dtype=torch.long)
    M = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float)
    lm_logits = torch.zeros(2 * 3, V)  # uniform: every token costs log V
    clf_logits = torch.tensor([[0.0, math.log(3)], [math.log(3), 0.0]])
    Y = torch.tensor([1, 1])  # probabilities 3/4 and 1/4
    compute = ClassificationLossCompute(*criteria(), lm_coef=0.5)
    clf, lm = compute(X, Y, M, clf_logits, lm_logits, only_return_losses=True)
    torch.testing.assert_close(clf, torch.tensor([-math.log(0.75), -math.log(0.25)]))
    torch.testing.assert_close(lm, torch.full((2,), math.log(V)))
    loss = compute(X, Y, M, clf_logits, lm_logits)
    want = (-math.log(0.75) - math.log(0.25)) / 2 + 0.5 * math.log(V)
    assert loss.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize('cls, shape, lengths', [
    (ClassificationLossCompute, (3, 7), [7, 4, 2]),
    (MultipleChoiceLossCompute, (2, 2, 6), [[6, 3], [2, 5]]),
])
def test_losses_match_direct_computation(cls, shape, lengths):
    X, M, lm_logits = random_batch(shape, seed=0, lengths=lengths)
    n_class = 4 if cls is ClassificationLossCompute else shape[1]
    clf_logits = torch.randn(shape[0], n_class, requires_grad=True)
    Y = torch.arange(shape[0]) % n_class
    compute = cls(*criteria(), lm_coef=0.3)
    clf, lm = compute(X, Y, M, clf_logits, lm_logits, only_return_losses=True)
    want_clf = [ce(row, y) for row, y in zip(clf_logits.detach().numpy(), Y.numpy())]
    want_lm = direct_lm_losses(X, M, lm_logits)
    np.testing.assert_allclose(clf.detach().numpy(), want_clf, rtol=1e-5)
    np.testing.assert_allclose(lm.detach().numpy(), want_lm, rtol=1e-5)
    assert lm.shape == (int(np.prod(shape[:-1])),)  # MultipleChoice: batch * n_choices
    assert lm_logits.grad is None and clf_logits.grad is None  # no backward
    loss = compute(X, Y, M, clf_logits, lm_logits)
    assert loss.item() == pytest.approx(np.mean(want_clf) + 0.3 * np.mean(want_lm), rel=1e-5)


def test_gradients_match_direct_computation():
    X, M, lm_logits = random_batch((2, 2, 5), seed=1, lengths=[[5, 2], [3, 4]])
    clf_logits = torch.randn(2, 2, requires_grad=True)
    Y = torch.tensor([1, 0])
    coef = 0.5
    MultipleChoiceLossCompute(*criteria(), lm_coef=coef)(X, Y, M, clf_logits, lm_logits).backward()

    # d mean(CE)/d logits = (softmax - onehot) / batch
    onehot = nn.functional.one_hot(Y, 2).float()
    want_clf = (clf_logits.detach().softmax(-1) - onehot) / 2
    torch.testing.assert_close(clf_logits.grad, want_clf)
    # each LM row: coef * mask / (target count of its sequence * n_seq) * (softmax - onehot)
    targets = X[..., 1:, 0].reshape(-1)
    mask = M[..., 1:].reshape(4, 4)
    weight = (coef * mask / (mask.sum(1, keepdim=True) * 4)).reshape(-1, 1)
    want_lm = weight * (lm_logits.detach().softmax(-1) - nn.functional.one_hot(targets, V))
    torch.testing.assert_close(lm_logits.grad, want_lm)


def test_padding_does_not_count():
    X, M, lm_logits = random_batch((2, 6), seed=2, lengths=[6, 3])
    Y, clf_logits = torch.tensor([0, 1]), torch.randn(2, 3)
    compute = ClassificationLossCompute(*criteria(), lm_coef=1.0)
    padded_rows = (M[:, 1:].reshape(-1) == 0)
    assert padded_rows.sum() == 3
    changed = lm_logits.detach().clone()
    changed[padded_rows] = 100 * torch.randn(3, V)
    changed_X = X.clone()
    changed_X[1, 3:, 0] = (changed_X[1, 3:, 0] + 1) % V
    a = compute(X, Y, M, clf_logits, lm_logits)
    b = compute(changed_X, Y, M, clf_logits, changed)
    torch.testing.assert_close(a, b.detach())
    a.backward()
    assert torch.all(lm_logits.grad[padded_rows] == 0)


def test_gathered_lm_logits_give_the_same_losses_and_gradients():
    """A model that skips padding passes only the rows whose target has mask 1."""
    X, M, full = random_batch((2, 3, 6), seed=3, lengths=[[6, 2, 4], [3, 5, 2]])
    keep = M[..., 1:].reshape(-1) != 0
    gathered = full.detach()[keep].clone().requires_grad_()
    Y, clf_logits = torch.tensor([2, 0]), torch.randn(2, 3)
    compute = MultipleChoiceLossCompute(*criteria(), lm_coef=0.5)
    _, want = compute(X, Y, M, clf_logits, full, only_return_losses=True)
    _, got = compute(X, Y, M, clf_logits, gathered, only_return_losses=True, lm_rows='targets')
    torch.testing.assert_close(got, want)
    compute(X, Y, M, clf_logits, full).backward()
    compute(X, Y, M, clf_logits, gathered, lm_rows='targets').backward()
    torch.testing.assert_close(gathered.grad, full.grad[keep])


def test_mean_not_sum_over_the_batch():
    X, M, lm_logits = random_batch((2, 5), seed=4, lengths=[5, 3])
    Y, clf_logits = torch.tensor([0, 1]), torch.randn(2, 2)
    compute = ClassificationLossCompute(*criteria(), lm_coef=0.5)
    once = compute(X, Y, M, clf_logits, lm_logits)
    twice = compute(X.repeat(2, 1, 1), Y.repeat(2), M.repeat(2, 1), clf_logits.repeat(2, 1),
                    lm_logits.repeat(2, 1))
    torch.testing.assert_close(twice, once)


def test_lm_term_only_with_positive_coef_and_logits():
    X, M, lm_logits = random_batch((2, 5), seed=5, lengths=[5, 5])
    Y, clf_logits = torch.tensor([0, 1]), torch.randn(2, 2)
    clf_only = nn.functional.cross_entropy(clf_logits, Y)
    for coef, logits in [(0.0, torch.full_like(lm_logits, float('nan'))), (0.5, None)]:
        got = ClassificationLossCompute(*criteria(), lm_coef=coef)(X, Y, M, clf_logits, logits)
        torch.testing.assert_close(got, clf_only)
    got = ClassificationLossCompute(*criteria(), lm_coef=0.5)(X, Y, M, clf_logits,
                                                              only_return_losses=True)
    torch.testing.assert_close(got, nn.functional.cross_entropy(clf_logits, Y, reduction='none'))


class RecordingOpt:
    def __init__(self, params):
        self.params, self.calls = params, []

    def step(self):
        self.calls.append(('step', [p.grad.clone() for p in self.params]))

    def zero_grad(self):
        self.calls.append(('zero_grad', None))
        for p in self.params:
            p.grad = None


def test_with_optimizer_backward_step_zero_grad_and_float():
    X, M, lm_logits = random_batch((2, 5), seed=6, lengths=[5, 2])
    Y, clf_logits = torch.tensor([1, 0]), torch.randn(2, 2, requires_grad=True)
    want = ClassificationLossCompute(*criteria(), lm_coef=0.5)(X, Y, M, clf_logits, lm_logits)
    want.backward()
    want_grads = [clf_logits.grad.clone(), lm_logits.grad.clone()]
    clf_logits.grad = lm_logits.grad = None

    opt = RecordingOpt([clf_logits, lm_logits])
    got = ClassificationLossCompute(*criteria(), lm_coef=0.5, opt=opt)(X, Y, M, clf_logits,
                                                                       lm_logits)
    assert type(got) is float and got == pytest.approx(want.item())
    assert [c[0] for c in opt.calls] == ['step', 'zero_grad']
    for g, w in zip(opt.calls[0][1], want_grads):
        torch.testing.assert_close(g, w)
    assert clf_logits.grad is None


def test_gradient_accumulation_over_halves_equals_the_full_batch():
    X, M, lm_logits = random_batch((4, 2, 5), seed=7, lengths=[[5, 2], [3, 4], [5, 5], [2, 3]])
    Y, clf_logits = torch.tensor([1, 0, 0, 1]), torch.randn(4, 2, requires_grad=True)
    compute = MultipleChoiceLossCompute(*criteria(), lm_coef=0.5)
    compute(X, Y, M, clf_logits, lm_logits).backward()
    want = clf_logits.grad.clone(), lm_logits.grad.clone()
    clf_logits.grad = lm_logits.grad = None
    rows = lm_logits.shape[0] // 2
    for half in (slice(0, 2), slice(2, 4)):
        lm_half = lm_logits[rows * half.start // 2:rows * half.stop // 2]
        (compute(X[half], Y[half], M[half], clf_logits[half], lm_half) / 2).backward()
    torch.testing.assert_close(clf_logits.grad, want[0])
    torch.testing.assert_close(lm_logits.grad, want[1])


def test_bad_shapes():
    X, M, lm_logits = random_batch((2, 3, 5), seed=8, lengths=[[5, 5, 2], [3, 4, 5]])
    Y, clf = torch.tensor([0, 2]), torch.randn(2, 3)
    mc = MultipleChoiceLossCompute(*criteria(), lm_coef=0.5)
    targets = {'lm_rows': 'targets'}
    for args, kwargs, message in [
        ((X[0], Y, M, clf), {}, r'X: expected shape \(batch, n_choices, seq, 2\), found \(3, 5, 2\)'),
        ((X, Y, M[..., :4], clf), {}, r'M: expected shape \(2, 3, 5\), found \(2, 3, 4\)'),
        ((X, Y, M, clf[:, :2]), {}, r'clf_logits: expected shape \(2, 3\), found \(2, 2\)'),
        ((X, Y[:1], M, clf), {}, r'Y: expected shape \(2,\), found \(1,\)'),
        ((X, Y, M, clf, lm_logits[:-1]), {}, r'lm_logits: expected 24 rows, one per target position, found 23'),
        ((X, Y, M, clf, lm_logits[:18]), {}, r'expected 24 rows.*found 18'),
        ((X, Y, M, clf, lm_logits[:17]), targets, r'expected 18 rows, one per target whose mask is nonzero, found 17'),
        ((X, Y, M, clf, lm_logits), targets, r'expected 18 rows.*found 24'),
        ((X, Y, M, clf, lm_logits), {'lm_rows': 'gathered'}, r"lm_rows must be 'all' or 'targets'"),
    ]:
        with pytest.raises(ValueError, match=message):
            mc(*args, **kwargs)
    cl = ClassificationLossCompute(*criteria(), lm_coef=0.5)
    with pytest.raises(ValueError, match=r'X: expected shape \(batch, seq, 2\)'):
        cl(X, Y, M, clf)
    with pytest.raises(ValueError, match=r'clf_logits: expected shape \(2, n_class\)'):
        cl(X[:, 0], Y, M[:, 0], clf[0])


def product_cross_entropy(h, we, targets, g):
    """Float64 NumPy: per-row cross-entropy of h @ we.T and, for incoming gradients g,
    the gradients on h and we (g * (softmax - onehot) through the product)."""
    h, we = h.detach().double().numpy(), we.detach().double().numpy()
    logits = h @ we.T
    top = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(1, keepdims=True)) + top
    rows = np.arange(len(h))
    losses = (lse[:, 0] - logits[rows, targets.numpy()])
    d = np.exp(logits - lse)
    d[rows, targets.numpy()] -= 1
    d *= g.double().numpy()[:, None]
    return losses, d @ we, d.T @ h


@pytest.mark.parametrize('rows', [1, CHUNK, CHUNK + 5, 3 * CHUNK - 1])
def test_linear_cross_entropy_is_the_cross_entropy_of_the_product(rows):
    g = torch.Generator().manual_seed(rows)
    h = torch.randn(rows, 16, generator=g, requires_grad=True)
    we = torch.randn(300, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 300, (rows,), generator=g)
    incoming = torch.rand(rows, generator=g)
    losses = linear_cross_entropy(h, we, targets)
    (losses * incoming).sum().backward()
    want, want_h, want_we = product_cross_entropy(h, we, targets, incoming)
    np.testing.assert_allclose(losses.detach().numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(h.grad.numpy(), want_h, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(we.grad.numpy(), want_we, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        again = linear_cross_entropy(h, we, targets)
    torch.testing.assert_close(again, losses.detach(), rtol=0, atol=0)


def test_linear_cross_entropy_in_bf16_is_what_autocast_logits_give():
    """Under bf16 the losses are those of the bf16 logits, and the gradients those of
    the unfused path but for bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(70, 32, generator=g).bfloat16().requires_grad_()
    we = torch.randn(500, 32, generator=g).bfloat16().requires_grad_()
    targets = torch.randint(0, 500, (70,), generator=g)
    incoming = torch.rand(70, generator=g)
    fused = linear_cross_entropy(h, we, targets)
    (fused * incoming).sum().backward()
    grads = h.grad, we.grad
    h.grad = we.grad = None
    unfused = F.cross_entropy(F.linear(h, we).float(), targets, reduction='none')
    (unfused * incoming).sum().backward()
    torch.testing.assert_close(fused, unfused, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, (h.grad, we.grad)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2 * want.abs().max().item())


def test_linear_cross_entropy_refuses_float16():
    h = torch.zeros(2, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match='float16'):
        linear_cross_entropy(h, torch.zeros(3, 4, dtype=torch.float16), torch.zeros(2, dtype=torch.long))


def test_lm_rows_give_the_losses_and_gradients_of_their_logits():
    """The loss from LMRows (a model's lm='rows') is the loss of the logits h @ we.T."""
    X, M, _ = random_batch((2, 3, 6), seed=5, lengths=[[6, 2, 4], [3, 5, 2]])
    n = int((M[..., 1:] != 0).sum())
    g = torch.Generator().manual_seed(5)
    h = torch.randn(n, 8, generator=g, requires_grad=True)
    we = torch.randn(V, 8, generator=g, requires_grad=True)
    Y, clf_logits = torch.tensor([2, 0]), torch.randn(2, 3)
    compute = MultipleChoiceLossCompute(*criteria(), lm_coef=0.5)
    _, want = compute(X, Y, M, clf_logits, h @ we.T, only_return_losses=True, lm_rows='targets')
    _, got = compute(X, Y, M, clf_logits, LMRows(h, we), only_return_losses=True,
                     lm_rows='targets')
    torch.testing.assert_close(got, want)
    compute(X, Y, M, clf_logits, h @ we.T, lm_rows='targets').backward()
    want_grads = h.grad.clone(), we.grad.clone()
    h.grad = we.grad = None
    compute(X, Y, M, clf_logits, LMRows(h, we), lm_rows='targets').backward()
    torch.testing.assert_close((h.grad, we.grad), want_grads)
