"""Training losses for fine-tuning, formed as in OpenAI's TF train.py:

    train_loss = mean(clf_losses) + lm_coef * mean(lm_losses)

the LM loss of a sequence being the mean of its per-token losses over the target
positions 1.. whose mask is 1.
"""
import torch

from model_pytorch import LMRows, lm_target_rows

CHUNK = 32  # rows of float32 logits at a time: 5 MB at GPT-1's vocabulary, cache-sized


class LinearCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of the logits h @ we.T (h (rows, n_embd), we (vocab, n_embd),
    of one dtype) against targets (rows,): what cross_entropy(F.linear(h, we).float(),
    targets, reduction='none') computes, without its float32 copies of the logits.

    The logits are made in one product and then, CHUNK rows at a time in float32,
    turned into the losses and, where a gradient is wanted, into their gradient
    softmax - onehot, written back over the logits. The backward pass then only scales
    that by each row's incoming gradient, folded into the two products it makes (on h
    and on we, both small beside the logits). For float32 and bfloat16: float16's range
    would lose the small probabilities of an unscaled gradient.
    """

    @staticmethod
    def forward(ctx, h, we, targets):
        if h.dtype == torch.float16 or h.dtype != we.dtype:
            raise ValueError(f'linear_cross_entropy: h and we must share a dtype other than '
                             f'float16, got {h.dtype} and {we.dtype}')
        logits = h @ we.T
        losses = torch.empty(len(h), dtype=torch.float32, device=h.device)
        grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        for i in range(0, len(h), CHUNK):
            t = targets[i:i + CHUNK, None]
            # one kernel reads the chunk, in its dtype, and writes float32 log-probabilities
            logp = torch.log_softmax(logits[i:i + CHUNK], 1, dtype=torch.float32)
            losses[i:i + CHUNK] = logp.gather(1, t).squeeze(1).neg_()
            if grad:
                p = logp.exp_()
                p.scatter_add_(1, t, -torch.ones_like(t, dtype=p.dtype))
                logits[i:i + CHUNK] = p
        ctx.save_for_backward(h, we, logits if grad else None)
        return losses

    @staticmethod
    def backward(ctx, g):
        h, we, softmax_minus_onehot = ctx.saved_tensors
        g = g.float()[:, None]
        grad_h = ((softmax_minus_onehot @ we).float() * g).to(h.dtype)
        grad_we = softmax_minus_onehot.T @ (h.float() * g).to(h.dtype)
        return grad_h, grad_we, None


def linear_cross_entropy(h, we, targets):
    return LinearCrossEntropy.apply(h, we, targets)


def _check_shape(name, tensor, want):
    if tuple(tensor.shape) != tuple(want):
        raise ValueError(f'{name}: expected shape {tuple(want)}, found {tuple(tensor.shape)}')


class _LossCompute:
    """Called as (X, Y, M, clf_logits, lm_logits=None, only_return_losses=False,
    lm_rows='all'):

    - only_return_losses: the per-example classification losses, or the tuple
      (clf_losses, lm_losses) when lm_logits is given, lm_losses per sequence; no
      backward.
    - otherwise the training loss. The LM term counts when lm_logits is given and
      lm_coef > 0, as in TF. With an optimizer (opt): backward, opt.step(),
      opt.zero_grad(), and the loss is returned as a float. Without one: the loss tensor
      is returned, for the caller to scale, backward and step itself (gradient
      accumulation).

    lm_logits holds one row per predicted token: lm_rows='all', a row for every target
    position, shape (n_seq * (seq - 1), vocab) in row-major order (what the model returns
    without a mask); lm_rows='targets', the rows of model_pytorch.lm_target_rows(M) only
    (what it returns with one).
    """

    def __init__(self, lm_criterion, clf_criterion, lm_coef, opt=None):
        self.lm_criterion = lm_criterion  # per-token, reduction='none'
        self.clf_criterion = clf_criterion  # per-example, reduction='none'
        self.lm_coef = lm_coef
        self.opt = opt

    def check_shapes(self, X, Y, M, clf_logits):
        raise NotImplementedError

    def __call__(self, X, Y, M, clf_logits, lm_logits=None, only_return_losses=False,
                 lm_rows='all'):
        self.check_shapes(X, Y, M, clf_logits)
        clf_losses = self.clf_criterion(clf_logits, Y)
        if only_return_losses:
            if lm_logits is None:
                return clf_losses
            return clf_losses, self.lm_losses(X, M, lm_logits, lm_rows)
        loss = clf_losses.mean()
        if lm_logits is not None and self.lm_coef > 0:
            loss = loss + self.lm_coef * self.lm_losses(X, M, lm_logits, lm_rows).mean()
        if self.opt is None:
            return loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return loss.item()

    def token_losses(self, lm_logits, targets):
        if isinstance(lm_logits, LMRows):  # cross-entropy, fused with the product
            return linear_cross_entropy(lm_logits.h, lm_logits.we, targets)
        return self.lm_criterion(lm_logits, targets)

    def lm_losses(self, X, M, lm_logits, rows='all'):
        """Per-sequence LM losses, shape (n_seq,): the mask-weighted sum of the token
        losses at positions 1.. over the mask's sum there (NaN for a sequence with no
        target, as in TF).

        X (..., seq, 2) holds token and position ids, M (..., seq) the mask. lm_logits
        rows predict X[..., 1:, 0], laid out as `rows` says (see the class). With
        rows='targets' on the CPU, a row count other than the mask's is a ValueError;
        elsewhere it is not checked, to spare a device-to-host sync.
        """
        seq = X.shape[-2]
        targets = X[..., 1:, 0].reshape(-1, seq - 1)
        fused = isinstance(lm_logits, LMRows)  # its losses are float32
        mask = M[..., 1:].reshape(-1, seq - 1).to(torch.float32 if fused else lm_logits.dtype)
        n = lm_logits.h.shape[0] if fused else lm_logits.shape[0]
        if rows == 'all':
            if n != targets.numel():
                raise ValueError(f'lm_logits: expected {targets.numel()} rows, one per target '
                                 f'position, found {n}')
            token_losses = self.token_losses(lm_logits, targets.reshape(-1)).view_as(mask)
            return (token_losses * mask).sum(1) / mask.sum(1)
        if rows != 'targets':
            raise ValueError(f"lm_rows must be 'all' or 'targets', got {rows!r}")
        if mask.device.type == 'cpu' and n != int((mask != 0).sum()):
            raise ValueError(f'lm_logits: expected {int((mask != 0).sum())} rows, one per '
                             f'target whose mask is nonzero, found {n}')
        index = lm_target_rows(M, n)
        token_losses = self.token_losses(lm_logits, targets.reshape(-1)[index])
        summed = mask.new_zeros(targets.shape[0]).index_add(
            0, index // (seq - 1), token_losses * mask.reshape(-1)[index])
        return summed / mask.sum(1)


class MultipleChoiceLossCompute(_LossCompute):
    """Multiple choice (ROCStories): X (batch, n_choices, seq, 2), M (batch, n_choices,
    seq), clf_logits (batch, n_choices), Y (batch,). The LM loss is averaged over all
    batch * n_choices sequences, as TF does."""

    def check_shapes(self, X, Y, M, clf_logits):
        if X.dim() != 4 or X.shape[-1] != 2:
            raise ValueError(f'X: expected shape (batch, n_choices, seq, 2), '
                             f'found {tuple(X.shape)}')
        _check_shape('M', M, X.shape[:3])
        _check_shape('clf_logits', clf_logits, X.shape[:2])
        _check_shape('Y', Y, X.shape[:1])


class ClassificationLossCompute(_LossCompute):
    """Classification: X (batch, seq, 2), M (batch, seq), clf_logits (batch, n_class),
    Y (batch,)."""

    def check_shapes(self, X, Y, M, clf_logits):
        if X.dim() != 3 or X.shape[-1] != 2:
            raise ValueError(f'X: expected shape (batch, seq, 2), found {tuple(X.shape)}')
        _check_shape('M', M, X.shape[:2])
        if clf_logits.dim() != 2 or clf_logits.shape[0] != X.shape[0]:
            raise ValueError(f'clf_logits: expected shape ({X.shape[0]}, n_class), '
                             f'found {tuple(clf_logits.shape)}')
        _check_shape('Y', Y, X.shape[:1])


class SimilarityLossCompute(_LossCompute):
    """Similarity: X (batch, 2, seq, 2), the two orderings of each pair; clf_logits
    (batch, n_class) with a cross-entropy criterion, or (batch,) scores with a
    regression criterion such as MSELoss(reduction='none'); Y (batch,). The LM loss is
    averaged over both orderings of every pair."""

    def check_shapes(self, X, Y, M, clf_logits):
        if X.dim() != 4 or X.shape[1] != 2 or X.shape[-1] != 2:
            raise ValueError(f'X: expected shape (batch, 2, seq, 2), found {tuple(X.shape)}')
        _check_shape('M', M, X.shape[:3])
        if clf_logits.dim() not in (1, 2) or clf_logits.shape[0] != X.shape[0]:
            raise ValueError(f'clf_logits: expected shape ({X.shape[0]},) or ({X.shape[0]}, '
                             f'n_class), found {tuple(clf_logits.shape)}')
        _check_shape('Y', Y, X.shape[:1])
