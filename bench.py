"""Times GPT-1 fine-tuning on ROCStories: a training update (forward, both losses,
backward, OpenAIAdam step) and an evaluation pass, with the exact fast paths on and off,
in float32 and under bf16 autocast, each in a process of its own.

    python bench.py --data_dir data/       # 12 layers, 768 wide, 8 stories of two endings
    python bench.py --n_layer 2 --steps 2  # a quick look
    python bench.py --text --data_dir data/ [--openai_dir path/to/finetune-transformer-lm]

Reports the median time per update, stories/s, useful GFLOP/s (real tokens only: the body
and the LM head at the positions whose loss counts, counted apart), that as a share of the
device's measured matmul peak, and peak memory; the ratio is against the reference path
(padding kept, LM head everywhere) in float32, measured in the same run.

--text times the text pipeline instead, on every ROCStories field (stories and both
endings of the two CSVs): our TextEncoder, cold (built fresh, as in a first training run)
and warm (a second pass), and a cache hit of datasets.encoded; with --openai_dir, against
OpenAI's own text_utils.py from that checkout on the same input in the same run (its
spacy.load('en') given spaCy's blank English pipeline, the tokenizer OpenAI used).
"""
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import datasets
import tasks
import train
from utils import Parser, Ragged

REPO = os.path.dirname(os.path.abspath(__file__))
CONFIGS = [('fp32', 'reference'), ('fp32', 'fast'), ('bf16', 'reference'), ('bf16', 'fast')]


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n_layer', type=int, default=12)
    p.add_argument('--n_embd', type=int, default=768)
    p.add_argument('--n_head', type=int, default=12)
    p.add_argument('--n_batch', type=int, default=8, help='stories per update')
    p.add_argument('--steps', type=int, default=3, help='timed updates (after one warm-up)')
    p.add_argument('--data_dir', default='data/', help='ROCStories CSVs, for real lengths')
    p.add_argument('--encoder_path', default='model/encoder_bpe_40000.json')
    p.add_argument('--bpe_path', default='model/vocab_40000.bpe')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--only', default=None, help='run one config, e.g. fp32:fast (internal)')
    p.add_argument('--force_bf16', action='store_true',
                   help='time bf16 even where the device has no fast bf16 matmul')
    p.add_argument('--text', action='store_true', help='time the text pipeline instead')
    p.add_argument('--openai_dir', default=None,
                   help="with --text: a checkout of OpenAI's finetune-transformer-lm, to time its encoder")
    p.add_argument('--rounds', type=int, default=2, help='with --text: best of this many')
    return p.parse_args(argv)


def matmul_peak(dtype, device, n=3):
    """GFLOP/s of the GEMM shapes the model runs (tokens x 768 x 3072), best of n."""
    a = torch.randn(1024, 768, dtype=dtype, device=device)
    b = torch.randn(768, 3072, dtype=dtype, device=device)
    best = float('inf')
    for _ in range(n + 1):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * 1024 * 768 * 3072 / best / 1e9


def cpu_name():
    """The CPU's model name and its widest vector and matrix extensions."""
    try:
        with open('/proc/cpuinfo') as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((l.split(':', 1)[1].strip() for l in info.splitlines()
                 if l.startswith('model name')), platform.machine())
    flags = next((l.split(':', 1)[1].split() for l in info.splitlines()
                  if l.startswith('flags')), [])
    ext = [f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in flags]
    return f"{name} ({' '.join(ext) or 'no AVX2'})"


def sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def story_lengths(args, rng):
    """Token counts (story, ending 1, ending 2) of ROCStories' training stories when the
    CSVs and vocabulary are at hand; else a spread like theirs."""
    try:
        splits = datasets.encoded('rocstories', datasets.rocstories_splits(args.data_dir),
                                  args.encoder_path, args.bpe_path, verbose=False)
        return 'ROCStories', list(zip(*(f.lengths() for f in splits['train'].fields)))
    except (FileNotFoundError, OSError, ValueError):
        stories = rng.integers(32, 62, size=1000)
        return 'synthetic', [(int(s), int(rng.integers(5, 20)), int(rng.integers(5, 20)))
                             for s in stories]


