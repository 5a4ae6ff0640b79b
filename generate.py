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

--length is at most 1024 tokens: each token is one pass of the model over up to n_ctx
(512) tokens, about a second on a small CPU, and beyond n_ctx tokens the model no longer
sees the prompt, so a longer run costs long minutes for text that has drifted off;
generate.sample() itself takes any length.

Exit codes: 0 done; 1 an error, said in one line naming the file; 2 a bad flag.
"""
import argparse
import math
import numbers
import os
import sys

import torch

from download import check_vocabulary_and_weights, vocabulary_paths
from model_pytorch import (Config, LMModel, load_openai_pretrained_model, load_trained_params,
                           pretrained_settings)
from utils import Parser, count, real

GET_MODEL = ("run `python download.py` to fetch OpenAI's model/ folder (or `python download.py "
             "--from hub` for transformers' copy)")
GET_CHECKPOINT = ('fine-tune one with `python train.py --dataset rocstories --desc rocstories '
                  '--submit` (it writes save/rocstories/best_params.safetensors), or leave out '
                  "--checkpoint to sample from OpenAI's pretrained model")
MAX_LENGTH = 1024


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


def check_sampling(length, top_k, temperature):
    if not isinstance(length, numbers.Integral) or length < 0:
        raise ValueError(f'length must be a whole number >= 0, got {length!r}')
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        raise ValueError(f'top_k must be a whole number >= 0 (0 keeps every token), got {top_k!r}')
    if not isinstance(temperature, numbers.Real) or not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f'temperature must be a finite number > 0, got {temperature!r}')


def sample(model, prompt_ids, length, n_vocab, n_special, n_ctx, top_k=0, temperature=1.0,
           generator=None):
    """Samples `length` token ids, one at a time, to follow prompt_ids; returns the new ids.

    Only the n_vocab text tokens are ever drawn. top_k > 0 draws among the k most likely;
    temperature T reweights each probability p to p**(1/T). Past n_ctx tokens the model
    sees the last n_ctx. generator: a CPU torch.Generator, for reproducible draws.
    """
    check_sampling(length, top_k, temperature)
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError('the prompt is empty: the model needs at least one token to continue')
    if not all(0 <= i < n_vocab + n_special for i in ids):
        raise ValueError(f'prompt ids must lie in [0, {n_vocab + n_special}), the token and '
                         'special token ids')
    n_prompt = len(ids)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(length):
            probs = model(_lm_input(ids[-n_ctx:], n_vocab + n_special, device))[0, -1]
            # Special tokens and positions are not text: only the first n_vocab rows count.
            ids.append(_draw(probs[:n_vocab].cpu(), top_k, temperature, generator))
    model.train(was_training)
    return ids[n_prompt:]


def _lm_input(ids, first_position, device):
    """(1, seq, 2): the tokens and their positions, numbered from 0 within the window."""
    tokens = torch.tensor(ids, device=device)
    positions = torch.arange(first_position, first_position + len(ids), device=device)
    return torch.stack([tokens, positions], dim=-1).unsqueeze(0)


def _draw(probs, top_k, temperature, generator):
    weights = probs.double()
    if temperature != 1:
        # p**(1/T) renormalised is softmax(log(p) / T); the log form cannot underflow to
        # all zeros at small T.
        weights = torch.softmax(weights.log() / temperature, dim=-1)
    candidates = torch.arange(len(weights))
    if top_k:
        weights, candidates = weights.topk(min(top_k, len(weights)))
    # multinomial renormalises the kept weights itself
    return candidates[torch.multinomial(weights, 1, generator=generator)].item()


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
    and it and the weights in model_dir (None: none used) well formed, as
    download.check_vocabulary_and_weights checks them. Returns the vocabulary's size."""
    _require_vocabulary(encoder_path, bpe_path)
    return check_vocabulary_and_weights(encoder_path, bpe_path, model_dir)


def _require_vocabulary(*paths):
    for path in paths:
        if not os.path.isfile(path):
            raise _missing(path, GET_MODEL)


def load_text_encoder(encoder_path, bpe_path):
    _require_vocabulary(encoder_path, bpe_path)
    # Imported here: spaCy and ftfy are slow to load and load_lm/sample do not need them.
    from text_utils import TextEncoder
    return TextEncoder(encoder_path, bpe_path)


def warn_unknown(text_encoder, prompt):
    unknown = unknown_pieces(text_encoder, prompt)
    if unknown:
        print(f'generate.py: warning: the vocabulary lacks {", ".join(map(repr, unknown))} '
              f'of the prompt: the model reads each as token 0 '
              f'({text_encoder.decoder.get(0)!r}), not as typed', file=sys.stderr)


def parse_args(argv=None):
    p = Parser(prog='generate.py', description=__doc__.split('\n\n')[0],
               epilog=__doc__.split('\n\n', 2)[2],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('prompt', help='the text to continue')
    p.add_argument('--length', type=count(0, MAX_LENGTH), default=40,
                   help=f'number of tokens to sample, at most {MAX_LENGTH} (see below)')
    p.add_argument('--top_k', type=count(0), default=10,
                   help='draw among the k most likely tokens; 0 draws among all')
    p.add_argument('--temperature', type=real(lambda v: v > 0, 'a finite number > 0'),
                   default=1.0,
                   help='below 1 more predictable, above 1 more varied')
    # torch.Generator.manual_seed takes at most 64 bits
    p.add_argument('--seed', type=count(0, 2 ** 64 - 1), default=0,
                   help='the same seed gives the same text')
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
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device is available here; use --device cpu')
    return args


def main(argv=None):
    args = parse_args(argv)
    found_encoder, found_bpe = vocabulary_paths(args.model_dir)
    encoder_path, bpe_path = args.encoder_path or found_encoder, args.bpe_path or found_bpe
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
        new_ids = sample(model, prompt_ids, args.length, **dims, top_k=args.top_k,
                         temperature=args.temperature,
                         generator=torch.Generator().manual_seed(args.seed))
    except (OSError, ValueError) as err:
        raise SystemExit(f'generate.py: error: {err}')
    print(f'{args.prompt} {decode(text_encoder.decoder, new_ids)}')


if __name__ == '__main__':
    main()
