"""Samples a continuation of a prompt from GPT-1's language model.

    python generate.py "the weather was nice, so we" --length 40 --top_k 10

From the pretrained weights in --model_dir: OpenAI's model/ folder (`python download.py`)
or a checkpoint of transformers' OpenAIGPT models (`python download.py --from hub`, or a
folder of export.py); or from parameters fine-tuned by `python train.py ... --submit`,
with --checkpoint.

The vocabulary is --encoder_path and --bpe_path; each one not given is looked for in
--model_dir (default model/), with --checkpoint too: OpenAI's encoder_bpe_40000.json and
vocab_40000.bpe, or, where those are absent and the Hub's vocab.json is there, vocab.json
and merges.txt, the same vocabulary under the Hub's names. Both files, and the weights'
params_shapes.json, are checked before anything loads.

--length is at most 1024 tokens. While prompt and sample fit in n_ctx (512) tokens, a new
token costs the model one position (a key/value cache keeps the others) and the LM head at
that position: 35 to 40 ms on two CPU cores, 11 to 13 with --dtype bf16, and 8 samples
(--num_samples 8) cost a step 2 to 3.5 times one. Past n_ctx the window slides a token at a
time, which moves every position, so that each token reads the whole window afresh, about
half a second (0.3 s in bf16), and the model no longer sees the prompt: a longer run costs
minutes for text that has drifted off; generate.sample() itself takes any length.

Exit codes: 0 done; 1 an error, said in one line naming the file; 2 a bad flag.
"""
import argparse
import contextlib
import math
import numbers
import os
import sys

import torch

from model_pytorch import (Config, Conv1D, LMModel, check_weights_files,
                           load_openai_pretrained_model, load_trained_params, pretrained_settings)
from utils import Parser, count, real

GET_CHECKPOINT = ('fine-tune one with `python train.py --dataset rocstories --desc rocstories '
                  '--submit` (it writes save/rocstories/best_params.safetensors), or leave out '
                  "--checkpoint to sample from OpenAI's pretrained model")
MAX_LENGTH = 1024
MAX_SAMPLES = 64
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def _missing(path, how):
    return FileNotFoundError(f'{path} not found: {how}')


def load_lm(checkpoint=None, model_dir='model/', device='cpu'):
    """An LMModel returning next-token probabilities, in eval mode on device, and the
    sizes sample() needs: dict(n_vocab, n_special, n_ctx).

    From a checkpoint written by train.py (save_params) when given, else from the
    pretrained weights in model_dir (either layout of load_openai_pretrained_model).
    """
    if checkpoint is not None:
        model, dims = _from_checkpoint(checkpoint)
    else:
        model, dims = _from_pretrained(model_dir)
    # Special tokens are not text: masking them before the softmax, as positions are,
    # leaves text all the probability however likely the model finds them.
    model.pos_emb_mask[dims['n_vocab']:] = True
    return model.to(device).eval(), dims


def _from_checkpoint(path):
    if not os.path.isfile(path):
        raise _missing(path, GET_CHECKPOINT)
    meta, state = load_trained_params(path)
    dims = {key: meta[key] for key in ('n_vocab', 'n_special', 'n_ctx')}
    model = LMModel(Config(meta['cfg']), vocab=sum(dims.values()), n_ctx=dims['n_ctx'],
                    return_probs=True)
    # The task head scores stories, it plays no part in language modelling.
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith('task_head.')})
    return model, dims


def _from_pretrained(model_dir):
    cfg, n_vocab, n_ctx = pretrained_settings(model_dir)
    model = LMModel(cfg, vocab=n_vocab + n_ctx, n_ctx=n_ctx, return_probs=True)
    load_openai_pretrained_model(model, n_ctx=n_ctx, n_special=0, n_embd=cfg.n_embd,
                                 path=model_dir)
    return model, dict(n_vocab=n_vocab, n_special=0, n_ctx=n_ctx)


def check_sampling(length, top_k, temperature, top_p=1.0, num_samples=None):
    if not isinstance(length, numbers.Integral) or length < 0:
        raise ValueError(f'length must be a whole number >= 0, got {length!r}')
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        raise ValueError(f'top_k must be a whole number >= 0 (0 keeps every token), got {top_k!r}')
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)
            and temperature >= 0):
        raise ValueError('temperature must be a finite number >= 0 (0 is greedy), got '
                         f'{temperature!r}')
    if not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
        raise ValueError(f'top_p must be a number in (0, 1] (1 keeps every token), got {top_p!r}')
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(
            num_samples, numbers.Integral) or num_samples < 1):
        raise ValueError(f'num_samples must be a whole number >= 1, got {num_samples!r}')


