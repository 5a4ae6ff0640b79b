"""Fine-tunes GPT-1 on a task of the paper, as OpenAI's train.py does for ROCStories.

    python train.py --dataset rocstories --desc rocstories --submit --analysis --data_dir data/

Runs on one device (CUDA when present, else the CPU) or on several through torchrun, with
--update_batch examples per update (32, the paper's) on any number of devices.
Checkpoints are written atomically and `--resume` continues a run bit for bit.

Exit codes: 0 finished; 1 an error, said in one line; 2 a bad flag; 75 interrupted by
SIGTERM or Ctrl-C (after a checkpoint once training has begun: add --resume to go on).
"""
import argparse
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

import datasets
import runs
import tasks
from checkpoints import RunError, settings
from download import DownloadError, download_openai_model
from model_pytorch import (Config, DoubleHeadModel, check_weights_files, load_openai_pretrained_model,
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
    # OpenAI's flags and defaults
    p.add_argument('--desc', type=str, default=None, help='names the run (default: --dataset)')
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
    p.add_argument('--seed', type=count(0, 2 ** 32 - 1), default=42,
                   help="seeds Python's, numpy's and torch's random numbers (numpy's range: "
                        '0 to 2^32 - 1)')
    p.add_argument('--n_iter', type=count(1), default=3, help='epochs')
    p.add_argument('--n_batch', type=count(1), default=8,
                   help='examples per device per forward pass')
    p.add_argument('--max_grad_norm', type=real(lambda v: True, 'a number'), default=1,
                   help="clips the gradients' global norm to this; 0 or below turns clipping "
                        "off, as in OpenAI's code")
    p.add_argument('--lr', type=NON_NEGATIVE, default=6.25e-5,
                   help="Adam's learning rate at the schedule's peak")
    p.add_argument('--lr_warmup', type=real(lambda v: 0 < v <= 1, 'a fraction in (0, 1]'),
                   default=0.002,
                   help='the fraction of the updates over which the learning rate rises from 0')
    p.add_argument('--n_ctx', type=count(3), default=512,
                   help='the longest input in tokens (the model takes the data\'s longest, if '
                        'shorter)')
    p.add_argument('--n_embd', type=count(1), default=768, help='the model\'s width')
    p.add_argument('--n_head', type=count(1), default=12, help='attention heads per block')
    p.add_argument('--n_layer', type=count(1), default=12, help='transformer blocks')
    p.add_argument('--embd_pdrop', type=PROBABILITY, default=0.1,
                   help='dropout of the embeddings')
    p.add_argument('--attn_pdrop', type=PROBABILITY, default=0.1,
                   help='dropout of the attention weights')
    p.add_argument('--resid_pdrop', type=PROBABILITY, default=0.1,
                   help='dropout of the residual branches')
    p.add_argument('--clf_pdrop', type=PROBABILITY, default=0.1,
                   help="dropout before the task's classifier")
    p.add_argument('--l2', type=NON_NEGATIVE, default=0.01,
                   help="weight decay: l2 x the weight added to Adam's step, for matrices")
    p.add_argument('--vector_l2', action='store_true',
                   help='apply --l2 to vectors (biases, gains) too')
    p.add_argument('--opt', type=str, default='adam', choices=['adam'],
                   help="the optimizer: OpenAI's Adam")
    p.add_argument('--afn', type=str, default='gelu', choices=['gelu', 'relu', 'swish'],
                   help="the blocks' activation function")
    p.add_argument('--lr_schedule', type=str, default='warmup_linear',
                   choices=['warmup_linear', 'warmup_cosine', 'warmup_constant'],
                   help='the learning rate after the warmup: down to 0 linearly, down as a '
                        'cosine, or constant')
    p.add_argument('--encoder_path', type=str, default=None,
                   help='default: encoder_bpe_40000.json, or the Hub\'s vocab.json, in --model_dir')
    p.add_argument('--bpe_path', type=str, default=None,
                   help='default: vocab_40000.bpe, or the Hub\'s merges.txt, in --model_dir')
    p.add_argument('--n_transfer', type=count(-1), default=12,
                   help='pretrained blocks to load; -1 trains from scratch with no weights')
    p.add_argument('--lm_coef', type=NON_NEGATIVE, default=0.5,
                   help="the language model's loss, times this, is added to the task's")
    p.add_argument('--b1', type=PROBABILITY, default=0.9, help="Adam's beta1")
    p.add_argument('--b2', type=PROBABILITY, default=0.999, help="Adam's beta2")
    p.add_argument('--e', '--adam_eps', type=NON_NEGATIVE, default=1e-8,
                   help="Adam's epsilon; under torchrun, whose parser takes --e for its own, "
                        'give it as --adam_eps')
    p.add_argument('--n_valid', type=count(1), default=374,
                   help='ROCStories: stories split off for validation; every task: training '
                        'examples evaluated at each log point')
    p.add_argument('--n_gpu', type=count(1), default=None,
                   help="OpenAI's: n_batch x n_gpu examples per update (its runs: 8 x 4); "
                        'here it sets --update_batch, on however many devices are used')
    # this port's additions
    p.add_argument('--update_batch', type=count(1), default=None,
                   help="examples per optimizer update, over all devices (default 32, the paper's)")
    p.add_argument('--n_batch_eval', type=count(1), default=32, help='examples per evaluation pass')
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
    if args.n_embd % args.n_head:
        p.error(f'--n_embd {args.n_embd} must be a multiple of --n_head {args.n_head}')
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


def model_config(args):
    return Config(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, afn=args.afn,
                  embd_pdrop=args.embd_pdrop, attn_pdrop=args.attn_pdrop,
                  resid_pdrop=args.resid_pdrop, clf_pdrop=args.clf_pdrop)


class Trainer(runs.Updater):
    """The updater of a task: its inputs and loss, all from args (runs.Updater)."""

    def __init__(self, args, dd, model, task, inputs, n_updates_total):
        super().__init__(args, dd, model, n_updates_total)
        self.task, self.inputs = task, inputs
        self.fast = not args.reference
        self.loss = tasks.loss_compute(task, args.lm_coef)

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
        """One optimizer update from this process's share `rows` of the update's examples,
        in args.n_batch-example passes; n_update numbers it for the non-finite check."""
        n = self.args.n_batch
        return self.accumulate(lambda k: self.batch(split, rows[k * n:(k + 1) * n]), n_update)

    def step(self, x, m, y, n_real):
        """Forward, loss and backward of one pass; returns its share of the update's loss
        (each of the accum passes counts 1/accum, so the gradients sum to the mean's)."""
        if self.fast:  # no LM head where its loss does not count (TF: lm_coef 0)
            # the LM loss computed with its head (loss.LinearCrossEntropy), but under fp16
            lm = 'rows' if self.amp_dtype != torch.float16 else True
            lm_logits, clf_logits = self.model(x, m, n_real, lm=self.args.lm_coef > 0 and lm)
        else:
            lm_logits, clf_logits = self.model(x)
        with self.full_precision():
            if isinstance(lm_logits, torch.Tensor):
                lm_logits = lm_logits.float()
            loss = self.loss(x, y, m, clf_logits.float(), lm_logits,
                             lm_rows='targets' if self.fast else 'all') / self.accum
            self.scaler.scale(loss).backward()
        return loss.detach()

    @torch.no_grad()
    def logits(self, split, rows=None):
        """Classifier outputs for the examples rows (all by default), this process's
        contiguous share evaluated here and the shares gathered."""
        self.module.eval()
        rows = np.arange(len(split.fields[0])) if rows is None else rows
        share = np.array_split(rows, self.dd.world)[self.dd.rank]
        out = []
        with self.autocast():
            for i in range(0, len(share), self.args.n_batch_eval):
                x, m, _, n_real = self.batch(split._replace(labels=None),
                                             share[i:i + self.args.n_batch_eval])
                clf = self.module(x, m if self.fast else None, n_real, lm=False)[1]
                out.append(clf.float().cpu())
        self.module.train()
        return torch.cat([o for shares in self.dd.gather(out) for o in shares])

    def evaluate(self, split, n=None):
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


def check_inputs(args, dd):
    """Before any work: the files this run needs, the weights against the flags, the
    vocabulary (another than OpenAI's is allowed, with a warning), and the update's split
    over the processes. Returns the vocabulary's size."""
    check_model_files(args)
    per_device = args.update_batch // dd.world
    if args.update_batch % dd.world or per_device % args.n_batch:
        raise RunError(f'--update_batch {args.update_batch} must split into {dd.world} '
                       f'process(es) x --n_batch {args.n_batch} x a whole number of steps')
    model_dir = None if args.n_transfer == -1 else args.model_dir
    try:  # the vocabulary and params_shapes.json as generate.py and zeroshot.py check them
        n_vocab = check_vocabulary(args.encoder_path, args.bpe_path)
        if model_dir is not None:
            check_weights_files(model_dir)
    except (OSError, ValueError) as err:
        raise RunError(err) from None
    differs = vocabulary_differs(args.encoder_path, args.bpe_path)
    if differs and dd.main:
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


def load_task(args, dd):
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
                            cache_dir=args.cache_dir, verbose=dd.main, digest=digest)
    data = {name: split._replace(labels=tasks.label_array(task, split.labels))
            for name, split in data.items()}
    return task, data, digest


