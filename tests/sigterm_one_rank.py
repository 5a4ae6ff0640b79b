"""train.py under torchrun, SIGTERM reaching the second process alone during update 5, as
a signal from a scheduler that reached one node would (tests/test_faults.py)."""
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import train  # noqa: E402
from conftest import terminated_at  # noqa: E402

if os.environ['RANK'] == '1':
    train.Trainer.update = terminated_at(5)
train.main(sys.argv[1:])
