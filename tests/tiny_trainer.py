"""A tiny model without dropout inside train.Trainer, and random stories laid out by
transform_roc, for tests of the training step (imported by the DDP subprocess too)."""
import numpy as np
import torch

import train

# token ids: 0..49 words, then _start_, _delimiter_, _classify_; positions after them
START, DELIMITER, CLF = 50, 51, 52


def tiny_stories(n, n_ctx, seed=0):
    """n stories of 2 to 8 tokens with endings of 1 to 5, each part cut to OpenAI's
    max_len for n_ctx, padded to n_ctx; and labels."""
    rng = np.random.default_rng(seed)
    X1 = [list(rng.integers(0, 50, rng.integers(2, 9))) for _ in range(n)]
    X2 = [list(rng.integers(0, 50, rng.integers(1, 6))) for _ in range(n)]
    X3 = [list(rng.integers(0, 50, rng.integers(1, 6))) for _ in range(n)]
    X, M = train.transform_roc(X1, X2, X3, {'_start_': START, '_delimiter_': DELIMITER},
                               n_ctx, n_ctx // 2 - 2, CLF, CLF + 1)
    return X, M, rng.integers(0, 2, n)


def make_trainer(n_ctx, update_batch=8, reference=False, lm_coef=0.5, opt='sgd', seed=0):
    """A Trainer on a 2-layer, 16-wide model without dropout (4 stories per forward pass),
    with plain SGD or OpenAIAdam (learning rate 1e-3 after its first update)."""
    args = train.parse_args(['--n_batch', '4', '--update_batch', str(update_batch),
                             '--device', 'cpu', '--lm_coef', str(lm_coef),
                             '--n_embd', '16', '--n_head', '2', '--n_layer', '2',
                             '--embd_pdrop', '0', '--attn_pdrop', '0', '--resid_pdrop', '0',
                             '--clf_pdrop', '0', '--lr', '1e-3', '--lr_schedule',
                             'warmup_constant', '--lr_warmup', '0.001']
                            + (['--reference'] if reference else []))
    torch.manual_seed(seed)
    model = train.DoubleHeadModel(train.model_config(args), CLF, 'multiple_choice',
                                  vocab=CLF + 1 + n_ctx, n_ctx=n_ctx)
    trainer = train.Trainer(args, train.Distributed('cpu'), model, n_updates_total=10)
    if opt == 'sgd':
        trainer.opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return trainer