def build_model(args, task, data, n_vocab):
    """The model, its weights loaded as OpenAI's train.py loads them, its inputs, and the
    settings that rebuild it."""
    specials, n_special = tasks.Specials.after(n_vocab), 3
    inputs = tasks.Inputs(task, specials, n_vocab + n_special, args.n_ctx)
    n_ctx = inputs.longest(data.values())
    model = DoubleHeadModel(model_config(args), specials.classify, task.head,
                            vocab=n_vocab + n_special + n_ctx, n_ctx=n_ctx)
    try:
        load_openai_pretrained_model(model, n_ctx=n_ctx, n_special=n_special,
                                     n_transfer=args.n_transfer, n_embd=args.n_embd,
                                     path=args.model_dir)
    except (OSError, ValueError) as err:
        raise RunError(err) from None
    meta = dict(cfg=dict(model_config(args)), n_vocab=n_vocab, n_special=n_special, n_ctx=n_ctx,
                clf_token=specials.classify, task_head_type=task.head, dataset=args.dataset)
    return model, inputs, meta


class Run(runs.Run):
    """A fine-tuning run (runs.Run): OpenAI's log of the task's metrics, the best
    parameters with --submit, and the submission."""

    def __init__(self, args, dd, trainer, data, folder, meta, current):
        super().__init__(args, dd, trainer, folder, current, meta)
        self.data = data

    def start(self):
        super().start()
        if self.dd.main and self.args.submit and not self.args.resume:
            save_params(self.folder.best, self.trainer.module, **self.meta)

    def log(self):
        """OpenAI's log(): cost and metrics on n_valid training examples and on each
        validation split, logged and printed; with --submit the parameters are kept when
        the first validation score beats the best so far (a tie keeps the earlier ones,
        as OpenAI's `>`)."""
        task, progress = self.trainer.task, self.progress
        results = {'tr': self.trainer.evaluate(self.data['train'], self.args.n_valid)}
        for prefix, split in zip(tasks.valid_prefixes(task), task.valid):
            results[prefix] = self.trainer.evaluate(self.data[split])
        if not self.dd.main:
            return
        record = dict(n_epochs=progress.n_epochs, n_updates=progress.n_updates)
        record.update({f'{prefix}_cost': cost for prefix, (cost, _) in results.items()})
        record.update({f'{prefix}_{metric}': value for prefix, (_, metrics) in results.items()
                       for metric, value in metrics.items()})
        self.logger.log(**record)
        tqdm.write(tasks.log_line(task, record))
        score = record[f'va_{task.metrics[0]}']
        if self.args.submit and score > progress.best_score:
            progress.best_score = score
            save_params(self.folder.best, self.trainer.module, **self.meta)

    def submit(self):
        """OpenAI's --submit: the best parameters predict every test split; a file of
        predictions per split, and the score where the test labels are public."""
        task, dd, trainer = self.trainer.task, self.dd, self.trainer
        if dd.main:
            trainer.module.load_state_dict(load_params(self.folder.best,
                                                       map_location=trainer.device)[1])
        for p in trainer.module.state_dict().values():
            dd.broadcast(p)
        test_scores = {}
        for name in task.submission:
            split = self.data[name]
            preds = tasks.predict(task, trainer.logits(split))
            if not dd.main:
                continue
            tasks.write_predictions(task, name, split, preds, self.folder.submission_dir)
            if split.labels is not None:
                test_scores[name] = tasks.score(task, preds, split.labels, split.group)
        if dd.main and test_scores:
            self.logger.log(**{f'te_{metric}' if name == 'test' else f'te_{name}_{metric}': value
                               for name, metrics in test_scores.items()
                               for metric, value in metrics.items()})
        return test_scores


