"""Training losses for fine-tuning, formed as in OpenAI's TF train.py:

    train_loss = mean(clf_losses) + lm_coef * mean(lm_losses)

the LM loss of a sequence being the mean of its per-token losses over the target
positions 1.. whose mask is 1.
"""
from model_pytorch import lm_target_rows


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
        mask = M[..., 1:].reshape(-1, seq - 1).to(lm_logits.dtype)
        n = lm_logits.shape[0]
        if rows == 'all':
            if n != targets.numel():
                raise ValueError(f'lm_logits: expected {targets.numel()} rows, one per target '
                                 f'position, found {n}')
            token_losses = self.lm_criterion(lm_logits, targets.reshape(-1)).view_as(mask)
            return (token_losses * mask).sum(1) / mask.sum(1)
        if rows != 'targets':
            raise ValueError(f"lm_rows must be 'all' or 'targets', got {rows!r}")
        if mask.device.type == 'cpu' and n != int((mask != 0).sum()):
            raise ValueError(f'lm_logits: expected {int((mask != 0).sum())} rows, one per '
                             f'target whose mask is nonzero, found {n}')
        index = lm_target_rows(M, n)
        token_losses = self.lm_criterion(lm_logits, targets.reshape(-1)[index])
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
