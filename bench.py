"""Times GPT-1 fine-tuning on ROCStories: a training update (forward, both losses,
backward, optimizer step) and an evaluation pass, in float32 and under bf16 autocast, for
this port with its exact fast paths on (fast) and off (reference), and for transformers'
OpenAIGPTDoubleHeadsModel with its AdamW on the same stories (when transformers is
installed), each in a process of its own.

    python bench.py --data_dir data/       # 12 layers, 768 wide, 8 stories of two endings
    python bench.py --n_layer 2 --steps 2  # a quick look
    python bench.py --impl transformers    # one implementation
    python bench.py --profile fast:bf16    # where one configuration spends its time
    python bench.py --pretrain             # a pre-training update (below)
    python bench.py --text --data_dir data/ [--openai_dir path/to/finetune-transformer-lm]

Reports the median time per update, stories/s, useful GFLOP/s (real tokens only: the body
and the LM head at the positions whose loss counts, counted apart), that as a share of the
device's measured matmul peak, and peak memory; the ratios are against transformers in the
same precision and against this port's reference path in float32, all measured in the same
run. On CUDA it adds what a GPU table needs: memory per story, the largest batch that fits,
and the time of OpenAI's 3-epoch ROCStories run (1497 stories, 32 per update) at that speed.

--pretrain times a pre-training update instead, on random windows of a token stream read
as pretrain.py reads them (every token real): this port's, pretrain.LMTrainer's update (the
fused LM loss, OpenAIAdam), against transformers' OpenAIGPTLMHeadModel (labels=input_ids,
its own loss) with torch's AdamW, in tokens/s; the useful FLOPs are 6 per weight per token
for the body and the tied LM head (the vocabulary's rows, at the positions that predict),
and causal attention, counted as for fine-tuning.

    python bench.py --pretrain                             # 12 x 768, 2 windows of 512
    python bench.py --pretrain --device cuda --n_batch 64  # the paper's update

--text times the text pipeline instead, on every ROCStories field (stories and both
endings of the two CSVs): our TextEncoder, cold (built fresh, as in a first training run)
and warm (a second pass), and a cache hit of datasets.encoded; with --openai_dir, against
OpenAI's own text_utils.py from that checkout on the same input in the same run (its
spacy.load('en') given spaCy's blank English pipeline, the tokenizer OpenAI used).

--corpus times pretrain.py's corpus at scale instead: synthetic corpora made of --books
(copied in turn until a row's size), per --corpus_rows row FORMAT:SIZE, each encoded from
an empty cache in a process of its own (its time, MB/s per encoding process, the peak
memory of that process and of the largest encoding process, the cache's size), then
pretrain.py on the warm cache, timed from its start to its first update; and a stream of
1B random tokens (stream:1B): the cache's check of its 2 GB token file and the drawing of
an update's windows, from disk and from memory. Everything goes under --corpus_dir.

    python bench.py --corpus --books books/ --corpus_rows text:100M,jsonl:100M

--generate times sampling instead: generate.sample (its key/value cache, many samples in one
batch) against transformers' OpenAIGPTLMHeadModel.generate, the same weights in the same
precision (the weights cast, fp32 and bf16), for --gen_samples samples of a prompt of
--gen_prompt tokens continued to each of --gen_lengths tokens, each in its own process;
and the floor that the memory bandwidth sets: the bytes of weights a step reads, over the
bandwidth of a large copy measured in the same run (see run_generate).

    python bench.py --generate                  # 12 x 768: 1 and 8 samples, 128 and 512 tokens
"""
import argparse
import contextlib
import gzip
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import corpus
import datasets
import export
import generate
import pretrain
import tasks
import runs
import train
from model_pytorch import DEFAULT_CONFIG, Config, LMModel
from text_utils import usable_cpus
from utils import Parser, Ragged, file_digest, keep_freed_memory

