"""Fine-tunes GPT-1 on a task of the paper, as OpenAI's train.py does for ROCStories.

    python train.py --dataset rocstories --desc rocstories --submit --analysis --data_dir data/

Runs on one device (CUDA when present, else the CPU) or on several through torchrun, with
--update_batch examples per update (32, the paper's) on any number of devices.
Checkpoints are written atomically and `--resume` continues a run bit for bit.

Exit codes: 0 finished; 1 an error, said in one line; 2 a bad flag; 75 interrupted by
SIGTERM or Ctrl-C (after a checkpoint once training has begun: add --resume to go on).
"""
import argparse
import dataclasses
import math
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

import datasets
import runs
import tasks
from checkpoints import Progress, RunError, settings
from download import DownloadError, download_openai_model
from model_pytorch import (DoubleHeadModel, check_weights_files, load_openai_pretrained_model,
                           load_params, pretrained_settings, save_params, weights_layout)
from text_utils import check_vocabulary, find_vocabulary, vocabulary_differs, write_char_vocab
from utils import (NON_NEGATIVE, PROBABILITY, DefaultsShown, Parser, columns, count, file_digest,
                   real)

# OpenAI logs at these updates of the first epoch, and at each epoch's end.
OPENAI_LOG_UPDATES = (1000, 2000, 4000, 8000, 16000, 32000)
CSV_FLAGS = ('train_file', 'valid_file', 'test_file', 'text_columns', 'label_column',
             'choice_columns')


def parse_args(argv=None):
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def parser():
    p = Parser(description=__doc__.split('\n\n')[0], formatter_class=DefaultsShown)
    runs.add_training_flags(p)
    # OpenAI's flags and defaults, and the paper's fine-tuning settings
    p.set_defaults(n_layer=12, n_embd=768, n_head=12, n_ctx=512, lr=6.25e-5,
                   lr_schedule='warmup_linear', n_iter=3, n_batch_eval=32)
    runs.default_note(p, desc='--dataset', update_batch="32, the paper's, or --n_batch x "
                      '--n_gpu')
    p.add_argument('--dataset', type=str, default='rocstories',
                   choices=sorted(tasks.TASKS) + ['csv'],
                   help='a task of the paper, or csv: your own files (below)')
    p.add_argument('--data_dir', type=str, default='data/', help="the task's data files")
    p.add_argument('--submission_dir', type=str, default='submission/',
                   help='{desc}/: the test predictions of --submit')
    p.add_argument('--submit', action='store_true',
                   help='keep the parameters of the best validation score and write their '
                        'test predictions')
    p.add_argument('--analysis', action='store_true',
                   help="at the end, print OpenAI's lines of the best validation score (and, "
                        'with --submit, the test score where its labels are public) and '
                        'draw the learning curves')
    p.add_argument('--lr_warmup', type=real(lambda v: 0 < v <= 1, 'a fraction in (0, 1]'),
                   default=0.002,
                   help='the fraction of the updates over which the learning rate rises from 0')
    p.add_argument('--clf_pdrop', type=PROBABILITY, default=0.1,
                   help="dropout before the task's classifier")
    p.add_argument('--opt', type=str, default='adam', choices=['adam'],
                   help="the optimizer: OpenAI's Adam")
    p.add_argument('--n_transfer', type=count(-1), default=12,
                   help='pretrained blocks to load; -1 trains from scratch with no weights')
    p.add_argument('--lm_coef', type=NON_NEGATIVE, default=0.5,
                   help="the language model's loss, times this, is added to the task's")
    p.add_argument('--n_valid', type=count(1), default=374,
                   help='ROCStories: stories split off for validation; every task: training '
                        'examples evaluated at each log point')
    p.add_argument('--n_gpu', type=count(1), default=None,
                   help="OpenAI's: n_batch x n_gpu examples per update (its runs: 8 x 4); "
                        'here it sets --update_batch, on however many devices are used')
    # this port's additions
    p.add_argument('--model_dir', type=str, default='model/',
                   help="OpenAI's model/ folder, or a transformers checkpoint of OpenAIGPT")
    p.add_argument('--download', action='store_true',
                   help="fetch OpenAI's model/ folder into --model_dir first")
    p.add_argument('--reference', action='store_true',
                   help='turn the exact fast paths off (padding kept, full LM head)')
    runs.add_run_flags(p, saves='the best parameters of --submit')
    p.add_argument('--smoke', action='store_true',
                   help='run the whole pipeline on a tiny generated dataset and model')
    own = p.add_argument_group('--dataset csv: your own data, CSV or TSV (by extension) with a '
                               'header row')
    own.add_argument('--train_file', help='training examples, labelled')
    own.add_argument('--valid_file', help='validation examples, labelled')
    own.add_argument('--test_file', help='examples to predict (--submit writes predictions.tsv)')
    own.add_argument('--text_columns', type=columns,
                     help='the text column, or two joined as a pair (premise,hypothesis); with '
                          '--choice_columns, the context')
    own.add_argument('--label_column',
                     help='the class, or the right choice (its name or 0-based place)')
    own.add_argument('--choice_columns', type=columns, default=(),
                     help='multiple choice: the answer columns, e.g. ending1,ending2')
    return p