def sample(model, prompt_ids, length, n_vocab, n_special, n_ctx, top_k=0, temperature=1.0,
           generator=None, top_p=1.0, stop=(), num_samples=None, use_cache=True):
    """Samples `length` token ids, one at a time, to follow prompt_ids; returns the new ids.

    Only the n_vocab text tokens are ever drawn, from the softmax of their logits over
    temperature: T reweights each probability p to p**(1/T), and 0 is greedy decoding (the
    most likely token every time, as top_k=1). Then, as transformers applies them, top_k > 0
    keeps the k most likely, and top_p < 1 the fewest most likely whose probabilities sum to
    top_p (nucleus sampling). stop: token id sequences; a sample ends with the first of them
    it draws (which it keeps). generator: a CPU torch.Generator, for reproducible draws.

    num_samples=N draws N samples of the prompt in one batch and returns a list of N lists;
    generator is then None or a list of N generators, the i-th drawing the i-th sample,
    which is (to float rounding) the sample that sample() draws alone with that generator.

    The model reads the last n_ctx tokens. Each new token costs one position (a KVCache
    holds the others, unless use_cache is False) and the LM head at that position only.
    Once the sequence is longer than n_ctx, the window slides a token at a time, which
    moves every position: each token then reads the whole window afresh. In bf16 on a CPU,
    cast_for_sampling lays the weights out for the fastest product with one row.
    """
    check_sampling(length, top_k, temperature, top_p, num_samples)
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError('the prompt is empty: the model needs at least one token to continue')
    if not all(0 <= i < n_vocab + n_special for i in ids):
        raise ValueError(f'prompt ids must lie in [0, {n_vocab + n_special}), the token and '
                         'special token ids')
    generators = [generator] if num_samples is None else list(generator or [None] * num_samples)
    if len(generators) != (num_samples or 1):
        raise ValueError(f'generator: expected a list of num_samples={num_samples} generators '
                         f'(or None), got {len(generators)}')
    stop = [[int(i) for i in s] for s in stop]
    if not all(stop):
        raise ValueError('stop: each stop sequence must hold at least one token id')
    was_training = model.training
    model.eval()
    with torch.no_grad():
        drawn = _sample(_Reader(model, n_vocab, n_special, n_ctx, use_cache), ids, length,
                        top_k, temperature, top_p, stop, generators)
    model.train(was_training)
    return drawn[0] if num_samples is None else drawn


def _sample(reader, ids, length, top_k, temperature, top_p, stop, generators):
    """sample's draws, a row of the batch per sample still drawing."""
    drawn = [[] for _ in generators]
    live = list(range(len(generators)))  # the samples still drawing, by row
    tokens = torch.tensor([ids], device=reader.device)
    logits = reader(tokens)
    # every sample continues the one prompt, read once
    tokens, logits = tokens.expand(len(live), -1), logits.expand(len(live), -1)
    reader.select([0] * len(live))
    for step in range(length):
        new = _draw(logits.cpu(), top_k, temperature, top_p, [generators[i] for i in live])
        for i, token in zip(live, new.tolist()):
            drawn[i].append(token)
        going = [row for row, i in enumerate(live) if not _ends_with(drawn[i], stop)]
        if not going or step == length - 1:
            break
        tokens = torch.cat([tokens, new.to(tokens.device)[:, None]], dim=1)
        if len(going) < len(live):
            tokens, live = tokens[going], [live[row] for row in going]
            reader.select(going)
        logits = reader(tokens)
    return drawn


def _ends_with(ids, stop):
    return any(ids[-len(s):] == s for s in stop if len(ids) >= len(s))


class _Reader:
    """The model's logits for the token after each row of tokens, over the text tokens.

    Of each row it reads the last n_ctx tokens: with a cache, only the last token while the
    window has not slid, since the cache holds the others."""

    def __init__(self, model, n_vocab, n_special, n_ctx, use_cache):
        self.transformer, self.n_vocab, self.n_ctx = model.transformer, n_vocab, n_ctx
        self.first_position = n_vocab + n_special
        self.we = model.lm_head.decoder.weight
        self.device = self.we.device
        self.use_cache = use_cache
        self.cache = None  # while not None, it holds every token of the rows but the last
        # see cast_for_sampling
        self.by_columns = (self.we.dtype == torch.bfloat16 and self.device.type == 'cpu'
                           and all(conv.w.stride(0) == 1 for conv in _dense_layers(model)))

    def __call__(self, tokens):
        """tokens (rows, seq) -> logits (rows, n_vocab), float32."""
        seq = tokens.size(1)
        if self.cache is not None and seq <= self.n_ctx:
            x, start = tokens[:, -1:], seq - 1
        else:
            x, start = tokens[:, -self.n_ctx:], 0
            # a cache of a full window is of no use: the next token slides it
            fresh = self.use_cache and seq < self.n_ctx
            self.cache = self.transformer.new_cache() if fresh else None
        positions = torch.arange(start, start + x.size(1), device=x.device) + self.first_position
        with _onednn(not (self.by_columns and x.numel() == 1)):
            h = self.transformer(torch.stack([x, positions.expand_as(x)], dim=-1),
                                 cache=self.cache)
            # the LM head at the last position only, and only over the text tokens
            return (h[:, -1] @ self.we[:self.n_vocab].T).float()

    def select(self, rows):
        """Keeps the rows `rows` of the cache, in that order."""
        for block_cache in self.cache or ():
            block_cache.select(torch.tensor(rows, device=self.device))