REPO = os.path.dirname(os.path.abspath(__file__))
IMPLS = ('reference', 'fast', 'transformers')
PRETRAIN_IMPLS = ('fast', 'transformers')
PRETRAIN_BATCH = 2  # windows per update by default: a few minutes on 2 CPU cores
CORPUS_FORMATS = ('text', 'lines', 'jsonl', 'parquet', 'text.gz')
CORPUS_ROWS = ('text:25M,text:100M,text:1G,lines:100M,jsonl:100M,parquet:100M,text.gz:100M,'
               'stream:1B')


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n_layer', type=int, default=12)
    p.add_argument('--n_embd', type=int, default=768)
    p.add_argument('--n_head', type=int, default=12)
    p.add_argument('--n_batch', type=int, default=None,
                   help=f'stories per update (default 8); with --pretrain, windows per update '
                        f'(default {PRETRAIN_BATCH})')
    p.add_argument('--pretrain', action='store_true',
                   help='time a pre-training update of --n_batch windows of --n_ctx tokens')
    p.add_argument('--n_ctx', type=int, default=512, help='with --pretrain: tokens per window')
    p.add_argument('--steps', type=int, default=3, help='timed updates (after one warm-up)')
    p.add_argument('--data_dir', default='data/', help='ROCStories CSVs, for real lengths')
    p.add_argument('--cache_dir', default='cache/', help='their encoding, as train.py caches it')
    p.add_argument('--encoder_path', default='model/encoder_bpe_40000.json')
    p.add_argument('--bpe_path', default='model/vocab_40000.bpe')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--impl', choices=IMPLS + ('all',), default='all',
                   help='time one implementation (transformers: when installed)')
    p.add_argument('--only', default=None, help='run one config, e.g. fast:fp32 (internal)')
    p.add_argument('--profile', default=None, metavar='IMPL:DTYPE',
                   help='print where one configuration spends its time, e.g. fast:bf16')
    p.add_argument('--compile', action='store_true',
                   help="this port's model through torch.compile, as train.py --compile; the "
                        'first update, which compiles, is reported apart')
    p.add_argument('--max_batch', type=int, default=4096,
                   help='on CUDA: the largest pass tried when looking for what fits')
    p.add_argument('--default_malloc', action='store_true',
                   help="leave glibc's malloc as it is; by default every implementation runs "
                        'with the setting train.py makes (utils.keep_freed_memory)')
    p.add_argument('--force_bf16', action='store_true',
                   help='time bf16 even where the device has no fast bf16 matmul')
    p.add_argument('--text', action='store_true', help='time the text pipeline instead')
    p.add_argument('--openai_dir', default=None,
                   help="with --text: a checkout of OpenAI's finetune-transformer-lm, to time its encoder")
    p.add_argument('--rounds', type=int, default=2, help='with --text: best of this many')
    p.add_argument('--corpus', action='store_true',
                   help="time pretrain.py's corpus at scale instead (below)")
    p.add_argument('--books', default='books/',
                   help='with --corpus: plain-text books, repeated into the synthetic corpora')
    p.add_argument('--corpus_rows', default=CORPUS_ROWS,
                   help='with --corpus: FORMAT:SIZE rows, comma-separated (formats: '
                        f'{", ".join(CORPUS_FORMATS)}; stream:1B, a stream of 1B tokens)')
    p.add_argument('--corpus_dir',
                   default=os.path.join(tempfile.gettempdir(), 'gpt1-corpus-bench'),
                   help='with --corpus: where the synthetic corpora, their caches and the '
                        'runs go (kept for the next rows)')
    p.add_argument('--generate', action='store_true',
                   help='time sampling instead (below), with a model of --n_ctx positions')
    p.add_argument('--gen_lengths', type=counts, default=[128, 512],
                   help='with --generate: the tokens of prompt and continuation together, '
                        'comma-separated (at most --n_ctx)')
    p.add_argument('--gen_samples', type=counts, default=[1, 8],
                   help='with --generate: samples per run, comma-separated')
    p.add_argument('--gen_prompt', type=int, default=16,
                   help="with --generate: the prompt's tokens")
    args = p.parse_args(argv)
    if args.pretrain and args.impl == 'reference':
        p.error('--impl reference: pre-training has one path of this port (fast)')
    if args.generate and args.impl == 'reference':
        p.error('--impl reference: sampling has one path of this port (fast)')
    if args.generate and not 0 < args.gen_prompt < min(args.gen_lengths) <= max(
            args.gen_lengths) <= args.n_ctx:
        p.error(f'--gen_lengths: expected lengths above --gen_prompt {args.gen_prompt} and at '
                f'most --n_ctx {args.n_ctx}, got {args.gen_lengths}')
    args.n_batch = args.n_batch or (PRETRAIN_BATCH if args.pretrain else 8)
    return args


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
                                  args.encoder_path, args.bpe_path, cache_dir=args.cache_dir,
                                  verbose=False)
        return 'ROCStories', list(zip(*(f.lengths() for f in splits['train'].fields)))
    except (FileNotFoundError, OSError, ValueError):
        stories = rng.integers(32, 62, size=1000)
        return 'synthetic', [(int(s), int(rng.integers(5, 20)), int(rng.integers(5, 20)))
                             for s in stories]


def stories(args):
    """8 updates' worth of random stories with ROCStories' real lengths (the model's
    cost depends on the lengths, not on the ids; drawn again where more are needed than
    there are), and the model's n_ctx for them."""
    rng = np.random.default_rng(0)
    source, lengths = story_lengths(args, rng)
    n = 8 * args.n_batch
    order = rng.permutation(len(lengths))[:n] if n <= len(lengths) else rng.choice(len(lengths), n)
    rows = [lengths[i] for i in order]
    fields = tuple(Ragged.from_lists([list(rng.integers(0, N_VOCAB, n)) for n in col])
                   for col in zip(*rows))
    n_ctx = int(max(a + max(b, c) for a, b, c in lengths)) + 3
    return source, datasets.Split(fields, rng.integers(0, 2, len(rows)), None), n_ctx


N_VOCAB = 40478
TASK = tasks.TASKS['rocstories']
SPECIALS = tasks.Specials.after(N_VOCAB)
INPUTS = tasks.Inputs(TASK, SPECIALS, N_VOCAB + 3, 512)


def ours(args, dtype, impl, split, n_ctx):
    """(update(rows), logits(rows)) of a Trainer as train.py builds it, with the paper's
    optimizer settings (train.py's defaults) over a notional 1000 updates."""
    targs = train.parse_args(['--n_batch', str(args.n_batch), '--update_batch', str(args.n_batch),
                              '--amp', 'bf16' if dtype == 'bf16' else 'none',
                              '--device', args.device, '--n_layer', str(args.n_layer),
                              '--n_embd', str(args.n_embd), '--n_head', str(args.n_head)]
                             + (['--reference'] if impl == 'reference' else [])
                             + (['--compile'] if args.compile else []))
    torch.manual_seed(0)
    model = train.DoubleHeadModel(runs.model_config(targs, targs.clf_pdrop), SPECIALS.classify,
                                  TASK.head,
                                  vocab=N_VOCAB + 3 + n_ctx, n_ctx=n_ctx).to(args.device)
    trainer = train.Trainer(runs.UpdateSettings.from_flags(targs, targs.lr_warmup),
                            runs.Distributed(args.device), model, TASK, INPUTS, 1000,
                            targs.lm_coef, targs.reference)
    return (lambda rows: trainer.update(split, rows, 1).item()), \
        (lambda rows: trainer.logits(split, rows))