def check_args(p, args):
    """What the flags must agree on, checked before any work."""
    args.desc = args.desc or args.dataset
    args.encoder_path, args.bpe_path = find_vocabulary(args.model_dir, args.encoder_path,
                                                       args.bpe_path)
    if args.n_gpu is not None:
        implied = args.n_batch * args.n_gpu
        if args.update_batch not in (None, implied):
            p.error(f'--update_batch {args.update_batch} contradicts --n_batch {args.n_batch} x '
                    f'--n_gpu {args.n_gpu} = {implied}; give one or the other')
        args.update_batch = implied
    args.update_batch = args.update_batch or 32
    if args.dataset == 'csv':
        need = ('train_file', 'valid_file', 'text_columns', 'label_column')
        missing = [f'--{name}' for name in need if not getattr(args, name)]
        if missing:
            p.error(f'--dataset csv needs {", ".join(missing)}')
    else:
        given = [f'--{name}' for name in CSV_FLAGS if getattr(args, name)]
        if given:
            p.error(f'{", ".join(given)}: only --dataset csv reads them, not --dataset '
                    f'{args.dataset}')
    runs.check_run_flags(p, args)


class Trainer(runs.Updater):
    """The updater of a task (runs.Updater): its inputs and OpenAI's loss, the task's plus
    lm_coef x the LM's; reference turns the exact fast paths off."""

    def __init__(self, settings, dist, model, task, inputs, n_updates_total, lm_coef,
                 reference=False):
        super().__init__(settings, dist, model, n_updates_total)
        self.task, self.inputs, self.lm_coef = task, inputs, lm_coef
        self.fast = not reference
        self.loss = tasks.loss_compute(task, lm_coef)

    def batch(self, split, rows):
        """Device tensors of the examples rows: inputs, mask, labels (None for a split
        without), and the number of real tokens, read here on the host (fast path) to
        spare the device a sync. The reference path pads every batch to n_ctx, the fast
        one to its longest sequence, rounded up (see tasks.Inputs)."""
        n_ctx = self.module.transformer.n_ctx
        x, m = self.inputs(split, rows, length=None if self.fast else n_ctx, max_length=n_ctx)
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)
        y = None if split.labels is None else to(split.labels[rows])
        return to(x), to(m), y, (int(m.sum()) if self.fast else None)

    def update(self, split, rows, n_update):
        """One optimizer update from this process's share rows of the update's examples;
        n_update numbers it for the non-finite check."""
        return self.accumulate(rows, lambda part: self.batch(split, part), n_update)

    def forward_loss(self, x, m, y, n_real):
        if self.fast:  # no LM head where its loss does not count (TF: lm_coef 0)
            # the LM loss computed with its head (loss.LinearCrossEntropy), but under fp16
            lm = 'rows' if self.amp_dtype != torch.float16 else True
            lm_logits, clf_logits = self.model(x, m, n_real, lm=self.lm_coef > 0 and lm)
        else:
            lm_logits, clf_logits = self.model(x)
        with self.full_precision():
            if isinstance(lm_logits, torch.Tensor):
                lm_logits = lm_logits.float()
            return self.loss(x, y, m, clf_logits.float(), lm_logits,
                             lm_rows='targets' if self.fast else 'all')

    def logits(self, split, rows=None):
        """Classifier outputs for the examples rows (all by default), each process
        evaluating its share."""
        rows = np.arange(len(split.fields[0])) if rows is None else rows

        def classify(part):
            x, m, _, n_real = self.batch(split._replace(labels=None), part)
            return self.module(x, m if self.fast else None, n_real, lm=False)[1].float().cpu()
        return torch.cat([o for shares in self.evaluate(rows, classify) for o in shares])

    def evaluate_split(self, split, n=None):
        """(mean classifier loss, metrics) on the first n examples of split (all by
        default): OpenAI's cost is the loss per example."""
        rows = np.arange(len(split.labels))[:n]
        logits, labels = self.logits(split, rows), split.labels[rows]
        cost = self.loss.clf_criterion(logits, torch.from_numpy(labels)).mean().item()
        group = None if split.group is None else np.asarray(split.group)[rows]
        return cost, tasks.score(self.task, tasks.predict(self.task, logits), labels, group)

