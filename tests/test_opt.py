import io
import math
import re

import numpy as np
import pytest
import torch

import opt
from opt import SCHEDULES, OpenAIAdam, warmup_constant, warmup_cosine, warmup_linear


@pytest.fixture(autouse=True, params=['fused', 'multi-tensor'])
def kernel(request, monkeypatch):
    """Every test on both ways of making the step: torch's fused AdamW kernel where it
    runs, and the multi-tensor ops that stand in for it elsewhere."""
    if request.param == 'multi-tensor':
        monkeypatch.setattr(opt, '_fused_adamw_runs', lambda device, dtype: False)
    elif not opt._fused_adamw_runs(torch.device('cpu'), torch.float32):
        pytest.skip("torch's fused AdamW kernel does not run on this CPU build")
    return request.param


SHAPES = [(6, 5), (5,), (2, 3, 4), (3,)]


def np_schedule(name, x, warmup):
    """OpenAI's TF schedules, written out in float64."""
    s = float(x <= warmup)
    if name == 'warmup_cosine':
        return s * (x / warmup) + (1 - s) * 0.5 * (1 + np.cos(np.pi * x))
    if name == 'warmup_constant':
        return s * (x / warmup) + (1 - s)
    return (s * (x / warmup) + (1 - s)) * (1 - x)


def np_adam(params, grads_per_step, lr, schedule, warmup, t_total, b1=0.9, b2=0.999, e=1e-8,
            l2=0.0, vector_l2=False, max_grad_norm=-1):
    """OpenAI's TF adam() in float64 NumPy; returns the parameters after each step and
    whether each step clipped."""
    params = [p.astype(np.float64) for p in params]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    history, clipped = [], []
    for t0, grads in enumerate(grads_per_step):
        grads = [g.astype(np.float64) for g in grads]
        norm = np.sqrt(sum((g * g).sum() for g in grads))
        clipped.append(bool(max_grad_norm > 0 and norm > max_grad_norm))
        if max_grad_norm > 0:
            grads = [g * max_grad_norm / max(norm, max_grad_norm) for g in grads]
        t = t0 + 1
        lrt = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * np_schedule(schedule, t0 / t_total, warmup)
        for i, (p, g) in enumerate(zip(params, grads)):
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            step = ms[i] / (np.sqrt(vs[i]) + e)
            if (p.ndim > 1 or vector_l2) and l2 > 0:
                step = step + l2 * p
            params[i] = p - lrt * step
        history.append([p.copy() for p in params])
    return history, clipped


def random_problem(seed, n_steps=24):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    # Gradient sizes spread over two orders of magnitude, so that a threshold between
    # them clips some steps and not others.
    scales = rng.uniform(0.05, 5.0, n_steps)
    grads = [[(k * rng.standard_normal(s)).astype(np.float32) for s in SHAPES] for k in scales]
    return params, grads


def run_torch(params, grads_per_step, **kw):
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = OpenAIAdam(ps, **kw)
    history = []
    for grads in grads_per_step:
        for p, g in zip(ps, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        opt.zero_grad()
        history.append([p.detach().numpy().copy() for p in ps])
    return history


@pytest.mark.parametrize('schedule', sorted(SCHEDULES))
@pytest.mark.parametrize('l2, vector_l2', [(0.0, False), (0.1, False), (0.1, True)])
@pytest.mark.parametrize('clip', [True, False])
def test_matches_tf_update(schedule, l2, vector_l2, clip):
    params, grads = random_problem(seed=len(schedule) + int(10 * l2) + vector_l2 + 7 * clip)
    norms = [math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in gs)) for gs in grads]
    kw = dict(lr=0.01, schedule=schedule, warmup=0.1, t_total=len(grads), l2=l2,
              vector_l2=vector_l2, max_grad_norm=float(np.median(norms)) if clip else -1)
    want, clipped = np_adam(params, grads, **kw)
    got = run_torch(params, grads, **kw)
    if clip:
        assert 3 <= sum(clipped) <= len(grads) - 3
    # Under warmup the first update is zero: the schedule sees t - 1 = 0.
    for p0, p1 in zip(params, got[0]):
        np.testing.assert_array_equal(p1, p0)
    assert any(not np.array_equal(p1, p0) for p0, p1 in zip(params, got[1]))
    for step, (w, g) in enumerate(zip(want, got)):
        for wp, gp in zip(w, g):
            np.testing.assert_allclose(gp, wp, rtol=1e-5, atol=1e-6, err_msg=f'step {step + 1}')


@pytest.mark.parametrize('e', [0.3, 3.0])
def test_epsilon_is_added_to_the_root_of_v_as_tf_does(e):
    """An epsilon of the gradients' size, where it matters where it is added."""
    params, grads = random_problem(seed=5)
    kw = dict(lr=0.01, schedule='warmup_constant', warmup=0.1, t_total=len(grads), l2=0.1, e=e)
    want, _ = np_adam(params, grads, **kw)
    for w, g in zip(want, run_torch(params, grads, **kw)):
        for wp, gp in zip(w, g):
            np.testing.assert_allclose(gp, wp, rtol=1e-5, atol=1e-6)


def test_l2_reaches_vectors_only_with_vector_l2():
    params, grads = random_problem(seed=3, n_steps=5)
    kw = dict(lr=0.01, schedule='warmup_constant', warmup=0.2, t_total=10, l2=0.5)
    plain = run_torch(params, grads, **kw)[-1]
    vec = run_torch(params, grads, vector_l2=True, **kw)[-1]
    for shape, a, b in zip(SHAPES, plain, vec):
        assert np.array_equal(a, b) == (len(shape) > 1)