def transformers_peer(args, dtype, split, n_ctx):
    """(update(rows), logits(rows)) of transformers' OpenAIGPTDoubleHeadsModel, as its
    users fine-tune it: the same stories padded to each batch's longest, the LM loss on
    the real tokens at weight 0.5 beside the multiple-choice loss, AdamW with the paper's
    learning rate and weight decay, gradients clipped to norm 1."""
    import transformers
    cfg = transformers.OpenAIGPTConfig(vocab_size=N_VOCAB + 3, n_positions=n_ctx,
                                       n_embd=args.n_embd, n_layer=args.n_layer,
                                       n_head=args.n_head, afn='gelu')
    torch.manual_seed(0)
    model = transformers.OpenAIGPTDoubleHeadsModel(cfg).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01)
    autocast = lambda: peer_autocast(args, dtype)

    def batch(rows):
        x, m = INPUTS(split, rows, max_length=n_ctx)
        ids = torch.from_numpy(x[..., 0]).to(args.device)
        mc_token_ids = torch.from_numpy((m.sum(-1) - 1).astype(np.int64)).to(args.device)
        labels = ids.masked_fill(torch.from_numpy(m).to(args.device) == 0, -100)
        return ids, mc_token_ids, labels, torch.from_numpy(split.labels[rows]).to(args.device)

    def update(rows):
        ids, mc_token_ids, labels, y = batch(rows)
        model.train()
        with autocast():
            out = model(input_ids=ids, mc_token_ids=mc_token_ids, labels=labels, mc_labels=y)
        return peer_step(model, opt, out.mc_loss + 0.5 * out.loss)

    @torch.no_grad()
    def logits(rows):
        ids, mc_token_ids, _, _ = batch(rows)
        model.eval()
        with autocast():
            return model(input_ids=ids, mc_token_ids=mc_token_ids).mc_logits.float().cpu()
    return update, logits


def peer_autocast(args, dtype):
    return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16,
                          enabled=dtype == 'bf16')


def peer_step(model, opt, loss):
    """transformers' users' update from loss: backward, gradients clipped to norm 1, the
    optimizer's step; returns the loss."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def token_stream(folder, n_tokens=1 << 20):
    """A stream of random token ids in a file of folder, as pretrain.py maps its corpus
    (the model's cost depends on the window sizes, not on the ids)."""
    path = os.path.join(folder, 'stream.tokens')
    np.random.default_rng(0).integers(0, N_VOCAB, n_tokens, dtype=np.uint16).tofile(path)
    return corpus.TokenStream(path, n_tokens, 'uint16')


def lm_trainer(args, dtype, stream):
    """update(starts, n_update) of a pretrain.LMTrainer as pretrain.py builds it, with its
    defaults (the paper's optimizer settings) over a notional 1000 updates: the windows at
    starts in one pass."""
    pargs = pretrain.parse_args(['--corpus', stream.path, '--n_layer', str(args.n_layer),
                                 '--n_embd', str(args.n_embd), '--n_head', str(args.n_head),
                                 '--n_ctx', str(args.n_ctx), '--update_batch', str(args.n_batch),
                                 '--n_batch', str(args.n_batch), '--device', args.device,
                                 '--amp', 'bf16' if dtype == 'bf16' else 'none']
                                + (['--compile'] if args.compile else []))
    total = 1000
    settings = runs.UpdateSettings.from_flags(pargs, min(1.0, pargs.warmup_updates / total))
    torch.manual_seed(0)
    model = pretrain.build_model(pargs, N_VOCAB).to(args.device)
    trainer = pretrain.LMTrainer(settings, runs.Distributed(args.device), model, total, N_VOCAB,
                                 args.n_ctx)
    return lambda starts, n: trainer.update(stream, starts, n).item()


def transformers_lm(args, dtype, stream):
    """update(starts, n_update) of transformers' OpenAIGPTLMHeadModel on the same windows of
    n_ctx + 1 tokens, as its users pre-train it: labels=input_ids (its own shifted loss, n_ctx
    predictions, as pretrain.py's), AdamW with pretrain.py's learning rate and weight decay,
    gradients clipped to norm 1."""
    import transformers
    cfg = transformers.OpenAIGPTConfig(vocab_size=N_VOCAB, n_positions=args.n_ctx + 1,
                                       n_embd=args.n_embd, n_layer=args.n_layer,
                                       n_head=args.n_head, afn='gelu')
    torch.manual_seed(0)
    model = transformers.OpenAIGPTLMHeadModel(cfg).to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2.5e-4, weight_decay=0.01)

    def update(starts, n):
        ids = torch.from_numpy(stream.windows(starts, args.n_ctx + 1)).to(args.device)
        with peer_autocast(args, dtype):
            loss = model(input_ids=ids, labels=ids).loss
        return peer_step(model, opt, loss)
    return update


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