def build(args, dtype, path):
    """A Trainer, as train.py builds it, on random stories with real lengths."""
    rng = np.random.default_rng(0)
    source, lengths = story_lengths(args, rng)
    n_vocab, n_special = 40478, 3
    rows = [lengths[i] for i in rng.permutation(len(lengths))[:8 * args.n_batch]]
    fields = tuple(Ragged.from_lists([list(rng.integers(0, n_vocab, n)) for n in col])
                   for col in zip(*rows))
    split = datasets.Split(fields, rng.integers(0, 2, len(rows)), None)
    task = tasks.TASKS['rocstories']
    specials = tasks.Specials.after(n_vocab)
    inputs = tasks.Inputs(task, specials, n_vocab + n_special, 512)
    n_ctx = max(a + max(b, c) for a, b, c in lengths) + 3
    targs = train.parse_args(['--n_batch', str(args.n_batch), '--update_batch', str(args.n_batch),
                              '--amp', 'bf16' if dtype == 'bf16' else 'none',
                              '--device', args.device, '--n_layer', str(args.n_layer),
                              '--n_embd', str(args.n_embd), '--n_head', str(args.n_head)]
                             + (['--reference'] if path == 'reference' else []))
    torch.manual_seed(0)
    model = train.DoubleHeadModel(train.model_config(targs), specials.classify, task.head,
                                  vocab=n_vocab + n_special + n_ctx, n_ctx=n_ctx).to(args.device)
    # the paper's optimizer settings (train.py's defaults), over a notional 1000 updates
    trainer = train.Trainer(targs, train.Distributed(args.device), model, task, inputs,
                            n_updates_total=1000)
    return source, trainer, split


def useful_gflop(M, n_layer, n_embd, vocab):
    """Forward GFLOP of the real tokens: the body (12 d^2 per token per layer in the dense
    layers, causal attention scores and sums) and the LM head at counted positions."""
    lengths = M.sum(-1).reshape(-1)
    dense = 2 * 12 * n_embd ** 2 * lengths.sum()
    attn = 2 * 2 * n_embd * (lengths * (lengths + 1) / 2).sum()
    body = n_layer * (dense + attn)
    lm = 2 * n_embd * vocab * (lengths - 1).sum()
    return float(body) / 1e9, float(lm) / 1e9


def peak_memory(device):
    if str(device).startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def run_one(args, dtype, path):
    torch.backends.cuda.matmul.allow_tf32 = False
    source, trainer, split = build(args, dtype, path)
    vocab = trainer.module.transformer.embed.weight.size(0)
    n = len(split.labels)
    times, evals = [], []
    for step in range(args.steps + 1):
        idx = np.arange(step * args.n_batch, (step + 1) * args.n_batch) % n
        sync(args.device)
        t = time.perf_counter()
        loss = trainer.update(split, idx, step + 1)
        loss.item()
        sync(args.device)
        t_update = time.perf_counter() - t
        t = time.perf_counter()
        trainer.logits(split, idx)
        t_eval = time.perf_counter() - t
        if step:  # the first is a warm-up
            times.append(t_update)
            evals.append(t_eval)
    idx = np.arange(args.n_batch * (args.steps + 1)) % n
    body, lm = useful_gflop(trainer.inputs(split, idx)[1], args.n_layer, args.n_embd, vocab)
    per_update = 3 * (body + lm) / (args.steps + 1)  # backward costs twice the forward
    t, te = float(np.median(times)), float(np.median(evals))
    return dict(dtype=dtype, path=path, source=source, update_s=t, eval_s=te,
                stories_per_s=args.n_batch / t, eval_stories_per_s=args.n_batch / te,
                gflops=per_update / t, body_gflop=3 * body / (args.steps + 1),
                lm_gflop=3 * lm / (args.steps + 1), peak_gib=peak_memory(args.device))


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def openai_encoder_class(openai_dir):
    """OpenAI's TextEncoder class, with spacy.load giving the blank English tokenizer
    (spaCy's 'en' model of 2018 is gone; only its tokenizer was used)."""
    import spacy
    path = os.path.join(openai_dir, 'text_utils.py')
    if not os.path.isfile(path):
        raise SystemExit(f'--openai_dir: no text_utils.py in {openai_dir}')
    module = load_module('openai_text_utils', path)

    def make(*paths):
        load = spacy.load
        spacy.load = lambda *args, **kwargs: spacy.blank('en')
        try:
            return module.TextEncoder(*paths)
        finally:
            spacy.load = load
    return make


def rocstories_fields(data_dir):
    fields = []
    for name in (datasets.VAL_NAME, datasets.TEST_NAME):
        stories, endings1, endings2, _ = datasets.read_stories(datasets.csv_path(data_dir, name))
        fields += stories + endings1 + endings2
    return fields


def time_encoder(make, paths, fields):
    """(cold seconds, warm seconds, ids) of one freshly built encoder."""
    encoder = make(*paths)
    start = time.perf_counter()
    ids = encoder.encode(fields, verbose=False)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    encoder.encode(fields, verbose=False)
    return cold, time.perf_counter() - start, ids


