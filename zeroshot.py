"""Scores the paper's zero-shot heuristics (section 5, Figure 2 right): ROCStories, RACE,
SST-2 and CoLA from the pretrained language model alone, without fine-tuning.

    python zeroshot.py --task rocstories --data_dir data/ --split test

Input layout: the language model was pretrained on contiguous text, without the special
tokens of fine-tuning, so an input is plain BPE ids, a context then an answer, at position
ids 0, 1, ... Where they overflow n_ctx the context is cut from its left: the answer stays
whole, and the context keeps its end, the text that leads into the answer. An answer is
scored by the log-probability of each of its tokens given every token before it, over the
BPE vocabulary (the softmax of pretraining: no position or special rows).

  ROCStories  story, ending: the ending whose tokens have the highest mean log-probability.
  RACE        article question, option: likewise among the four options.
  SST-2       sentence "very", then "positive" or "negative": the more probable word (the
              sum of its tokens' log-probabilities; each is one token in OpenAI's vocabulary).
  CoLA        a sentence's mean log-probability, over every token but its first (which
              nothing conditions), thresholded: acceptable at or above the threshold. The
              threshold is the one that maximises the Matthews correlation on CoLA's training
              split; the scored split never sets it.

--limit N keeps the first N examples of every split read (CoLA's training split included).
"""
import sys
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

import analysis
import datasets
import tasks
from generate import check_files, load_lm, load_text_encoder
from model_pytorch import Packing
from text_utils import find_vocabulary
from utils import Parser, count

SST2_PROMPT = 'very'
SST2_WORDS = ('negative', 'positive')  # class ids 0 and 1, as datasets.LABELS['sst2']


def fit_window(context, answer, n_ctx):
    """(ids, n): context then answer as one array of at most n_ctx ids, the context cut
    from its left, and n, the answer's length. The answer's first token needs at least one
    token of context to be predicted from."""
    if not len(answer):
        raise ValueError('an answer of no tokens: nothing to score')
    if not len(context):
        raise ValueError("a context of no tokens: nothing to predict the answer's first "
                         'token from')
    if len(answer) >= n_ctx:
        raise ValueError(f'an answer of {len(answer)} tokens: with at least one token of '
                         f'context it does not fit the model\'s {n_ctx} positions')
    ids = np.concatenate([np.asarray(context, np.int64), np.asarray(answer, np.int64)])
    return ids[-n_ctx:], len(answer)


def lm_batch(sequences, n_vocab, device):
    """(x, mask): token and position ids (N, longest, 2), zeros after each sequence's end,
    and the mask of real tokens (N, longest). Positions are numbered from 0, row n_vocab of
    the embedding, as pretrained (no special rows)."""
    longest = max(len(ids) for ids in sequences)
    x = np.zeros((len(sequences), longest, 2), np.int64)
    mask = np.zeros((len(sequences), longest), np.float32)
    for i, ids in enumerate(sequences):
        x[i, :len(ids), 0] = ids
        mask[i, :len(ids)] = 1
    x[..., 1] = np.arange(n_vocab, n_vocab + longest)
    return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)