def run_one(args, impl, dtype):
    torch.backends.cuda.matmul.allow_tf32 = False
    if not args.default_malloc:
        keep_freed_memory()
    source, split, n_ctx = stories(args)
    if impl == 'transformers':
        update, logits = transformers_peer(args, dtype, split, n_ctx)
    else:
        update, logits = ours(args, dtype, impl, split, n_ctx)
    n = len(split.labels)
    rows = lambda step: np.arange(step * args.n_batch, (step + 1) * args.n_batch) % n
    times, evals = timed_steps(args, lambda step: update(rows(step)),
                               lambda step: logits(rows(step)))
    rows = np.arange(args.n_batch * (args.steps + 1)) % n
    body, lm = useful_gflop(INPUTS(split, rows)[1], args.n_layer, args.n_embd,
                            N_VOCAB + 3 + n_ctx)
    per_update = 3 * (body + lm) / (args.steps + 1)  # backward costs twice the forward
    t, te = float(np.median(times[1:])), float(np.median(evals[1:]))
    return dict(impl=impl, dtype=dtype, source=source, update_s=t, eval_s=te,
                first_update_s=times[0], first_eval_s=evals[0],
                stories_per_s=args.n_batch / t, eval_stories_per_s=args.n_batch / te,
                gflops=per_update / t, body_gflop=3 * body / (args.steps + 1),
                lm_gflop=3 * lm / (args.steps + 1), peak_gib=peak_memory(args.device))


def timed_steps(args, *fns):
    """The seconds of each fn(step), for steps 0 (a warm-up) to --steps; with --profile,
    prints where the steps after the warm-up spent their time."""
    profiler = torch.profiler.profile() if args.profile else contextlib.nullcontext()
    times = [[] for _ in fns]
    for step in range(args.steps + 1):
        with profiler if step else contextlib.nullcontext():
            for seconds, fn in zip(times, fns):
                seconds.append(timed(lambda: fn(step), args.device))
    if args.profile:
        by = 'self_device_time_total' if args.device.startswith('cuda') else 'self_cpu_time_total'
        print(profiler.key_averages().table(sort_by=by, row_limit=25), file=sys.stderr)
    return times


def run_pretrain(args, impl, dtype):
    """A pre-training update's time (the median after a warm-up), speed and peak memory;
    each update on the windows pretrain.py would draw for it."""
    torch.backends.cuda.matmul.allow_tf32 = False
    if not args.default_malloc:
        keep_freed_memory()
    with tempfile.TemporaryDirectory() as folder:
        stream = token_stream(folder)
        update = (lm_trainer if impl == 'fast' else transformers_lm)(args, dtype, stream)
        starts = lambda step: pretrain.update_starts(0, step + 1, args.n_batch, stream.n_tokens,
                                                     args.n_ctx + 1)
        times, = timed_steps(args, lambda step: update(starts(step), step + 1))
    body, lm = useful_gflop(np.ones((args.n_batch, args.n_ctx)), args.n_layer, args.n_embd,
                            N_VOCAB)
    t = float(np.median(times[1:]))
    return dict(impl=impl, dtype=dtype, update_s=t, first_update_s=times[0],
                tokens_per_s=args.n_batch * args.n_ctx / t, gflops=3 * (body + lm) / t,
                body_gflop=3 * body, lm_gflop=3 * lm, peak_gib=peak_memory(args.device))


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


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


def capacity(args):
    """On CUDA: device memory per story (the growth of the peak from 8 to 16 stories per
    pass, fast path, fp32), the largest pass that fits (doubling until out of memory),
    and the time of OpenAI's 3-epoch ROCStories run (1497 stories, 32 per update, and
    its evaluations) at the speed of one pass of 32."""
    _, split, n_ctx = stories(dict_args(args, n_batch=args.max_batch))
    cuda = args.device.startswith('cuda')
    found = {}
    for dtype in ('fp32', 'bf16'):
        peaks, n, fits = {}, 8, 0
        per_update = per_story_eval = float('nan')  # unless a pass of 32 fits
        while n <= args.max_batch:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            update, logits = ours(dict_args(args, n_batch=n), dtype, 'fast', split, n_ctx)
            try:
                seconds = [timed(lambda: update(np.arange(n)), args.device) for _ in range(3)]
                eval_seconds = timed(lambda: logits(np.arange(n)), args.device)
            except torch.cuda.OutOfMemoryError:
                break
            finally:
                del update, logits
            peaks[n], fits = peak_memory(args.device) * 1024, n
            if n == 32:
                per_update, per_story_eval = min(seconds[1:]), eval_seconds / n
            n *= 2
        updates = 1497 // 32 * 3
        evaluated = 3 * (374 + 374) + 1871  # train sample and valid per epoch, then test
        found[dtype] = dict(mib_per_story=(peaks[16] - peaks[8]) / 8, largest=fits,
                            largest_gib=peaks[fits] / 1024, s_per_update=per_update,
                            three_epochs_s=updates * per_update + evaluated * per_story_eval)
    return found


def dict_args(args, **changes):
    return argparse.Namespace(**{**vars(args), **changes})


def report_capacity(found):
    print('| dtype | memory per story (MiB) | largest pass that fits (stories) | its peak GiB '
          '| s per update of 32 | 3-epoch ROCStories run (s) |')
    print('|---|---|---|---|---|---|')
    for dtype, f in found.items():
        print(f'| {dtype} | {f["mib_per_story"]:.0f} | {f["largest"]} | {f["largest_gib"]:.1f} | '
              f'{f["s_per_update"]:.3f} | {f["three_epochs_s"]:.0f} |')


