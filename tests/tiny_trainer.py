"""A tiny model without dropout inside train.Trainer, and random stories encoded as
datasets.encoded gives them, for tests of the training step (imported by the DDP
subprocess too)."""
import numpy as np
import torch

import tasks
import runs
import train
from datasets import Split
from model_pytorch import DoubleHeadModel
from utils import Ragged

# token ids: 0..49 words, then _start_, _delimiter_, _classify_; positions after them
SPECIALS = tasks.Specials.after(50)


def tiny_stories(n, seed=0):
    """n stories of 2 to 8 tokens with two endings of 1 to 5, and labels."""
    rng = np.random.default_rng(seed)
    fields = tuple(Ragged.from_lists([list(rng.integers(0, 50, rng.integers(lo, hi)))
                                      for _ in range(n)]) for lo, hi in ((2, 9), (1, 6), (1, 6)))
    return Split(fields, rng.integers(0, 2, n), None)


def make_trainer(n_ctx=40, update_batch=8, n_batch=4, reference=False, lm_coef=0.5, opt='sgd',
                 seed=0):
    """A Trainer on ROCStories' task with a 2-layer, 16-wide model without dropout, with
    plain SGD or OpenAIAdam (learning rate 1e-3 after its first update)."""
    args = train.parse_args(['--n_batch', str(n_batch), '--update_batch', str(update_batch),
                             '--device', 'cpu', '--lm_coef', str(lm_coef),
                             '--n_embd', '16', '--n_head', '2', '--n_layer', '2',
                             '--embd_pdrop', '0', '--attn_pdrop', '0', '--resid_pdrop', '0',
                             '--clf_pdrop', '0', '--lr', '1e-3', '--lr_schedule',
                             'warmup_constant', '--lr_warmup', '0.001']
                            + (['--reference'] if reference else []))
    task = tasks.TASKS['rocstories']
    torch.manual_seed(seed)
    model = DoubleHeadModel(runs.model_config(args, args.clf_pdrop), SPECIALS.classify, task.head,
                            vocab=53 + n_ctx, n_ctx=n_ctx)
    inputs = tasks.Inputs(task, SPECIALS, 53, args.n_ctx)
    trainer = train.Trainer(runs.UpdateSettings.from_flags(args, args.lr_warmup),
                            runs.Distributed('cpu'), model, task, inputs, 10, args.lm_coef,
                            args.reference)
    if opt == 'sgd':
        trainer.opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return trainer