class LanguageModel:
    """An LMModel without special tokens (as generate.load_lm gives OpenAI's), scoring
    windows n_batch at a time."""

    def __init__(self, model, n_vocab, n_batch=16, verbose=False):
        self.model, self.n_vocab = model, n_vocab
        self.n_batch, self.verbose = n_batch, verbose

    @property
    def n_ctx(self):
        return self.model.transformer.n_ctx

    def log_probs(self, windows):
        """For each window (ids, n): the log-probabilities of its last n tokens, each given
        all the ids before it, as a float64 array."""
        # Sorted by length, a batch pads little; padding comes after the real tokens, which
        # causal attention never lets them see, and Packing skips it.
        order = np.argsort([len(ids) for ids, _ in windows], kind='stable')
        result = [None] * len(windows)
        was_training = self.model.training
        self.model.eval()
        starts = range(0, len(order), self.n_batch)
        with torch.no_grad():
            for start in tqdm(starts, file=sys.stderr, ncols=80, leave=False,
                              disable=not self.verbose):
                rows = order[start:start + self.n_batch]
                for i, lp in zip(rows, self._batch([windows[i] for i in rows])):
                    result[i] = lp
        self.model.train(was_training)
        return result

    def _batch(self, windows):
        model = self.model
        x, mask = lm_batch([ids for ids, _ in windows], self.n_vocab,
                           next(model.parameters()).device)
        h = model.transformer(x, packing=Packing(mask))
        # The state at position t predicts token t + 1: only the states before answer
        # tokens go through the LM head.
        rows = [b for b, (_, n) in enumerate(windows) for _ in range(n)]
        cols = [t for ids, n in windows for t in range(len(ids) - n - 1, len(ids) - 1)]
        rows, cols = torch.tensor(rows, device=x.device), torch.tensor(cols, device=x.device)
        logits = model.lm_head(h[rows, cols])[:, :self.n_vocab]
        lp = logits.log_softmax(-1).gather(1, x[rows, cols + 1, :1]).squeeze(1)
        return np.split(lp.double().cpu().numpy(), np.cumsum([n for _, n in windows])[:-1])

    def scores(self, examples, reduce):
        """examples: a list of (context, answers), every example with as many answers.
        Returns (examples, answers): reduce (np.mean, np.sum) of the log-probabilities of
        each answer's tokens after its example's context."""
        windows = []
        for i, (context, answers) in enumerate(examples):
            try:
                windows += [fit_window(context, answer, self.n_ctx) for answer in answers]
            except ValueError as err:
                raise ValueError(f'example {i + 1}: {err}') from None
        values = np.array([reduce(lp) for lp in self.log_probs(windows)])
        return values.reshape(len(examples), -1)


def story_cloze(lm, data, split, encode):
    """The ending with the highest mean token log-probability after the story."""
    story, *endings = data[split].fields
    return lm.scores(list(zip(story, zip(*endings))), np.mean).argmax(1), {}


def race(lm, data, split, encode):
    """The option with the highest mean token log-probability after article and question."""
    article, question, *options = data[split].fields
    contexts = (np.concatenate([a, q]) for a, q in zip(article, question))
    return lm.scores(list(zip(contexts, zip(*options))), np.mean).argmax(1), {}


def sst2(lm, data, split, encode):
    """'positive' or 'negative', whichever is the more probable word after the sentence
    and 'very'."""
    prompt, words = encode(SST2_PROMPT), [encode(word) for word in SST2_WORDS]
    examples = [(np.concatenate([s, prompt]), words) for s in data[split].fields[0]]
    return lm.scores(examples, np.sum).argmax(1), {}


def cola(lm, data, split, encode):
    """Acceptable where a sentence's mean token log-probability reaches the threshold
    that best separates CoLA's training sentences (best_threshold)."""
    threshold = best_threshold(sentence_scores(lm, data['train'].fields[0]),
                               data['train'].labels)
    preds = (sentence_scores(lm, data[split].fields[0]) >= threshold).astype(np.int64)
    return preds, {'threshold': threshold, 'n_train': len(data['train'].labels)}


def sentence_scores(lm, sentences):
    """The mean log-probability of every token of a sentence but the first, which has no
    context to be predicted from (the language model has no start token)."""
    return lm.scores([(s[:1], [s[1:]]) for s in sentences], np.mean)[:, 0]


def best_threshold(scores, labels):
    """The threshold t maximising the Matthews correlation of predicting 1 where a score is
    >= t, among the scores themselves (each such t splits them as any t between two of
    them would); of equal correlations, the lowest t."""
    candidates = np.unique(scores)
    mcc = [analysis.matthews_corrcoef((scores >= t).astype(np.int64), labels)
           for t in candidates]
    return float(candidates[int(np.argmax(mcc))])


class ZeroShot(NamedTuple):
    load: Callable     # (data_dir, split) -> {split name: datasets.Split} it needs
    predict: Callable  # (LanguageModel, encoded splits, split, encode) -> (preds, details)
    unit: str          # what one example is, for the printed count


ZERO_SHOT = {
    'rocstories': ZeroShot(lambda d, split: {split: datasets.rocstories_splits(d)[split]},
                           story_cloze, 'stories'),
    'race': ZeroShot(lambda d, split: datasets.race(d, [split]), race, 'questions'),
    'sst2': ZeroShot(lambda d, split: datasets.sst2(d, [split]), sst2, 'sentences'),
    'cola': ZeroShot(lambda d, split: datasets.cola(d, ['train', split]), cola, 'sentences'),
}


def first(split, limit):
    """The split's first `limit` examples (all when limit is None)."""
    def cut(values):
        return None if values is None else values[:limit]
    return datasets.Split(tuple(map(cut, split.fields)), cut(split.labels), cut(split.index),
                          cut(split.group))


