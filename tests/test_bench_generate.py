"""bench.py --generate on a tiny model: both implementations time the same runs, and the
floor counts the bytes of every block's parameters and of the LM head's BPE rows."""
import importlib.util

import pytest

import bench

TINY = ['--generate', '--n_layer', '2', '--n_embd', '16', '--n_head', '2', '--n_ctx', '16',
        '--gen_lengths', '10,16', '--gen_samples', '1,3', '--gen_prompt', '4', '--device', 'cpu']


def test_generate_mode_times_both_implementations_and_counts_the_weights(capsys):
    args = bench.parse_args(TINY)
    runs = [('fast', 'fp32', 3), ('fast', 'bf16', 3)]
    if importlib.util.find_spec('transformers'):
        runs.append(('transformers', 'fp32', 1))
    results = [bench.run_generate(args, impl, dtype, n, 10) for impl, dtype, n in runs]
    d, layers = 16, 2
    # c_attn, c_proj, c_fc, the MLP's c_proj (weights and biases), two layer norms
    block = d * 3 * d + 3 * d + d * d + d + d * 4 * d + 4 * d + 4 * d * d + d + 4 * d
    for (_, dtype, n), r in zip(runs, results):
        assert r['seconds'] > 0 and r['tokens_per_s'] == n * (10 - 4) / r['seconds']
        size = 4 if dtype == 'fp32' else 2
        assert r['weight_bytes'] == (layers * block + bench.N_VOCAB * d) * size
    if len(runs) == 3:
        # its steps timed from 4 contexts spread over the run, 4 steps each, and at the
        # shortest length and one sample its whole run too
        assert results[-1]['contexts'] == [4, 5, 5, 6]
        assert results[-1]['whole_run_tokens_per_s'] > 0
    bench.report_generate(results, 10.0)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| 10 |')]
    assert len(rows) == 2
    floor = 3 * 10e9 / results[0]['weight_bytes']
    assert rows[0].startswith(f'| 10 | 3 | fp32 | {results[0]["tokens_per_s"]:.1f} | - | - | '
                              f'{floor:.1f} |')


@pytest.mark.parametrize('flags, message', [
    (['--gen_lengths', '10,32'], '--gen_lengths: expected lengths above --gen_prompt 4 and at '
                                 'most --n_ctx 16'),
    (['--gen_samples', '0'], "--gen_samples: expected whole numbers >= 1 separated by commas"),
    (['--gen_lengths', '10,x'], "--gen_lengths: expected whole numbers >= 1 separated by commas"),
    (['--impl', 'reference'], '--impl reference: sampling has one path of this port'),
])
def test_generate_mode_refuses_bad_flags_in_one_line(capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(TINY + flags)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and message in err