def check_model_files(args):
    """Names, at once, everything this run needs that is missing: the task's data, the
    vocabulary, and the weights (OpenAI's shards or a transformers checkpoint) unless
    training from scratch; and where each comes from."""
    missing, sources = missing_data(args), []
    if missing:
        sources.append(tasks.TASKS[args.dataset].source if args.dataset != 'csv'
                       else 'give files that exist')
    vocabulary = [p for p in (args.encoder_path, args.bpe_path) if not os.path.isfile(p)]
    if vocabulary:
        missing.append(f'the vocabulary (--encoder_path, --bpe_path): {", ".join(vocabulary)}')
    layout, weights = (None, []) if args.n_transfer == -1 else weights_layout(args.model_dir)
    if weights:
        also = '' if layout else (' (or a transformers checkpoint there: config.json and '
                                  'model.safetensors, `python download.py --from hub`)')
        missing.append(f'the weights (--model_dir): {", ".join(weights)}{also}')
    if vocabulary or weights:
        sources.append("OpenAI's pretrained model files are the model/ folder of "
                       'https://github.com/openai/finetune-transformer-lm: `python download.py` '
                       f'(or --download) fetches them into --model_dir {args.model_dir}'
                       + (', or --n_transfer -1 trains from scratch without the weights'
                          if weights else ''))
    if missing:
        raise RunError(f"missing: {'; '.join(missing)}. {'. '.join(sources)}.")


def missing_data(args):
    """The task's data that is not there, each said with its flag: the csv flags' files,
    or --data_dir (ROCStories': its CSVs, the test one for --submit; other tasks' files
    are looked for as they are read)."""
    if args.dataset == 'csv':
        files = [(flag, getattr(args, flag)) for flag in ('train_file', 'valid_file', 'test_file')]
        return [f'--{flag} {path}' for flag, path in files if path and not os.path.isfile(path)]
    if not os.path.isdir(args.data_dir):
        return [f'the data: --data_dir {args.data_dir} is not a folder']
    if args.dataset != 'rocstories':
        return []
    needed = (datasets.VAL_NAME,) + ((datasets.TEST_NAME,) if args.submit else ())
    absent = [name for name in needed if not os.path.isfile(os.path.join(args.data_dir, name))]
    return [f'the data in --data_dir {args.data_dir}: {", ".join(absent)}'] if absent else []