def fit(run, stop_request):
    """OpenAI's loop: n_iter epochs of shuffled updates, logged at its log points and at
    each epoch's end. The host waits for the device only at log and save points, every
    10 updates and at an epoch's end."""
    args, dd, trainer, progress = run.args, run.dd, run.trainer, run.progress
    train = run.data['train']
    n_batches = len(train.labels) // args.update_batch
    while progress.n_epochs < args.n_iter:
        order = progress.epoch_order(len(train.labels))
        for b in tqdm(range(progress.batch, n_batches), initial=progress.batch, total=n_batches,
                      ncols=80, leave=False, disable=not dd.main,
                      desc=f'epoch {progress.n_epochs + 1}/{args.n_iter}'):
            rows = order[b * args.update_batch:(b + 1) * args.update_batch]
            trainer.update(train, rows[dd.rank * trainer.per_device:][:trainer.per_device],
                           progress.n_updates + 1)
            progress.n_updates, progress.batch = progress.n_updates + 1, b + 1
            log_due = progress.n_epochs == 0 and progress.n_updates in OPENAI_LOG_UPDATES
            save_due = run.save_due(progress.n_updates)
            sync = progress.n_updates % 10 == 0 or log_due or save_due or b == n_batches - 1
            if sync:
                run.check_finite_loss()
            if log_due:
                run.log()
            if save_due:
                run.checkpoint()
            run.stop(sync, stop_request)
        progress.end_epoch()
        run.log()
        run.checkpoint()