def configurations(args, peaks):
    """(impl, dtype) to time: bf16 only where the device multiplies it faster than fp32
    (or with --force_bf16), transformers only where it is installed."""
    impls = ((PRETRAIN_IMPLS if args.pretrain or args.generate else IMPLS) if args.impl == 'all'
             else (args.impl,))
    if args.impl == 'all' and importlib.util.find_spec('transformers') is None:
        print('transformers: skipped, not installed')
        impls = impls[:-1]
    dtypes = ['fp32']
    if peaks['bf16'] > peaks['fp32'] or args.force_bf16:
        dtypes.append('bf16')
    else:
        print('bf16: skipped, this device multiplies bf16 slower than fp32 (no native bf16 '
              'matmul); --force_bf16 times it anyway')
    return [(impl, dtype) for dtype in dtypes for impl in impls]


def in_own_process(argv, impl, dtype):
    cmd = [sys.executable, __file__, '--only', f'{impl}:{dtype}' if dtype else impl] + list(argv)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f'bench.py: error: {impl} {dtype} failed:\n{out.stderr}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results, peaks):
    first = results[0]
    print(f'lengths: {first["source"]}; useful work per update: body {first["body_gflop"]:.0f} '
          f'GFLOP, LM head {first["lm_gflop"]:.0f} GFLOP')
    find = lambda impl, dtype: next((r for r in results
                                     if (r['impl'], r['dtype']) == (impl, dtype)), None)
    ref = find('reference', 'fp32')
    print('| impl | dtype | s/update | stories/s | useful GFLOP/s | % of peak | eval stories/s '
          '| peak mem GiB | vs transformers | vs fp32 reference |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    if any(r['first_update_s'] > 2 * r['update_s'] for r in results):
        print('first update and evaluation (compiling, warming up): ' + ', '.join(
            f'{r["impl"]} {r["dtype"]} {r["first_update_s"]:.1f} s + {r["first_eval_s"]:.1f} s'
            for r in results))
    for r in results:
        peer = find('transformers', r['dtype'])
        ratio = lambda base: f'{base["update_s"] / r["update_s"]:.2f}x' if base else '-'
        print(f'| {r["impl"]} | {r["dtype"]} | {r["update_s"]:.2f} | {r["stories_per_s"]:.2f} | '
              f'{r["gflops"]:.0f} | {100 * r["gflops"] / peaks[r["dtype"]]:.0f}% | '
              f'{r["eval_stories_per_s"]:.1f} | {r["peak_gib"]:.2f} | {ratio(peer)} | '
              f'{ratio(ref)} |')


def report_pretrain(results, peaks):
    first = results[0]
    print(f'useful work per update: body {first["body_gflop"]:.0f} GFLOP, LM head '
          f'{first["lm_gflop"]:.0f} GFLOP')
    print('| impl | dtype | s/update | tokens/s | useful GFLOP/s | % of peak | peak mem GiB '
          '| vs transformers |')
    print('|---|---|---|---|---|---|---|---|')
    if any(r['first_update_s'] > 2 * r['update_s'] for r in results):
        print('first update (compiling, warming up): ' + ', '.join(
            f'{r["impl"]} {r["dtype"]} {r["first_update_s"]:.1f} s' for r in results))
    for r in results:
        peer = next((p for p in results if (p['impl'], p['dtype']) == ('transformers', r['dtype'])),
                    None)
        name = 'pretrain.py' if r['impl'] == 'fast' else r['impl']
        print(f'| {name} | {r["dtype"]} | {r["update_s"]:.2f} | {r["tokens_per_s"]:.0f} | '
              f'{r["gflops"]:.0f} | {100 * r["gflops"] / peaks[r["dtype"]]:.0f}% | '
              f'{r["peak_gib"]:.2f} | '
              + (f'{peer["update_s"] / r["update_s"]:.2f}x |' if peer else '- |'))


# ---------------------------------------------------------------------------------------
# --corpus: pretrain.py's corpus at scale, each row in a process of its own

def corpus_main(args, argv):
    if args.only:
        kind, row = args.only.split(':', 1)
        print(json.dumps({'encode': corpus_encoding, 'warm': first_update_time,
                          'stream': stream_costs}[kind](args, row)))
        return
    print(f'device: {cpu_name()}, {usable_cpus()} encoding process(es); torch {torch.__version__}')
    results = []
    for row in args.corpus_rows.split(','):
        fmt, size = row.split(':')
        if fmt == 'stream':
            results.append(in_own_process(argv, f'stream:{size}', None))
            continue
        if fmt not in CORPUS_FORMATS:
            raise SystemExit(f'bench.py: error: --corpus_rows {row}: formats are '
                             f'{", ".join(CORPUS_FORMATS)}')
        synthetic_corpus(args, fmt, size)
        result = in_own_process(argv, f'encode:{row}', None)
        started = time.time()
        result['warm_start_s'] = in_own_process(argv, f'warm:{row}', None)['at'] - started
        results.append(result)
        print(json.dumps(result), flush=True)
    report_corpus(results)


def size_of(text):
    """'100M' -> 100e6 (MB and GB as powers of ten; B is a billion tokens)."""
    return int(float(text[:-1]) * {'K': 1e3, 'M': 1e6, 'G': 1e9, 'B': 1e9}[text[-1]])


def corpus_folder(args, row):
    return os.path.join(args.corpus_dir, row.replace(':', '-'))


def book_paragraphs(path):
    """A book's paragraphs, as pretrain.py reads them."""
    return [text for text, _ in corpus.document_pieces(path, corpus.Reading())]


def synthetic_corpus(args, fmt, size):
    """The books copied into documents of the format fmt, in turn, until they hold size
    bytes of text: one a book (one a paragraph a line for lines; a record a paragraph
    for jsonl and parquet). Kept for later runs; its size in .size."""
    folder = os.path.join(corpus_folder(args, f'{fmt}:{size}'), 'corpus')
    if os.path.exists(os.path.join(folder, '.size')):
        return folder
    books = sorted(os.path.join(args.books, n) for n in os.listdir(args.books))
    if not books:
        raise SystemExit(f'bench.py: error: --books {args.books} holds no book')
    os.makedirs(folder, exist_ok=True)
    total, copy = 0, 0
    while total < size_of(size):
        for book in books:
            if total >= size_of(size):
                break
            name = os.path.join(folder, f'{copy:03d}-{os.path.basename(book)}')
            total += write_document(book, fmt, name.removesuffix('.txt'))
        copy += 1
    with open(os.path.join(folder, '.size'), 'w') as f:
        f.write(str(total))
    return folder


def write_document(book, fmt, stem):
    """The book as one document of the format fmt at stem (+ its suffix); its bytes of
    text."""
    if fmt in ('text', 'text.gz'):
        with open(book, 'rb') as f:
            data = f.read()
        gz = fmt == 'text.gz'
        with (gzip.open if gz else open)(stem + ('.txt.gz' if gz else '.txt'), 'wb') as f:
            f.write(data)
        return len(data)
    paragraphs = book_paragraphs(book)
    if fmt == 'lines':
        text = '\n'.join(paragraphs) + '\n'
        with open(stem + '.txt', 'w') as f:
            f.write(text)
        return len(text.encode())
    if fmt == 'jsonl':
        with open(stem + '.jsonl', 'w') as f:
            f.writelines(json.dumps({'text': p}) + '\n' for p in paragraphs)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({'text': paragraphs}), stem + '.parquet')
    return sum(len(p.encode()) + 1 for p in paragraphs)


