"""pretrain.py under torchrun whose first process fails with an OSError (a disk's, not a
refusal of the input) as it encodes the corpus (tests/test_corpus.py)."""
import errno
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import corpus  # noqa: E402
import pretrain  # noqa: E402


def failing_disk(*args):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


if os.environ['RANK'] == '0':
    corpus.encode_stream = failing_disk
pretrain.main(sys.argv[1:])
