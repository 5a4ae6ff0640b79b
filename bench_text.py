"""Times the text pipeline on every ROCStories field (stories and both endings of the two
Story Cloze CSVs): our TextEncoder against a baseline on the same input in the same run,
and a cache hit of datasets.encoded_rocstories.

    python bench_text.py --data_dir data/ --reference path/to/finetune-transformer-lm

With --reference, the baseline is OpenAI's own text_utils.py from that checkout (its
spacy.load('en') given spaCy's blank English pipeline, the tokenizer OpenAI used);
without it, the plain reference encoder of tests/test_text_utils.py. Each encoder is
timed cold (built fresh, as in a first training run) and warm (a second pass).
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time

import datasets

REPO = os.path.dirname(os.path.abspath(__file__))


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def openai_encoder_class(reference_dir):
    """OpenAI's TextEncoder class, with spacy.load giving the blank English tokenizer
    (spaCy's 'en' model of 2018 is gone; only its tokenizer was used)."""
    import spacy
    path = os.path.join(reference_dir, 'text_utils.py')
    if not os.path.isfile(path):
        raise SystemExit(f'--reference: no text_utils.py in {reference_dir}')
    module = load_module('openai_text_utils', path)

    def make(*paths):
        load = spacy.load
        spacy.load = lambda *args, **kwargs: spacy.blank('en')
        try:
            return module.TextEncoder(*paths)
        finally:
            spacy.load = load
    return make


def plain_encoder_class():
    module = load_module('plain_reference', os.path.join(REPO, 'tests', 'test_text_utils.py'))
    return module.RefEncoder


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


def bench_encoding(data_dir, encoder_path, bpe_path, reference=None, rounds=2):
    """Best-of-rounds cold and warm seconds of the baseline and of ours, alternating so
    that both see the same machine load, and whether their ids agree."""
    from text_utils import TextEncoder
    fields = rocstories_fields(data_dir)
    paths = (encoder_path, bpe_path)
    if reference:
        baseline, name = openai_encoder_class(reference), 'OpenAI text_utils.py'
    else:
        baseline, name = plain_encoder_class(), 'plain reference'
    times = {name: [], 'ours': []}
    for _ in range(rounds):
        *base_times, base_ids = time_encoder(baseline, paths, fields)
        *our_times, our_ids = time_encoder(TextEncoder, paths, fields)
        times[name].append(base_times)
        times['ours'].append(our_times)
    best = {k: [min(t[i] for t in v) for i in range(2)] for k, v in times.items()}
    same = sum(a == b for a, b in zip(base_ids, our_ids))
    return dict(fields=len(fields), baseline=name, best=best, identical=same)


def bench_cache_hit(data_dir, encoder_path, bpe_path, rounds=3):
    with tempfile.TemporaryDirectory() as cache_dir:
        run = lambda: datasets.encoded_rocstories(data_dir, encoder_path, bpe_path,
                                                  cache_dir=cache_dir, verbose=False)
        run()
        best = float('inf')
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
    return best


def report(result, hit):
    n = result['fields']
    print(f'fields: {n}')
    for name, (cold, warm) in result['best'].items():
        print(f'{name:>22}: cold {cold:6.3f} s ({n / cold:8.0f} fields/s)   '
              f'warm {warm:6.3f} s ({n / warm:8.0f} fields/s)')
    (base_cold, base_warm), (cold, warm) = result['best'].values()
    print(f'{"ratio":>22}: cold {base_cold / cold:.2f}x   warm {base_warm / warm:.2f}x')
    print(f'{"identical ids":>22}: {result["identical"]}/{n} fields')
    print(f'{"cache hit":>22}: {hit:.3f} s (encoded_rocstories, best of 3)')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data_dir', default='data/', help='the two Story Cloze CSVs')
    p.add_argument('--encoder_path', default='model/encoder_bpe_40000.json')
    p.add_argument('--bpe_path', default='model/vocab_40000.bpe')
    p.add_argument('--reference', default=None,
                   help="a checkout of OpenAI's finetune-transformer-lm, to time its encoder")
    p.add_argument('--rounds', type=int, default=2)
    args = p.parse_args(argv)
    for path in (args.encoder_path, args.bpe_path):
        if not os.path.isfile(path):
            print(f'skipped: {path} not found (python download.py fetches the vocabulary)')
            return
    try:
        result = bench_encoding(args.data_dir, args.encoder_path, args.bpe_path,
                                args.reference, args.rounds)
    except FileNotFoundError as err:
        print(f'skipped: {err}')
        return
    report(result, bench_cache_hit(args.data_dir, args.encoder_path, args.bpe_path))


if __name__ == '__main__':
    sys.exit(main())