def row_argv(args, row):
    """pretrain.py's arguments for a row: its corpus, cache and run folders, the paper's
    model."""
    fmt = row.split(':')[0]
    base = corpus_folder(args, row)
    return ['--corpus', os.path.join(base, 'corpus'), '--cache_dir', os.path.join(base, 'cache'),
            '--log_dir', os.path.join(base, 'log'), '--save_dir', os.path.join(base, 'save'),
            '--encoder_path', args.encoder_path, '--bpe_path', args.bpe_path, '--desc', 'bench',
            '--overwrite', '--device', 'cpu'] + \
        (['--paragraphs', 'lines'] if fmt == 'lines' else [])


def corpus_encoding(args, row):
    """The first run's corpus work on an empty cache (listing, checking, encoding both
    splits): its time, peak memory (this process, and the largest encoding process), the
    cache's size."""
    pargs = pretrain.parse_args(row_argv(args, row))
    shutil.rmtree(pargs.cache_dir, ignore_errors=True)
    start, cpu = time.perf_counter(), cpu_seconds()
    streams = corpus.load_corpus(pargs, runs.Distributed('cpu'))
    seconds, main_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    with open(os.path.join(pargs.corpus, '.size')) as f:
        text_bytes = int(f.read())
    cache = [os.path.join(pargs.cache_dir, n) for n in os.listdir(pargs.cache_dir)]
    return dict(row=row, documents=len(corpus.corpus_files(pargs.corpus)),
                text_mb=text_bytes / 1e6, encode_s=seconds, main_cpu_s=main_cpu, processes=usable_cpus(),
                tokens=sum(s.n_tokens for s in streams),
                main_peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                worker_peak_mib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                cache_mb=sum(os.path.getsize(p) for p in cache) / 1e6)


def cpu_seconds():
    """This process's CPU time: the first process's own share of the encoding (reading the
    documents, feeding the encoding processes, writing their ids) bounds how many it can
    keep busy."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def first_update_time(args, row):
    """pretrain.py on the row's warm cache, in this process as `python pretrain.py` runs
    it, until its first update begins: the time then, for the caller's clock."""
    def first(*_):
        print(json.dumps(dict(at=time.time())), flush=True)
        os._exit(0)  # nothing of the run is needed past this point
    pretrain.LMTrainer.update = first
    pretrain.main(row_argv(args, row))
    raise SystemExit('bench.py: error: pretrain.py ended before its first update')


def stream_costs(args, size, updates=50):
    """A stream of size random tokens (uint16, as GPT-1's) on disk: the time of the
    cache's check of its token file, and of drawing an update's windows (the paper's 64,
    of 512 + 1 tokens), each with the file's pages evicted from memory (as after a
    reboot) and in memory."""
    n = size_of(size)
    path = os.path.join(args.corpus_dir, f'stream-{size}.tokens')
    if not os.path.exists(path) or os.path.getsize(path) != 2 * n:
        write_random_stream(path, n)
    out = dict(row=f'stream:{size}', tokens=n, file_gb=2 * n / 1e9)
    for pages in ('cold', 'warm'):
        if pages == 'cold':
            evict(path)
        start = time.perf_counter()
        corpus.token_checksum(path, np.uint16)
        out[f'check_{pages}_s'] = time.perf_counter() - start
    start = time.perf_counter()
    file_digest(path)  # what a cryptographic digest of it would cost instead
    out['sha256_warm_s'] = time.perf_counter() - start
    stream = corpus.TokenStream(path, n, 'uint16')
    for pages in ('cold', 'warm'):
        if pages == 'cold':
            evict(path)
        start = time.perf_counter()
        for k in range(1, updates + 1):
            starts = pretrain.update_starts(0, k, 64, n, 513)
            pretrain.window_batch(stream.windows(starts, 513), N_VOCAB)
        out[f'draw_{pages}_ms'] = (time.perf_counter() - start) / updates * 1e3
    return out


