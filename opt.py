"""OpenAI's Adam for GPT-1 fine-tuning and its learning-rate schedules, written to give
the same update as the ``adam`` function of OpenAI's TensorFlow code.

The schedules map x, the fraction of training done, to a multiplier of the learning
rate; they accept Python floats and tensors.
"""
import functools
import math

import torch
from torch.optim import Optimizer


def _where(cond, a, b):
    return torch.where(cond, a, b) if isinstance(cond, torch.Tensor) else (a if cond else b)


def _cos(x):
    return torch.cos(x) if isinstance(x, torch.Tensor) else math.cos(x)


# As in TF, warmup is the end of the linear ramp and the ramp includes x == warmup.
def warmup_cosine(x, warmup=0.002):
    return _where(x <= warmup, x / warmup, 0.5 * (1 + _cos(math.pi * x)))


def warmup_constant(x, warmup=0.002):
    return _where(x <= warmup, x / warmup, 1.0)


def warmup_linear(x, warmup=0.002):
    return _where(x <= warmup, x / warmup, 1.0) * (1 - x)


SCHEDULES = {
    'warmup_cosine': warmup_cosine,
    'warmup_constant': warmup_constant,
    'warmup_linear': warmup_linear,
}


class OpenAIAdam(Optimizer):
    """Adam as in OpenAI's TF code, with its L2 term added to the update.

    One step, t counting steps from 1:
      grads clipped together by their global norm when max_grad_norm > 0;
      m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2;
      lrt = lr sqrt(1 - b2^t) / (1 - b1^t) * schedule((t - 1) / t_total, warmup);
      p -= lrt (m / (sqrt(v) + e) + l2 p) for matrices (all parameters if vector_l2)
      when l2 > 0, p -= lrt m / (sqrt(v) + e) otherwise.
    The schedule sees the step count before the increment, as in TF, so the first
    update of a warmup schedule is zero.

    warmup is the fraction of training spent ramping up, in (0, 1]: TF's ramp divides
    by it. max_grad_norm applies to all parameters together (it is not a per-group
    setting). Parameters without a gradient are left alone. Where torch's fused AdamW
    kernel runs (CUDA; the CPU from torch 2.4) it makes the step in one pass over memory,
    else multi-tensor ops do; .grad may or may not be left scaled by the clipping. The
    step count t lives in each param group, m and v in the per-parameter state, so
    state_dict() / load_state_dict() resume exactly.
    """

    def __init__(self, params, lr, schedule, warmup, t_total, b1=0.9, b2=0.999, e=1e-8,
                 l2=0, vector_l2=False, max_grad_norm=-1):
        checks = [('lr', lr, lr >= 0, '>= 0'),
                  ('schedule', schedule, schedule in SCHEDULES, f'one of {sorted(SCHEDULES)}'),
                  ('warmup', warmup, 0 < warmup <= 1, 'in (0, 1]'),
                  ('t_total', t_total, t_total > 0, '> 0'),
                  ('b1', b1, 0 <= b1 < 1, 'in [0, 1)'),
                  ('b2', b2, 0 <= b2 < 1, 'in [0, 1)'),
                  ('e', e, e >= 0, '>= 0'),
                  ('l2', l2, l2 >= 0, '>= 0'),
                  ('max_grad_norm', max_grad_norm, not math.isnan(max_grad_norm),
                   'a number (<= 0 turns clipping off)')]
        for name, value, ok, want in checks:
            if not ok:
                raise ValueError(f'{name} must be {want}, got {value!r}')
        self.max_grad_norm = max_grad_norm
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total, b1=b1,
                        b2=b2, e=e, l2=l2, vector_l2=vector_l2, t=0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group['params']
                  if p.grad is not None]
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError('OpenAIAdam does not support sparse gradients')
        clip = None
        if self.max_grad_norm > 0 and params:
            clip = self._clip_factor([p.grad for p in params])
        for group in self.param_groups:
            self._step_group(group, clip)
        return loss

    def _clip_factor(self, grads):
        """TF's clip_by_global_norm multiplies every gradient by max_norm /
        max(global_norm, max_norm): that factor, kept on the device (no host sync)."""
        by_device = _group_by(grads, lambda g: (g.device, g.dtype))
        first = grads[0].device
        norms = [torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gs)).float())
                 .to(first) for gs in by_device.values()]
        total = torch.linalg.vector_norm(torch.stack(norms))
        return self.max_grad_norm / total.clamp(min=self.max_grad_norm)

    def _step_group(self, group, clip):
        group['t'] += 1
        t, b1, b2 = group['t'], group['b1'], group['b2']
        schedule = SCHEDULES[group['schedule']]
        scheduled = group['lr'] * schedule((t - 1) / group['t_total'], group['warmup'])
        bias = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        # TF: `if (len(p.get_shape()) > 1 or vector_l2) and l2 > 0`.
        decays = lambda p: group['l2'] > 0 and (p.dim() > 1 or group['vector_l2'])
        live = [p for p in group['params'] if p.grad is not None]
        for p in live:
            if not self.state[p]:
                self.state[p]['m'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]['v'] = torch.zeros_like(p, memory_format=torch.preserve_format)
        by_kind = _group_by(live, lambda p: (p.device, p.dtype, decays(p)))
        for (device, dtype, decay), ps in by_kind.items():
            grads = [p.grad for p in ps]
            ms = [self.state[p]['m'] for p in ps]
            vs = [self.state[p]['v'] for p in ps]
            l2 = group['l2'] if decay else 0.0
            if _fused_adamw_runs(device, dtype):
                # torch's AdamW kernel, one pass over memory: with these settings it
                # computes TF's step (its bias-corrected eps is e / sqrt(1 - b2^t), its
                # decoupled decay lr * wd = lrt * l2), clipping as the unscaling of grads.
                steps = [torch.full((), float(t), device=device)] * len(ps)
                torch._fused_adamw_(ps, grads, ms, vs, [], steps, lr=scheduled, beta1=b1,
                                    beta2=b2, weight_decay=l2 * bias,
                                    eps=group['e'] / math.sqrt(1 - b2 ** t),
                                    amsgrad=False, maximize=False,
                                    grad_scale=None if clip is None else (1 / clip).to(device))
                continue
            if clip is not None:
                torch._foreach_mul_(grads, clip.to(device, dtype))
            lrt = scheduled * bias
            torch._foreach_lerp_(ms, grads, 1 - b1)  # m + (1 - b1)(g - m) = b1 m + (1 - b1) g
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group['e'])
            if l2:  # the l2 term uses p before this update, as TF's does
                torch._foreach_mul_(ps, 1 - lrt * l2)
            torch._foreach_addcdiv_(ps, ms, denom, value=-lrt)


@functools.lru_cache(maxsize=None)
def _fused_adamw_runs(device, dtype):
    """Whether torch's fused AdamW kernel runs on device (CUDA; the CPU from torch 2.4)."""
    try:
        p = torch.zeros(1, device=device, dtype=dtype)
        torch._fused_adamw_([p], [p.clone()], [p.clone()], [p.clone()], [],
                            [torch.ones((), device=device)], lr=0.0, beta1=0.9, beta2=0.9,
                            weight_decay=0.0, eps=1.0, amsgrad=False, maximize=False)
        return True
    except (AttributeError, NotImplementedError, RuntimeError):
        return False


def _group_by(items, key):
    groups = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