def train(args):
    return runs.session(args, run_training)


def run_training(args, dd, folder, stop_request):
    outputs = [('submission_dir', folder.submission_dir)] if args.submit else []
    dd.on_first(lambda: (runs.check_output_dirs(args, folder, outputs), folder.lock(),
                         folder.refuse_earlier(args.resume, args.overwrite)))
    run = checked_run(args, dd, folder)
    # Training begins: a signal now stops at a checkpoint. Only now, with all checked that
    # can be, may --overwrite delete the earlier run's files.
    stop_request.training = True
    if args.overwrite:
        dd.on_first(folder.clear)
    run.start()
    fit(run, stop_request)
    test_scores = run.submit() if args.submit else {}
    if args.analysis and dd.main:
        tasks.report(run.trainer.task, folder.log, test_scores, folder.curves)
    return run.progress


def checked_run(args, dd, folder):
    """The run, made ready on all the checks that can come before training: the inputs,
    the data, the weights against the flags, and the number of updates."""
    if dd.main:
        print(args)
    runs.seed_all(args.seed)
    if args.download and dd.main:
        try:
            download_openai_model(args.model_dir)
        except (DownloadError, ValueError) as err:
            raise RunError(f'--download failed: {err}') from None
    n_vocab = check_inputs(args, dd)
    task, data, data_digest = load_task(args, dd)
    model, inputs, meta = build_model(args, task, data, n_vocab)
    model.to(dd.device)
    # dropout masks differ per rank; data order and weights (numpy, model init) do not
    torch.manual_seed(args.seed + dd.rank)
    n_train = len(data['train'].labels)
    n_updates_total = count_updates(args, n_train, dd.main)
    trainer = Trainer(args, dd, model, task, inputs, n_updates_total)
    current = settings(args, dd.world, dict(
        data=data_digest, n_ctx=meta['n_ctx'], n_vocab=meta['n_vocab'],
        vocabulary=[file_digest(args.encoder_path), file_digest(args.bpe_path)]))
    if dd.main:
        print(f'{n_train} training examples, n_ctx {meta["n_ctx"]}; effective batch '
              f'{args.update_batch} = {args.n_batch} per forward x {trainer.accum} '
              f'accumulation step(s) x {dd.world} device(s); {n_updates_total} updates '
              f'on {dd.device}{"" if args.amp == "none" else " with " + args.amp + " autocast"}')
    return Run(args, dd, trainer, data, folder, meta, current)


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
                        f'--lr_warmup {args.lr_warmup}', ['raise --n_iter', 'lower --update_batch'],
                        args.lr, main)
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