def cast_for_sampling(model, dtype):
    """model, its parameters cast to dtype, for sample(). In bf16 on a CPU, each dense
    layer's weight (nx, nf) is then stored by columns, as its transpose is by rows (the
    same shape and values): sample() multiplies one row by it with torch's own kernel,
    which reads such a matrix at the speed of memory, where oneDNN's reads either layout
    at about half that (docs/speed.md, Sampling)."""
    model.to(dtype)
    if dtype == torch.bfloat16 and next(model.parameters()).device.type == 'cpu':
        for conv in _dense_layers(model):
            conv.w.data = conv.w.data.t().contiguous().t()
    return model


def _dense_layers(model):
    return [m for m in model.modules() if isinstance(m, Conv1D)]


@contextlib.contextmanager
def _onednn(enabled):
    """torch's products of CPU tensors through oneDNN while enabled, through its own kernels
    otherwise."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def _draw(logits, top_k, temperature, top_p, generators):
    """A token per row of logits (rows, n_vocab), row i drawn with generators[i] (see
    sample)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1)
    logits = logits.double() / temperature
    candidates = None
    if top_k or top_p < 1:
        # the most likely first: top_p keeps a run from the start of this order
        logits, candidates = logits.topk(min(top_k or logits.size(-1), logits.size(-1)))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1:
        # a token is kept while the tokens more likely than it hold less than top_p
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0)
    picks = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])
    return picks if candidates is None else candidates.gather(-1, picks[:, None]).squeeze(-1)


def decode(decoder, ids):
    """Text from BPE ids: pieces joined, each word end ('</w>') a space."""
    return ''.join(decoder[i] for i in ids).replace('</w>', ' ').strip()


def unknown_pieces(text_encoder, text):
    """What of text the vocabulary lacks: the BPE pieces that the encoder turns into id 0
    (single characters, as merges only build pieces of the vocabulary), lowercased as
    the encoder reads them, without the end-of-word mark."""
    from text_utils import fix_text, text_standardize
    pieces = {piece for token in text_encoder.tokenize(text_standardize(fix_text(text)))
              for piece in text_encoder.bpe(token.lower()).split(' ')}
    return sorted({p.replace('</w>', '') for p in pieces if p not in text_encoder.encoder}
                  - {''})


def check_files(encoder_path, bpe_path, model_dir=None):
    """Before anything heavy loads: the vocabulary must be there (else how to get it),
    and it and the weights in model_dir (None: none used) well formed. Returns the
    vocabulary's size."""
    from text_utils import check_vocabulary
    n_vocab = check_vocabulary(encoder_path, bpe_path)
    if model_dir is not None:
        check_weights_files(model_dir)
    return n_vocab


def load_text_encoder(encoder_path, bpe_path):
    # Imported here: spaCy and ftfy are slow to load and load_lm/sample do not need them.
    from text_utils import TextEncoder
    return TextEncoder(encoder_path, bpe_path)


def warn_unknown(text_encoder, prompt):
    unknown = unknown_pieces(text_encoder, prompt)
    if unknown:
        print(f'generate.py: warning: the vocabulary lacks {", ".join(map(repr, unknown))} '
              f'of the prompt: the model reads each as token 0 '
              f'({text_encoder.decoder.get(0)!r}), not as typed', file=sys.stderr)


def warn_long(prompt_ids, n_ctx):
    if len(prompt_ids) > n_ctx:
        print(f'generate.py: warning: the prompt is {len(prompt_ids)} tokens and the model reads '
              f'{n_ctx}: it continues from the last {n_ctx}, without the first '
              f'{len(prompt_ids) - n_ctx}', file=sys.stderr)


def stop_ids(text_encoder, text):
    """The token ids of a --stop text ('\\n' typed as two characters is a newline) as the
    encoder reads it inside a longer text. Read alone, a newline at either end would be
    stripped (text_standardize), so it is read between two words and they are dropped.
    Refuses, as a bad flag, a text that encodes to nothing."""
    word = text_encoder.encode(['a'], verbose=False)[0]
    inside = 'a ' + text.replace('\\n', '\n') + ' a'
    ids = text_encoder.encode([inside], verbose=False)[0][len(word):-len(word)]
    if not ids:
        Parser(prog='generate.py').error(f'--stop {text!r}: expected text that the vocabulary '
                                         'encodes to at least one token (\\n for a newline)')
    return ids