def check_inputs(args, main):
    """Before any work: the files this run needs, the weights against the flags, and the
    vocabulary (another than OpenAI's is allowed, with a warning the first process, main,
    prints). Returns the vocabulary's size."""
    check_model_files(args)
    model_dir = None if args.n_transfer == -1 else args.model_dir
    try:  # the vocabulary and params_shapes.json as generate.py and zeroshot.py check them
        n_vocab = check_vocabulary(args.encoder_path, args.bpe_path)
        if model_dir is not None:
            check_weights_files(model_dir)
    except (OSError, ValueError) as err:
        raise RunError(err) from None
    differs = vocabulary_differs(args.encoder_path, args.bpe_path)
    if differs and main:
        print(f'train.py: warning: {differs}', file=sys.stderr)
    if args.n_transfer == -1:
        return n_vocab
    try:
        cfg, n_pretrained_vocab, n_positions = pretrained_settings(args.model_dir)
    except (OSError, ValueError, KeyError) as err:
        raise RunError(f'the weights in {args.model_dir} cannot be read: {err}') from None
    weights = f'the weights in {args.model_dir}'
    wrong = [f'--n_embd {args.n_embd}: {weights} are {cfg.n_embd} wide'
             ] if args.n_embd != cfg.n_embd else []
    if args.n_ctx > n_positions:
        wrong.append(f'--n_ctx {args.n_ctx}: {weights} have {n_positions} positions')
    if min(args.n_transfer, args.n_layer) > cfg.n_layer:
        # the smaller of the two decides how many blocks are loaded: name that one
        flag = ('--n_layer', args.n_layer) if args.n_layer < args.n_transfer else (
            '--n_transfer', args.n_transfer)
        wrong.append(f'{flag[0]} {flag[1]}: {weights} hold {cfg.n_layer} blocks')
    if n_vocab != n_pretrained_vocab:
        wrong.append(f'{args.encoder_path} holds {n_vocab} tokens, {weights} embed '
                     f'{n_pretrained_vocab}: give the vocabulary they were trained with')
    if wrong:
        raise RunError('; '.join(wrong) + ' (or train from scratch with --n_transfer -1)')
    return n_vocab


def load_task(args, dist):
    """The task's splits, encoded and with labels as arrays, and the digest of their
    texts (a checkpoint must agree with it). Test files are needed only with --submit."""
    try:
        if args.dataset == 'csv':
            task = tasks.csv_task(args.train_file, args.valid_file, args.test_file,
                                  args.text_columns, args.label_column, args.choice_columns)
        else:
            task = tasks.TASKS[args.dataset]
            if not os.path.isdir(args.data_dir):
                raise RunError(f'--data_dir {args.data_dir} is not a folder. {task.source}')
        splits = tasks.load(task, args.data_dir, args.n_valid, args.submit)
    except tasks.FlagError as err:
        Parser().error(str(err))  # exits 2, as a bad flag does in parse_args
    except (OSError, ValueError) as err:
        raise RunError(err) from None
    digest = datasets.texts_digest(splits)
    data = datasets.encoded(args.dataset, splits, args.encoder_path, args.bpe_path,
                            cache_dir=args.cache_dir, verbose=dist.main, digest=digest)
    data = {name: split._replace(labels=tasks.label_array(task, split.labels))
            for name, split in data.items()}
    return task, data, digest


def build_model(args, task, data, n_vocab):
    """The model, its weights loaded as OpenAI's train.py loads them, its inputs, and the
    settings that rebuild it."""
    specials, n_special = tasks.Specials.after(n_vocab), 3
    inputs = tasks.Inputs(task, specials, n_vocab + n_special, args.n_ctx)
    n_ctx = inputs.longest(data.values())
    cfg = runs.model_config(args, args.clf_pdrop)
    model = DoubleHeadModel(cfg, specials.classify, task.head, vocab=n_vocab + n_special + n_ctx,
                            n_ctx=n_ctx)
    try:
        load_openai_pretrained_model(model, n_ctx=n_ctx, n_special=n_special,
                                     n_transfer=args.n_transfer, n_embd=args.n_embd,
                                     path=args.model_dir)
    except (OSError, ValueError) as err:
        raise RunError(err) from None
    meta = dict(cfg=dict(cfg), n_vocab=n_vocab, n_special=n_special, n_ctx=n_ctx,
                clf_token=specials.classify, task_head_type=task.head, dataset=args.dataset)
    return model, inputs, meta


@dataclasses.dataclass
class FineTuningProgress(Progress):
    """Progress, and where in its epochs a fine-tuning run is."""
    n_epochs: int = 0
    batch: int = 0            # updates done in the current epoch
    order: object = None      # the current epoch's order of training examples (a tensor)
    best_score: float = -math.inf

    def epoch_order(self, n):
        """This epoch's order, drawn as OpenAI's shuffle draws it from numpy's generator."""
        if self.order is None:
            self.order = torch.from_numpy(np.random.permutation(n))
        return self.order.numpy()

    def end_epoch(self):
        self.n_epochs, self.batch, self.order = self.n_epochs + 1, 0, None


