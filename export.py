"""Writes parameters fine-tuned by train.py as a checkpoint of transformers' OpenAIGPT
models, for the tools that read those.

    python export.py --checkpoint save/rocstories/best_params.safetensors --out gpt-roc \\
        [--encoder_path model/encoder_bpe_40000.json --bpe_path model/vocab_40000.bpe]

The folder holds model.safetensors and config.json, and, when the vocabulary is given,
its copies under the Hub's names, vocab.json and merges.txt. transformers'
OpenAIGPTDoubleHeadsModel, OpenAIGPTLMHeadModel and OpenAIGPTModel load it with
from_pretrained(folder); load_openai_pretrained_model takes it as pretrained weights.
An --out folder that holds files is refused, or, with --overwrite, replaced whole: the
new folder is written beside it and takes its name once complete, so that no file of an
earlier export (its tokenizer, say) stays beside the new weights.

- tokens_embed: the n_vocab BPE tokens, then the n_special special tokens (train.py's
  _start_, _delimiter_, _classify_), so config.json's vocab_size is n_vocab + n_special.
  config.json also records n_special, which transformers ignores and
  load_openai_pretrained_model reads when the folder has no vocab.json.
- positions_embed: the n_ctx positions the model was fine-tuned with (n_positions).
- A multiple-choice task head becomes multiple_choice_head.summary. This model pools
  each choice at its first classify token: give transformers that position as
  mc_token_ids. The other task heads (similarity, classification) have no counterpart
  in transformers' OpenAIGPT models: the body and LM head are written, and one line says
  that the task head was not.
"""
import argparse
import json
import os
import secrets
import shutil
import sys

from model_pytorch import (HF_CONFIG, HF_MERGES, HF_VOCAB, HF_WEIGHTS, block_param_names,
                           load_trained_params, transformers_name)
from text_utils import check_vocabulary
from utils import Parser, atomic_write, fsync_dir


def transformers_state(state, meta):
    """Our state_dict as transformers names it: the body under 'transformer.', and the
    multiple-choice head when the model has one. transformers ties its LM head to
    tokens_embed as we do, so the LM head is not written."""
    n_tokens = meta['n_vocab'] + meta['n_special']
    we = state['transformer.embed.weight']
    if we.size(0) != n_tokens + meta['n_ctx']:
        raise ValueError(f'the embedding has {we.size(0)} rows, the settings say '
                         f"{meta['n_vocab']} tokens + {meta['n_special']} special + "
                         f"{meta['n_ctx']} positions")
    # safetensors refuses tensors that share memory: each slice gets its own copy
    tensors = {'transformer.tokens_embed.weight': we[:n_tokens].clone(),
               'transformer.positions_embed.weight': we[n_tokens:].clone()}
    for name in block_param_names(meta['cfg']['n_layer']):
        tensors['transformer.' + transformers_name(name)] = state['transformer.' + name]
    if meta.get('task_head_type') == 'multiple_choice':
        tensors['multiple_choice_head.summary.weight'] = state['task_head.linear.weight']
        tensors['multiple_choice_head.summary.bias'] = state['task_head.linear.bias']
    return tensors


def transformers_config(meta, multiple_choice):
    """config.json for transformers' OpenAIGPTConfig."""
    cfg = meta['cfg']
    return dict(
        architectures=['OpenAIGPTDoubleHeadsModel' if multiple_choice else 'OpenAIGPTLMHeadModel'],
        model_type='openai-gpt', vocab_size=meta['n_vocab'] + meta['n_special'],
        n_special=meta['n_special'], n_positions=meta['n_ctx'], n_embd=cfg['n_embd'],
        n_layer=cfg['n_layer'], n_head=cfg['n_head'], afn=cfg['afn'],
        layer_norm_epsilon=1e-5,  # model_pytorch.LayerNorm's
        resid_pdrop=cfg['resid_pdrop'], embd_pdrop=cfg['embd_pdrop'],
        attn_pdrop=cfg['attn_pdrop'], initializer_range=0.02, tie_word_embeddings=True,
        # The multiple-choice head: one logit per choice, a linear layer on the hidden
        # state at mc_token_ids after dropout clf_pdrop, as MultipleChoiceHead.
        summary_type='cls_index', summary_use_proj=True, summary_proj_to_labels=True,
        summary_activation=None, summary_first_dropout=cfg['clf_pdrop'],
        id2label={'0': 'LABEL_0'}, label2id={'LABEL_0': 0})