def parse_args(argv=None):
    p = Parser(prog='generate.py', description=__doc__.split('\n\n')[0],
               epilog=__doc__.split('\n\n', 2)[2],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('prompt', help='the text to continue')
    p.add_argument('--length', type=count(0, MAX_LENGTH), default=40,
                   help=f'number of tokens to sample, at most {MAX_LENGTH} (see below)')
    p.add_argument('--top_k', type=count(0), default=10,
                   help='draw among the k most likely tokens; 0 draws among all')
    p.add_argument('--top_p', type=real(lambda v: 0 < v <= 1, 'a number in (0, 1]'),
                   default=1.0, help='draw among the fewest most likely tokens whose '
                   'probabilities sum to this (nucleus sampling); 1 draws among all')
    p.add_argument('--temperature', type=real(lambda v: v >= 0, 'a finite number >= 0'),
                   default=1.0, help='below 1 more predictable, above 1 more varied; 0 is '
                   'greedy decoding, the most likely token every time')
    p.add_argument('--num_samples', type=count(1, MAX_SAMPLES), default=1,
                   help=f'samples of the prompt, drawn in one batch (at most {MAX_SAMPLES}); '
                   'the i-th from 0 is the one that --seed SEED+i draws alone')
    p.add_argument('--stop', action='append', default=[], metavar='TEXT',
                   help='end a sample once it has written TEXT (\\n for a newline); may be '
                   'given more than once')
    # torch.Generator.manual_seed takes at most 64 bits
    p.add_argument('--seed', type=count(0, 2 ** 64 - 1), default=0,
                   help='the same seed gives the same text')
    p.add_argument('--dtype', choices=['fp32', 'bf16'], default='fp32',
                   help="the weights' precision: bf16 halves what each token reads")
    p.add_argument('--checkpoint', help='fine-tuned parameters, e.g. '
                   'save/rocstories/best_params.safetensors, sampled from instead of the '
                   'pretrained weights')
    p.add_argument('--model_dir', default='model/',
                   help="pretrained weights, OpenAI's model/ folder or a transformers "
                   'checkpoint, sampled from when no --checkpoint is given; and, with '
                   '--checkpoint too, where the vocabulary is looked for')
    p.add_argument('--encoder_path', help='default: encoder_bpe_40000.json, or vocab.json, '
                   'in --model_dir')
    p.add_argument('--bpe_path', help='default: vocab_40000.bpe, or merges.txt, in --model_dir')
    p.add_argument('--device', choices=['cpu', 'cuda'],
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    if not args.prompt.strip():
        p.error(f'prompt: expected text to continue, got {args.prompt!r}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device is available here; use --device cpu')
    return args


def main(argv=None):
    args = parse_args(argv)
    from text_utils import find_vocabulary
    encoder_path, bpe_path = find_vocabulary(args.model_dir, args.encoder_path, args.bpe_path)
    try:
        check_files(encoder_path, bpe_path, None if args.checkpoint else args.model_dir)
        text_encoder = load_text_encoder(encoder_path, bpe_path)
        model, dims = load_lm(args.checkpoint, args.model_dir, args.device)
        if len(text_encoder.encoder) != dims['n_vocab']:
            raise ValueError(f'{encoder_path} holds {len(text_encoder.encoder)} tokens but '
                             f"the model knows {dims['n_vocab']}: pass the vocabulary it was "
                             'trained with (--encoder_path, --bpe_path)')
        warn_unknown(text_encoder, args.prompt)
        prompt_ids = text_encoder.encode([args.prompt], verbose=False)[0]
        warn_long(prompt_ids, dims['n_ctx'])
        stop = [stop_ids(text_encoder, text) for text in args.stop]
        seeds = [(args.seed + i) % 2 ** 64 for i in range(args.num_samples)]
        model = cast_for_sampling(model, DTYPES[args.dtype])
        samples = sample(model, prompt_ids, args.length, **dims, top_k=args.top_k,
                         temperature=args.temperature, top_p=args.top_p, stop=stop,
                         num_samples=args.num_samples,
                         generator=[torch.Generator().manual_seed(s) for s in seeds])
    except (OSError, ValueError) as err:
        raise SystemExit(f'generate.py: error: {err}')
    for seed, new_ids in zip(seeds, samples):
        if args.num_samples > 1:
            print(f'# --seed {seed}')
        print(f'{args.prompt} {decode(text_encoder.decoder, new_ids)}')


if __name__ == '__main__':
    main()
