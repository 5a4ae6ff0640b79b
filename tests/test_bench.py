"""bench.py --pretrain on a tiny model: both implementations time updates of the same
windows, and the useful work is counted as 6 per weight per token plus causal attention."""
import importlib.util

import bench

TINY = ['--pretrain', '--n_layer', '1', '--n_embd', '16', '--n_head', '2', '--n_ctx', '8',
        '--n_batch', '2', '--steps', '1', '--device', 'cpu', '--default_malloc']


def test_pretrain_mode_times_both_implementations_on_a_tiny_model(capsys):
    args = bench.parse_args(TINY)
    impls = ['fast'] + (['transformers'] if importlib.util.find_spec('transformers') else [])
    results = [bench.run_pretrain(args, impl, 'fp32') for impl in impls]
    n, t, d, v = 2, 8, 16, bench.N_VOCAB
    for r in results:
        assert r['update_s'] > 0 and r['tokens_per_s'] == n * t / r['update_s']
        # forward x 3: 12 d^2 weights and causal attention per token, the head at t - 1
        body = 2 * 12 * d * d * n * t + 4 * d * n * t * (t + 1) / 2
        assert abs(r['body_gflop'] * 1e9 - 3 * body) < 1
        assert abs(r['lm_gflop'] * 1e9 - 3 * 2 * d * v * n * (t - 1)) < 1
    bench.report_pretrain(results, {'fp32': 100.0})
    out = capsys.readouterr().out
    assert '| pretrain.py | fp32 |' in out
    assert ('| transformers | fp32 |' in out) == ('transformers' in impls)