def write_random_stream(path, n, block=1 << 26):
    rng = np.random.default_rng(0)
    with open(path, 'wb') as f:
        for i in range(0, n, block):
            f.write(rng.integers(0, N_VOCAB, min(block, n - i), dtype=np.uint16).tobytes())
        f.flush()
        os.fsync(f.fileno())


def evict(path):
    """Drops path's pages from the page cache: its next reads come from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def report_corpus(results):
    rows = [r for r in results if 'encode_s' in r]
    if rows:
        print('| corpus | documents | text MB | tokens | encoding s | MB/s (per process) | '
              'first process: MB a CPU s | peak memory MiB: main / an encoding process | '
              'cache MB | warm start to the first update s |')
        print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        rate = r['text_mb'] / r['encode_s']
        print(f"| {r['row']} | {r['documents']} | {r['text_mb']:.0f} | {r['tokens'] / 1e6:.1f}M "
              f"| {r['encode_s']:.0f} | {rate:.2f} ({rate / r['processes']:.2f}) | "
              f"{r['text_mb'] / r['main_cpu_s']:.0f} | "
              f"{r['main_peak_mib']:.0f} / {r['worker_peak_mib']:.0f} | {r['cache_mb']:.0f} | "
              f"{r['warm_start_s']:.1f} |")
    for r in results:
        if 'draw_warm_ms' in r:
            print(f"{r['row']} ({r['file_gb']:.1f} GB): the cache's check of the token file "
                  f"{r['check_cold_s']:.2f} s from disk, {r['check_warm_s']:.2f} s in memory "
                  f"(sha256 instead: {r['sha256_warm_s']:.2f} s in memory); "
                  f"an update's windows (64 of 513 tokens) {r['draw_cold_ms']:.2f} ms from disk, "
                  f"{r['draw_warm_ms']:.3f} ms in memory")


def counts(text):
    """An argparse type: whole numbers >= 1, separated by commas."""
    values = [int(v) for v in text.split(',') if v.strip().isdigit()]
    if len(values) != len(text.split(',')) or min(values, default=0) < 1:
        raise argparse.ArgumentTypeError(f'expected whole numbers >= 1 separated by commas, '
                                         f'got {text!r}')
    return values


def generate_main(args, argv):
    """--generate: every (length, samples, implementation, dtype) in its own process, against
    the floor of the memory bandwidth measured here."""
    if args.only:
        impl, dtype, n, length = args.only.split(':')
        print(json.dumps(run_generate(args, impl, dtype, int(n), int(length))))
        return
    peaks = {d: matmul_peak(DTYPES[d], args.device) for d in DTYPES}
    bandwidth = copy_bandwidth(args.device)
    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else \
        f'{cpu_name()}, {torch.get_num_threads()} threads'
    print(f'device: {device}; torch {torch.__version__}; {args.n_layer} layers, {args.n_embd} '
          f'wide; a prompt of {args.gen_prompt} tokens continued with top-k {GEN_TOP_K} draws')
    print(f'memory bandwidth: {bandwidth:.1f} GB/s (a copy of 1 GiB, its reads and writes)')
    results = [in_own_process(argv, f'{impl}:{dtype}:{n}:{length}', None)
               for length in args.gen_lengths for n in args.gen_samples
               for impl, dtype in configurations(args, peaks)]
    report_generate(results, bandwidth)


DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
GEN_TOP_K = 10
# transformers' tokens/s: its steps timed at this many contexts, this many steps each
GEN_POINTS, GEN_STEPS = 4, 4


def copy_bandwidth(device, n_bytes=1 << 30, n=10):
    """GB/s of a copy of n_bytes, each byte read once and written once, best of n (on a
    shared machine single copies vary by a third)."""
    src = torch.ones(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * n_bytes / min(timed(lambda: dst.copy_(src), device) for _ in range(n + 1)) / 1e9


def generate_lm(args, dtype):
    """The LMModel of the bench's size that generate.load_lm would give for OpenAI's
    weights, with random ones (the cost does not depend on them), cast to dtype as
    generate.py casts it."""
    cfg = Config(DEFAULT_CONFIG, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head)
    torch.manual_seed(0)
    model = LMModel(cfg, vocab=N_VOCAB + args.n_ctx, n_ctx=args.n_ctx, return_probs=True)
    return generate.cast_for_sampling(model.to(args.device), DTYPES[dtype]).eval()


def transformers_copy(args, model):
    """transformers' OpenAIGPTLMHeadModel holding model's weights (as export.py maps them),
    in model's dtype."""
    import transformers
    config = transformers.OpenAIGPTConfig(vocab_size=N_VOCAB, n_positions=args.n_ctx,
                                          n_embd=args.n_embd, n_layer=args.n_layer,
                                          n_head=args.n_head, afn='gelu')
    hf = transformers.OpenAIGPTLMHeadModel(config)
    meta = dict(n_vocab=N_VOCAB, n_special=0, n_ctx=args.n_ctx, cfg=dict(n_layer=args.n_layer))
    # the LM head is tied to tokens_embed, which the state holds
    hf.load_state_dict(export.transformers_state(model.state_dict(), meta), strict=False)
    return hf.to(args.device, model.transformer.embed.weight.dtype).eval()