class Run(runs.Run):
    """A fine-tuning run (runs.Run): OpenAI's loop and log of the task's metrics, the best
    parameters with --submit, and the submission."""

    Progress = FineTuningProgress

    def __init__(self, args, dist, trainer, data, folder, settings, meta):
        super().__init__(args, dist, trainer, folder, settings, meta)
        self.data = data

    def start(self):
        super().start()
        if self.dist.main and self.args.submit and not self.args.resume:
            save_params(self.folder.best, self.trainer.module, **self.meta)

    def fit(self, stop_request):
        """OpenAI's loop: n_iter epochs of shuffled updates, logged at its log points and
        at each epoch's end."""
        args, trainer, progress = self.args, self.trainer, self.progress
        train = self.data['train']
        n_batches = len(train.labels) // args.update_batch
        while progress.n_epochs < args.n_iter:
            order = progress.epoch_order(len(train.labels))
            for b in tqdm(range(progress.batch, n_batches), initial=progress.batch,
                          total=n_batches, ncols=80, leave=False, disable=not self.dist.main,
                          desc=f'epoch {progress.n_epochs + 1}/{args.n_iter}'):
                rows = order[b * args.update_batch:(b + 1) * args.update_batch]
                share = rows[self.dist.rank * trainer.per_device:][:trainer.per_device]
                trainer.update(train, share, progress.n_updates + 1)
                progress.n_updates, progress.batch = progress.n_updates + 1, b + 1
                self.after_update(stop_request, save=self.save_due(progress.n_updates),
                                  log=(progress.n_epochs == 0
                                       and progress.n_updates in OPENAI_LOG_UPDATES),
                                  sync=b == n_batches - 1)
            progress.end_epoch()
            self.log()
            self.checkpoint()

    def log(self):
        """OpenAI's log(): cost and metrics on n_valid training examples and on each
        validation split, logged and printed; with --submit the parameters are kept when
        the first validation score beats the best so far (a tie keeps the earlier ones,
        as OpenAI's `>`)."""
        task, progress = self.trainer.task, self.progress
        results = {'tr': self.trainer.evaluate_split(self.data['train'], self.args.n_valid)}
        for prefix, split in zip(tasks.valid_prefixes(task), task.valid):
            results[prefix] = self.trainer.evaluate_split(self.data[split])
        if not self.dist.main:
            return
        record = dict(n_epochs=progress.n_epochs, n_updates=progress.n_updates)
        record.update({f'{prefix}_cost': cost for prefix, (cost, _) in results.items()})
        record.update({f'{prefix}_{metric}': value for prefix, (_, metrics) in results.items()
                       for metric, value in metrics.items()})
        self.record(**record)
        tqdm.write(tasks.log_line(task, record))
        score = record[f'va_{task.metrics[0]}']
        if self.args.submit and score > progress.best_score:
            progress.best_score = score
            save_params(self.folder.best, self.trainer.module, **self.meta)

    def finish(self):
        """With --submit the test predictions; with --analysis OpenAI's lines."""
        test_scores = self.submit() if self.args.submit else {}
        if self.args.analysis and self.dist.main:
            tasks.report(self.trainer.task, self.folder.log, test_scores, self.folder.curves)

    def submit(self):
        """OpenAI's --submit: the best parameters predict every test split; a file of
        predictions per split, and the score where the test labels are public."""
        task, dist, trainer = self.trainer.task, self.dist, self.trainer
        if dist.main:
            trainer.module.load_state_dict(load_params(self.folder.best,
                                                       map_location=trainer.device)[1])
        for p in trainer.module.state_dict().values():
            dist.broadcast(p)
        test_scores = {}
        for name in task.submission:
            split = self.data[name]
            preds = tasks.predict(task, trainer.logits(split))
            if not dist.main:
                continue
            tasks.write_predictions(task, name, split, preds, self.folder.submission_dir)
            if split.labels is not None:
                test_scores[name] = tasks.score(task, preds, split.labels, split.group)
        if dist.main and test_scores:
            self.record(**{f'te_{metric}' if name == 'test' else f'te_{name}_{metric}': value
                           for name, metrics in test_scores.items()
                           for metric, value in metrics.items()})
        return test_scores