def load_splits(task, data_dir, split, limit):
    """The splits the task needs, each cut to limit, every one with labels."""
    splits = {name: first(s, limit) for name, s in ZERO_SHOT[task].load(data_dir, split).items()}
    for name, s in splits.items():
        where = f'the {name} split of {tasks.TASKS[task].name} in {data_dir}'
        if s.labels is None:
            why = ' (GLUE keeps its test labels)' if task in datasets.GLUE else ''
            raise ValueError(f'{where} has no labels to score against{why}: use --split dev')
        if not len(s.labels):
            raise ValueError(f'{where} is empty')
    return splits


def evaluate(task, lm, text_encoder, splits, split):
    """{metric: value}, the task's metrics in percent (RACE's per level too), and the
    details its heuristic reports."""
    def encode(text):
        return text_encoder.encode([text], verbose=False)[0]
    data = {name: s._replace(fields=tuple(text_encoder.encode(f, verbose=lm.verbose)
                                          for f in s.fields))
            for name, s in splits.items()}
    preds, details = ZERO_SHOT[task].predict(lm, data, split, encode)
    scored = splits[split]
    return tasks.score(tasks.TASKS[task], preds, np.asarray(scored.labels), scored.group), details


def summary(task, scores, n, details):
    """One line, e.g. 'ROCStories zero-shot accuracy: 60.12 (1871 stories)'."""
    t = tasks.TASKS[task]
    metric = t.metrics[0]
    notes = [f'{n} {ZERO_SHOT[task].unit}']
    notes += [f'{key[len(metric) + 1:]} {value:.2f}' for key, value in scores.items()
              if key.startswith(f'{metric}_')]
    if 'threshold' in details:
        notes.append(f"threshold {details['threshold']:.4f} from {details['n_train']} "
                     'training sentences')
    return (f'{t.name} zero-shot {tasks.METRIC_NAMES[metric].lower()}: {scores[metric]:.2f} '
            f'({"; ".join(notes)})')


def parse_args(argv=None):
    p = Parser(prog='zeroshot.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--task', required=True, choices=sorted(ZERO_SHOT))
    p.add_argument('--data_dir', default='data/',
                   help="the task's data: ROCStories' CSVs, the GLUE folder, or RACE's parent")
    p.add_argument('--split', default='dev', choices=['dev', 'test'],
                   help="the split scored: ROCStories' dev is train.py's 374 validation "
                        "stories; GLUE's test labels are not public")
    p.add_argument('--model_dir', default='model/',
                   help="the language model: OpenAI's model/ folder, or a model folder of "
                        'pretrain.py, export.py or transformers')
    p.add_argument('--encoder_path', help='default: encoder_bpe_40000.json, or vocab.json, '
                   'in --model_dir')
    p.add_argument('--bpe_path', help='default: vocab_40000.bpe, or merges.txt, in --model_dir')
    p.add_argument('--limit', type=count(1), help='score only the first N examples of each split')
    p.add_argument('--n_batch', type=count(1), default=16, help='sequences per forward pass')
    p.add_argument('--device', choices=['cpu', 'cuda'],
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device is available here; use --device cpu')
    args.encoder_path, args.bpe_path = find_vocabulary(args.model_dir, args.encoder_path,
                                                       args.bpe_path)
    return args


def run(args):
    """The task's scores and the heuristic's details, printing the summary line."""
    # cheap checks first: the files, then the weights (said at once when missing)
    check_files(args.encoder_path, args.bpe_path, args.model_dir)
    model, dims = load_lm(model_dir=args.model_dir, device=args.device)
    text_encoder = load_text_encoder(args.encoder_path, args.bpe_path)
    splits = load_splits(args.task, args.data_dir, args.split, args.limit)
    if len(text_encoder.encoder) != dims['n_vocab']:
        raise ValueError(f'{args.encoder_path} holds {len(text_encoder.encoder)} tokens but '
                         f"the model knows {dims['n_vocab']}: pass its vocabulary "
                         '(--encoder_path, --bpe_path)')
    lm = LanguageModel(model, dims['n_vocab'], args.n_batch, verbose=True)
    scores, details = evaluate(args.task, lm, text_encoder, splits, args.split)
    print(summary(args.task, scores, len(splits[args.split].labels), details))
    return scores, details


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError) as err:
        raise SystemExit(f'zeroshot.py: error: {err}')


if __name__ == '__main__':
    main()