def run_generate(args, impl, dtype, n, length):
    """tokens/s of n samples that continue a prompt of --gen_prompt random tokens to length
    tokens, by generate.sample (impl 'fast') or transformers' generate; and the bytes of
    weights that each step reads: every block's parameters and the LM head's rows of the
    BPE tokens (the two embedding rows looked up are left out).

    transformers has no key/value cache for OpenAIGPT, so that a step costs a pass over the
    whole context, and its whole run at 512 tokens and 8 samples would take most of an hour
    on two cores: its run's time is the sum over the steps of their time, measured for
    GEN_STEPS steps from each of GEN_POINTS contexts and interpolated between them. At the
    shortest length and one sample, its whole run is timed too, to check that sum."""
    model = generate_lm(args, dtype)
    weights = sum(p.numel() for p in model.transformer.h.parameters()) + N_VOCAB * args.n_embd
    tokens = np.random.default_rng(0).integers(0, N_VOCAB, length).tolist()
    prompt, new = args.gen_prompt, length - args.gen_prompt
    found = dict(impl=impl, dtype=dtype, samples=n, length=length,
                 weight_bytes=weights * model.transformer.embed.weight.element_size())
    if impl == 'fast':
        def run(k):
            generate.sample(model, tokens[:prompt], k, N_VOCAB, 0, args.n_ctx, top_k=GEN_TOP_K,
                            num_samples=n,
                            generator=[torch.Generator().manual_seed(i) for i in range(n)])
        run(2)  # warm-up
        seconds = timed(lambda: run(new), args.device)
        return dict(found, seconds=seconds, tokens_per_s=n * new / seconds)
    hf = transformers_copy(args, model)

    def run(context, k):
        ids = torch.tensor([tokens[:context]], device=args.device)
        with torch.no_grad():
            hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=GEN_TOP_K,
                        max_new_tokens=k, min_new_tokens=k, num_return_sequences=n,
                        pad_token_id=0)
    run(prompt, 2)  # warm-up
    starts = np.linspace(prompt, length - GEN_STEPS, GEN_POINTS).round().astype(int)
    step_s = [timed(lambda: run(int(t), GEN_STEPS), args.device) / GEN_STEPS for t in starts]
    # a step from context t reads t tokens: each timing is that of its middle step
    seconds = float(np.interp(np.arange(prompt, length), starts + (GEN_STEPS - 1) / 2,
                              step_s).sum())
    found.update(seconds=seconds, tokens_per_s=n * new / seconds, contexts=starts.tolist(),
                 step_s=step_s)
    if n == 1 and length == min(args.gen_lengths):
        found['whole_run_tokens_per_s'] = new / timed(lambda: run(prompt, new), args.device)
    return found


def report_generate(results, bandwidth):
    print('| tokens | samples | dtype | generate.py tokens/s | transformers tokens/s | '
          'vs transformers | floor tokens/s | generate.py / floor |')
    print('|---|---|---|---|---|---|---|---|')
    find = lambda impl, r: next((p for p in results if p['impl'] == impl and all(
        p[k] == r[k] for k in ('dtype', 'samples', 'length'))), None)
    for r in results:
        if r['impl'] != 'fast':
            continue
        peer = find('transformers', r)
        # each step reads the weights once, for the whole batch
        floor = r['samples'] * bandwidth * 1e9 / r['weight_bytes']
        theirs, ratio = '-', '-'
        if peer:
            theirs = f'{peer["tokens_per_s"]:.1f}'
            ratio = f'{r["tokens_per_s"] / peer["tokens_per_s"]:.1f}x'
        print(f'| {r["length"]} | {r["samples"]} | {r["dtype"]} | {r["tokens_per_s"]:.1f} | '
              f'{theirs} | {ratio} | {floor:.1f} | {r["tokens_per_s"] / floor:.0%} |')
    for r in results:
        if 'whole_run_tokens_per_s' in r:
            print(f'transformers, {r["dtype"]}, {r["length"]} tokens, 1 sample: '
                  f'{r["whole_run_tokens_per_s"]:.1f} tokens/s over its whole run, '
                  f'{r["tokens_per_s"]:.1f} as summed from its steps')


def main(argv=None):
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.text:
        return text_main(args)
    if args.corpus:
        return corpus_main(args, argv)
    if args.generate:
        return generate_main(args, argv)
    if args.only == 'capacity':
        print(json.dumps(capacity(args)))
        return
    if args.only or args.profile:
        impl, dtype = (args.only or args.profile).split(':')
        print(json.dumps((run_pretrain if args.pretrain else run_one)(args, impl, dtype)))
        return
    peaks = {d: matmul_peak(getattr(torch, {'fp32': 'float32', 'bf16': 'bfloat16'}[d]), args.device)
             for d in ('fp32', 'bf16')}
    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else \
        f'{cpu_name()}, {torch.get_num_threads()} threads'
    batch = (f'{args.n_batch} windows of {args.n_ctx} tokens' if args.pretrain else
             f'{args.n_batch} stories x 2 endings')
    print(f'device: {device}; torch {torch.__version__}; {args.n_layer} layers, {args.n_embd} wide, '
          f'{batch} per update')
    print(f'measured matmul peak: fp32 {peaks["fp32"]:.0f} GFLOP/s, bf16 {peaks["bf16"]:.0f} GFLOP/s')
    print("malloc: glibc's defaults" if args.default_malloc else
          'malloc: keeping freed memory (utils.keep_freed_memory), for every implementation')
    results = [in_own_process(argv, impl, dtype) for impl, dtype in configurations(args, peaks)]
    (report_pretrain if args.pretrain else report)(results, peaks)
    if args.device.startswith('cuda') and not args.pretrain:
        report_capacity(in_own_process(argv, 'capacity', None))


if __name__ == '__main__':
    main()