def check_out(out, overwrite=False):
    """Raises unless out can take the export: a folder that holds files only with
    overwrite, never a file."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f'--out {out} is a file, not a folder')
    held = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if held and not overwrite:
        raise ValueError(f'--out {out} already holds files ({", ".join(held)}): choose '
                             'another folder, or add --overwrite to replace it whole')


def check_apart(out, *inputs):
    """Raises where out holds one of the inputs (paths, None for none), as a run's
    save/{desc}/ holds its checkpoint: replacing out would delete it."""
    real_out = os.path.realpath(out).rstrip(os.sep) + os.sep
    for path in filter(None, inputs):
        if os.path.realpath(path).startswith(real_out):
            raise ValueError(f'--out {out} holds {path}, which the export reads (replacing the '
                             'folder would delete it): choose a folder apart from its inputs')


def write_folder(out, files, overwrite=False):
    """Writes files ({name: bytes}) as the folder out, whole or not at all, and returns
    their paths there. They are written into a new folder beside out and reach the disk;
    only then does it take out's name, an earlier folder there (one that holds files only
    with overwrite) being moved aside and deleted. An error leaves out as it was; a crash
    leaves the old folder or the new one, never a mix (between the two renames, out is
    absent and the old folder lies beside it, its name ending in .tmp.old)."""
    check_out(out, overwrite)
    parent, base = os.path.split(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    # os.mkdir, not mkdtemp, whose 0700 would hide the export from others
    tmp = os.path.join(parent, f'.{base}.{secrets.token_hex(4)}.tmp')
    os.mkdir(tmp)
    try:
        for name, data in files.items():
            with atomic_write(os.path.join(tmp, name)) as f:
                f.write(data)
        _swap_in(tmp, os.path.join(parent, base))
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            err.filename = out  # not the temporary folder, which is gone
        raise
    return [os.path.join(out, name) for name in files]


def _swap_in(new, out):
    """Renames the folder new to out, an earlier out first moved aside (a rename cannot
    replace a folder that holds files) and deleted once new is in place."""
    old = new + '.old' if os.path.isdir(out) else None
    if old:
        os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        if old:
            os.rename(old, out)  # put the earlier export back
        raise
    fsync_dir(os.path.dirname(out))
    if old:
        shutil.rmtree(old)


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _tokenizer_files(encoder_path, bpe_path, n_vocab):
    """OpenAI's vocabulary, checked as train.py checks it and against the model, as the
    Hub names it; the Hub's merges.txt is vocab_40000.bpe, version header line included."""
    n_tokens = check_vocabulary(encoder_path, bpe_path)
    if n_tokens != n_vocab:
        raise ValueError(f'{encoder_path} holds {n_tokens} tokens but the model was trained '
                         f'with {n_vocab}: pass the vocabulary train.py used')
    return {HF_VOCAB: _read(encoder_path), HF_MERGES: _read(bpe_path)}


def export(checkpoint, out, encoder_path=None, bpe_path=None, overwrite=False):
    """Writes the parameters in `checkpoint`, from train.py --submit, as a transformers
    checkpoint: the folder out, written whole (write_folder); returns the paths written.
    With encoder_path and bpe_path (the vocabulary train.py used), their copies go
    alongside as vocab.json and merges.txt. An out that holds files is refused
    (ValueError) unless overwrite, before anything is read."""
    if (encoder_path is None) != (bpe_path is None):
        raise ValueError('give both encoder_path and bpe_path, or neither')
    check_apart(out, checkpoint, encoder_path, bpe_path)
    check_out(out, overwrite)
    meta, state = load_trained_params(checkpoint)
    head = meta.get('task_head_type')
    multiple_choice = head == 'multiple_choice'
    if head is not None and not multiple_choice:
        print(f"export.py: task head {head!r} not exported, since transformers' OpenAIGPT "
              'models have a multiple-choice head only; the body and the LM head are exported')
    return write_folder(out, model_files(meta, state, encoder_path, bpe_path), overwrite)


def model_files(meta, state, encoder_path=None, bpe_path=None):
    """The files ({name: bytes}) of a transformers checkpoint of state, whose settings
    are meta (as train.py --submit and pretrain.py record them), with the vocabulary's
    copies when encoder_path and bpe_path are given."""
    files = {}
    if encoder_path is not None:
        files.update(_tokenizer_files(encoder_path, bpe_path, meta['n_vocab']))
    from safetensors.torch import save  # imported here, as in model_pytorch
    files[HF_WEIGHTS[0]] = save(transformers_state(state, meta), metadata={'format': 'pt'})
    multiple_choice = meta.get('task_head_type') == 'multiple_choice'
    files[HF_CONFIG] = json.dumps(transformers_config(meta, multiple_choice), indent=2).encode()
    return files


def main(argv=None):
    p = Parser(prog='export.py', description=__doc__.split('\n\n')[0],
               epilog=__doc__.split('\n\n', 2)[2],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--checkpoint', required=True,
                   help='parameters from train.py --submit, e.g. '
                        'save/rocstories/best_params.safetensors')
    p.add_argument('--out', required=True, help='the folder to write: a new or empty one')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an --out folder that holds files, every one of them')
    p.add_argument('--encoder_path', help="the vocabulary train.py used, e.g. "
                   "model/encoder_bpe_40000.json, copied as vocab.json")
    p.add_argument('--bpe_path', help='its BPE merges, e.g. model/vocab_40000.bpe, copied as '
                   'merges.txt')
    args = p.parse_args(argv)
    if (args.encoder_path is None) != (args.bpe_path is None):
        p.error('--encoder_path and --bpe_path go together: give both (the vocabulary '
                'train.py used) or neither')
    try:
        written = export(args.checkpoint, args.out, args.encoder_path, args.bpe_path,
                         args.overwrite)
    except (OSError, ValueError) as err:
        sys.exit(f'export.py: error: {err}')
    print(f'wrote {", ".join(written)}')


if __name__ == '__main__':
    main()