def train(args):
    return runs.train(args, prepare)


def prepare(args, dist, folder):
    """The run, made ready on all the checks that can come before training: the inputs,
    the data, the weights against the flags, and the number of updates."""
    runs.seed_all(args.seed)
    if args.download and dist.main:
        try:
            download_openai_model(args.model_dir)
        except (DownloadError, ValueError) as err:
            raise RunError(f'--download failed: {err}') from None
    n_vocab = check_inputs(args, dist.main)
    task, data, data_digest = load_task(args, dist)
    model, inputs, meta = build_model(args, task, data, n_vocab)
    model.to(dist.device)
    # dropout masks differ per rank; data order and weights (numpy, model init) do not
    torch.manual_seed(args.seed + dist.rank)
    n_train = len(data['train'].labels)
    n_updates_total = count_updates(args, n_train, dist.main)
    trainer = Trainer(runs.UpdateSettings.from_flags(args, args.lr_warmup), dist, model, task,
                      inputs, n_updates_total, args.lm_coef, args.reference)
    run_settings = settings(args, dist.world, dict(
        data=data_digest, n_ctx=meta['n_ctx'], n_vocab=meta['n_vocab'],
        vocabulary=[file_digest(args.encoder_path), file_digest(args.bpe_path)]))
    if dist.main:
        print(f'{n_train} training examples, n_ctx {meta["n_ctx"]}; effective batch '
              f'{args.update_batch} = {args.n_batch} per forward x {trainer.accum} '
              f'accumulation step(s) x {dist.world} device(s); {n_updates_total} updates '
              f'on {dist.device}{"" if args.amp == "none" else " with " + args.amp + " autocast"}')
    return Run(args, dist, trainer, data, folder, run_settings, meta)


def count_updates(args, n_train, main):
    """OpenAI's number of updates, (n_train // update_batch) x n_iter. Refused where none
    would train: no update, or none with a learning rate above 0 (update t has --lr x
    schedule((t - 1) / total), as in OpenAIAdam: the warmup starts from 0). A warning
    where the warmup takes half of them or more."""
    total = (n_train // args.update_batch) * args.n_iter
    if total == 0:
        raise RunError(f'{n_train} training examples make no update of --update_batch '
                       f'{args.update_batch}: lower --update_batch or --n_valid')
    updates = (f'{total} update(s) ({n_train} training examples // --update_batch '
               f'{args.update_batch} x --n_iter {args.n_iter})')
    runs.check_schedule('train.py', updates, total, args.lr_schedule, args.lr_warmup,
                        ('--lr_warmup', args.lr_warmup),
                        ['raise --n_iter', 'lower --update_batch'], args.lr, main)
    return total


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        args = smoke_args(args)
    return runs.run_main('train.py', lambda: train(args))


def smoke_args(args, folder='smoke'):
    """--smoke: a tiny generated dataset and model, everything in ./smoke, which each
    smoke run starts afresh."""
    datasets.write_story_cloze(folder, 300, 100, np.random.default_rng(args.seed))
    encoder_path, bpe_path, _ = write_char_vocab(folder)
    print(f'smoke run: tiny data, model and outputs in {os.path.abspath(folder)}')
    smoke = dict(data_dir=folder, encoder_path=encoder_path, bpe_path=bpe_path, n_transfer=-1,
                 n_embd=64, n_head=4, n_layer=2, n_iter=4, n_batch=8, update_batch=16, n_valid=60,
                 lr=1e-3, lr_warmup=0.05, submit=True, analysis=True, desc='smoke',
                 overwrite=True, resume=False, log_dir=os.path.join(folder, 'log'),
                 save_dir=os.path.join(folder, 'save'),
                 submission_dir=os.path.join(folder, 'submission'),
                 cache_dir=os.path.join(folder, 'cache'))
    return argparse.Namespace(**{**vars(args), **smoke})


if __name__ == '__main__':
    main()