def test_clipping_uses_global_norm():
    a = torch.nn.Parameter(torch.zeros(2, 2))
    b = torch.nn.Parameter(torch.zeros(3))
    a.grad = torch.full((2, 2), 1.5)  # norm 3
    b.grad = torch.tensor([0.0, 4.0, 0.0])  # norm 4, global norm 5
    opt = OpenAIAdam([a, b], lr=0.1, schedule='warmup_constant', warmup=0.5, t_total=10,
                     max_grad_norm=1.0, b1=0.9)
    opt.step()
    # the first moment is (1 - b1) times the clipped gradient
    torch.testing.assert_close(opt.state[a]['m'], 0.1 * torch.full((2, 2), 0.3))
    torch.testing.assert_close(opt.state[b]['m'], 0.1 * torch.tensor([0.0, 0.8, 0.0]))


def test_clipping_spans_param_groups():
    a = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    opt = OpenAIAdam([{'params': [a]}, {'params': [b], 'lr': 0.5}], lr=0.1,
                     schedule='warmup_linear', warmup=0.5, t_total=10, max_grad_norm=2.5)
    opt.step()
    torch.testing.assert_close(opt.state[a]['m'], 0.1 * torch.tensor([1.5]))
    torch.testing.assert_close(opt.state[b]['m'], 0.1 * torch.tensor([2.0]))


def test_state_dict_resume_is_exact():
    params, grads = random_problem(seed=11, n_steps=20)
    kw = dict(lr=0.01, schedule='warmup_cosine', warmup=0.1, t_total=20, l2=0.01,
              max_grad_norm=float(np.median([np.sqrt(sum((g ** 2).sum() for g in gs))
                                             for gs in grads])))
    want = run_torch(params, grads, **kw)[-1]

    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = OpenAIAdam(ps, **kw)
    for gs in grads[:10]:
        for p, g in zip(ps, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        opt.zero_grad()
    buf = io.BytesIO()
    torch.save({'params': [p.detach() for p in ps], 'opt': opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)

    ps = [torch.nn.Parameter(p.clone()) for p in saved['params']]
    opt = OpenAIAdam(ps, **kw)
    opt.load_state_dict(saved['opt'])
    assert opt.param_groups[0]['t'] == 10
    for gs in grads[10:]:
        for p, g in zip(ps, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        opt.zero_grad()
    for w, p in zip(want, ps):
        np.testing.assert_array_equal(p.detach().numpy(), w)


def test_params_without_grad_are_left_alone():
    a = torch.nn.Parameter(torch.ones(2, 2))
    b = torch.nn.Parameter(torch.ones(2))
    opt = OpenAIAdam([a, b], lr=0.1, schedule='warmup_constant', warmup=0.1, t_total=10,
                     l2=0.1, vector_l2=True, max_grad_norm=1)
    for _ in range(3):
        a.grad = torch.ones(2, 2)
        opt.step()
    assert torch.equal(b, torch.ones(2)) and b not in opt.state
    assert not torch.equal(a, torch.ones(2, 2))


def test_closure_loss_is_returned():
    p = torch.nn.Parameter(torch.ones(2))
    opt = OpenAIAdam([p], lr=0.1, schedule='warmup_constant', warmup=0.1, t_total=10)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 2.0
    assert p.grad is not None


@pytest.mark.parametrize('fn, x, warmup, want', [
    (warmup_linear, 0.001, 0.002, 0.5 * 0.999),
    (warmup_linear, 0.002, 0.002, 0.998),  # the ramp includes x == warmup, as in TF
    (warmup_linear, 0.5, 0.002, 0.5),
    (warmup_constant, 0.0, 0.1, 0.0),
    (warmup_constant, 0.05, 0.1, 0.5),
    (warmup_constant, 0.7, 0.1, 1.0),
    (warmup_cosine, 0.05, 0.1, 0.5),
    (warmup_cosine, 0.5, 0.1, 0.5),
    (warmup_cosine, 0.25, 0.1, 0.5 * (1 + math.cos(math.pi / 4))),
])
def test_schedules_on_floats_and_tensors(fn, x, warmup, want):
    assert fn(x, warmup) == pytest.approx(want, rel=1e-12)
    got = fn(torch.tensor([x, x], dtype=torch.float64), warmup)
    torch.testing.assert_close(got, torch.tensor([want, want], dtype=torch.float64))


def test_default_warmup_is_openais():
    assert warmup_constant(0.001) == pytest.approx(0.5)


@pytest.mark.parametrize('name, value', [
    ('lr', -1e-3), ('lr', float('nan')), ('schedule', 'warmup_exp'), ('warmup', 0),
    ('warmup', -0.1), ('warmup', 1.5), ('t_total', 0), ('b1', 1.0), ('b1', -0.1),
    ('b2', 1.0), ('e', -1e-8), ('l2', -0.01), ('max_grad_norm', float('nan')),
])
def test_invalid_arguments(name, value):
    kw = dict(lr=1e-3, schedule='warmup_linear', warmup=0.002, t_total=100)
    kw[name] = value
    with pytest.raises(ValueError, match=rf'^{name} must be .*, got {re.escape(repr(value))}$'):
        OpenAIAdam([torch.nn.Parameter(torch.zeros(1))], **kw)


def test_sparse_gradients_are_refused():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.zeros(3, 2).to_sparse()
    opt = OpenAIAdam([p], lr=0.1, schedule='warmup_linear', warmup=0.1, t_total=10)
    with pytest.raises(RuntimeError, match='sparse'):
        opt.step()