def bench_encoding(data_dir, encoder_path, bpe_path, openai_dir=None, rounds=2):
    """Best-of-rounds cold and warm seconds of ours and, with openai_dir, of OpenAI's
    encoder, alternating so that both see the same machine load; and whether their ids
    agree."""
    from text_utils import TextEncoder
    fields = rocstories_fields(data_dir)
    encoders = {'ours': TextEncoder}
    if openai_dir:
        encoders['OpenAI text_utils.py'] = openai_encoder_class(openai_dir)
    times, ids = {name: [] for name in encoders}, {}
    for _ in range(rounds):
        for name, make in encoders.items():
            *seconds, ids[name] = time_encoder(make, (encoder_path, bpe_path), fields)
            times[name].append(seconds)
    best = {k: [min(t[i] for t in v) for i in range(2)] for k, v in times.items()}
    same = sum(a == b for a, b in zip(*ids.values())) if openai_dir else None
    return dict(fields=len(fields), best=best, identical=same)


def bench_cache_hit(data_dir, encoder_path, bpe_path, rounds=3):
    with tempfile.TemporaryDirectory() as cache_dir:
        run = lambda: datasets.encoded('rocstories', datasets.rocstories_splits(data_dir),
                                       encoder_path, bpe_path, cache_dir=cache_dir,
                                       verbose=False)
        run()
        best = float('inf')
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
    return best


def report_text(result, hit):
    n = result['fields']
    print(f'fields: {n}')
    for name, (cold, warm) in result['best'].items():
        print(f'{name:>22}: cold {cold:6.3f} s ({n / cold:8.0f} fields/s)   '
              f'warm {warm:6.3f} s ({n / warm:8.0f} fields/s)')
    if result['identical'] is not None:
        (cold, warm), (base_cold, base_warm) = result['best'].values()
        print(f'{"ratio":>22}: cold {base_cold / cold:.2f}x   warm {base_warm / warm:.2f}x')
        print(f'{"identical ids":>22}: {result["identical"]}/{n} fields')
    print(f'{"cache hit":>22}: {hit:.3f} s (datasets.encoded, loading the CSVs included, '
          'best of 3)')


def text_main(args):
    for path in (args.encoder_path, args.bpe_path):
        if not os.path.isfile(path):
            raise SystemExit(f'--text: {path} not found (python download.py fetches the vocabulary)')
    result = bench_encoding(args.data_dir, args.encoder_path, args.bpe_path,
                            args.openai_dir, args.rounds)
    report_text(result, bench_cache_hit(args.data_dir, args.encoder_path, args.bpe_path))


def main(argv=None):
    args = parse_args(argv)
    if args.text:
        return text_main(args)
    if args.only:
        dtype, path = args.only.split(':')
        print(json.dumps(run_one(args, dtype, path)))
        return
    peaks = {d: matmul_peak(getattr(torch, {'fp32': 'float32', 'bf16': 'bfloat16'}[d]), args.device)
             for d in ('fp32', 'bf16')}
    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else \
        f'{cpu_name()}, {torch.get_num_threads()} threads'
    print(f'device: {device}; torch {torch.__version__}; {args.n_layer} layers, {args.n_embd} wide, '
          f'{args.n_batch} stories x 2 endings per update')
    print(f'measured matmul peak: fp32 {peaks["fp32"]:.0f} GFLOP/s, bf16 {peaks["bf16"]:.0f} GFLOP/s')
    results = []
    for dtype, path in CONFIGS:
        if dtype == 'bf16' and peaks['bf16'] < peaks['fp32'] and not args.force_bf16:
            print(f'bf16 {path}: skipped, this device multiplies bf16 slower than fp32 '
                  '(no native bf16 matmul); --force_bf16 times it anyway')
            continue
        cmd = [sys.executable, __file__, '--only', f'{dtype}:{path}'] + \
              [a for a in (argv if argv is not None else sys.argv[1:])]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f'{dtype} {path} failed:\n{out.stderr}')
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = next(r for r in results if r['dtype'] == 'fp32' and r['path'] == 'reference')
    print(f'lengths: {ref["source"]}; useful work per update: body {ref["body_gflop"]:.0f} '
          f'GFLOP, LM head {ref["lm_gflop"]:.0f} GFLOP')
    print('| dtype | path | s/update | stories/s | useful GFLOP/s | % of peak | eval stories/s '
          '| peak mem GiB | speed-up vs fp32 reference |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in results:
        print(f'| {r["dtype"]} | {r["path"]} | {r["update_s"]:.2f} | {r["stories_per_s"]:.2f} | '
              f'{r["gflops"]:.0f} | {100 * r["gflops"] / peaks[r["dtype"]]:.0f}% | '
              f'{r["eval_stories_per_s"]:.1f} | {r["peak_gib"]:.2f} | '
              f'{ref["update_s"] / r["update_s"]:.2f}x |')


if __name__ == '__main__':
    main()
