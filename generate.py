"""Samples a continuation of a prompt from GPT-1's language model.

    python generate.py "the weather was nice, so we" --length 40 --top_k 10

From OpenAI's pretrained weights in --model_dir (fetched by `python download.py`), or from
parameters fine-tuned by `python train.py ... --submit` with --checkpoint.
"""
import argparse
import json
import math
import numbers
import os

import torch

from model_pytorch import Config, DEFAULT_CONFIG, LMModel, load_openai_pretrained_model, load_params

GET_MODEL = "run `python download.py` to fetch OpenAI's model/ folder"
GET_CHECKPOINT = ('fine-tune one with `python train.py --dataset rocstories --desc rocstories '
                  '--submit` (it writes save/rocstories/best_params.pt), or leave out '
                  "--checkpoint to sample from OpenAI's pretrained model")
CHECKPOINT_META = ('cfg', 'n_vocab', 'n_special', 'n_ctx')


def _missing(path, how):
    return FileNotFoundError(f'{path} not found: {how}')


def load_lm(checkpoint=None, model_dir='model/', device='cpu'):
    """An LMModel returning next-token probabilities, in eval mode on device, and the
    sizes sample() needs: dict(n_vocab, n_special, n_ctx).

    From a checkpoint written by train.py (save_params) when given, else from OpenAI's
    pretrained weights in model_dir.
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
    meta, state = load_params(path)
    absent = [key for key in CHECKPOINT_META if key not in meta]
    if absent:
        raise ValueError(f'{path} lacks the settings {absent}: it was not written by '
                         'train.py --submit')
    dims = {key: meta[key] for key in ('n_vocab', 'n_special', 'n_ctx')}
    model = LMModel(Config(meta['cfg']), vocab=sum(dims.values()), n_ctx=dims['n_ctx'],
                    return_probs=True)
    # The task head scores stories, it plays no part in language modelling.
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith('task_head.')})
    return model, dims


def _from_pretrained(model_dir):
    shapes_path = os.path.join(model_dir, 'params_shapes.json')
    if not os.path.isfile(shapes_path):
        raise _missing(shapes_path, GET_MODEL)
    with open(shapes_path) as f:
        shapes = json.load(f)
    # The release's layout: positions, tokens, then 12 tensors per block.
    (n_ctx, n_embd), n_vocab = shapes[0], shapes[1][0]
    cfg = Config(DEFAULT_CONFIG, n_embd=n_embd, n_layer=(len(shapes) - 2) // 12)
    model = LMModel(cfg, vocab=n_vocab + n_ctx, n_ctx=n_ctx, return_probs=True)
    load_openai_pretrained_model(model, n_ctx=n_ctx, n_special=0, n_embd=n_embd, path=model_dir)
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


def load_text_encoder(encoder_path, bpe_path):
    for path in (encoder_path, bpe_path):
        if not os.path.isfile(path):
            raise _missing(path, GET_MODEL)
    # Imported here: spaCy and ftfy are slow to load and load_lm/sample do not need them.
    from text_utils import TextEncoder
    return TextEncoder(encoder_path, bpe_path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('prompt', help='the text to continue')
    p.add_argument('--length', type=int, default=40, help='number of tokens to sample')
    p.add_argument('--top_k', type=int, default=10,
                   help='draw among the k most likely tokens; 0 draws among all')
    p.add_argument('--temperature', type=float, default=1.0,
                   help='below 1 more predictable, above 1 more varied')
    p.add_argument('--seed', type=int, default=0, help='the same seed gives the same text')
    source = p.add_mutually_exclusive_group()
    source.add_argument('--checkpoint',
                        help='fine-tuned parameters, e.g. save/rocstories/best_params.pt')
    source.add_argument('--model_dir', default='model/',
                        help="OpenAI's pretrained model, used when no --checkpoint is given")
    p.add_argument('--encoder_path', default='model/encoder_bpe_40000.json')
    p.add_argument('--bpe_path', default='model/vocab_40000.bpe')
    p.add_argument('--device', choices=['cpu', 'cuda'],
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('generate.py: no CUDA device here; use --device cpu')
    try:
        check_sampling(args.length, args.top_k, args.temperature)  # before loading 466 MB
        text_encoder = load_text_encoder(args.encoder_path, args.bpe_path)
        model, dims = load_lm(args.checkpoint, args.model_dir, args.device)
        if len(text_encoder.encoder) != dims['n_vocab']:
            raise ValueError(f'{args.encoder_path} holds {len(text_encoder.encoder)} tokens but '
                             f"the model knows {dims['n_vocab']}: pass the vocabulary it was "
                             'trained with (--encoder_path, --bpe_path)')
        prompt_ids = text_encoder.encode([args.prompt], verbose=False)[0]
        new_ids = sample(model, prompt_ids, args.length, **dims, top_k=args.top_k,
                         temperature=args.temperature,
                         generator=torch.Generator().manual_seed(args.seed))
    except (OSError, ValueError) as err:
        raise SystemExit(f'generate.py: {err}')
    print(f'{args.prompt} {decode(text_encoder.decoder, new_ids)}')


if __name__ == '__main__':
    main()
