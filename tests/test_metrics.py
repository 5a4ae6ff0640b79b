"""analysis.py's metrics against sklearn.metrics and scipy.stats on fixed inputs, ties and
undefined cases included."""
import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from analysis import accuracy, f1, matthews_corrcoef, pearson, spearman

RNG = np.random.RandomState(0)
BINARY = [
    # preds, labels
    (RNG.randint(0, 2, 50), RNG.randint(0, 2, 50)),
    ([1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]),
    ([0, 1, 1, 0], [0, 1, 1, 0]),             # perfect
    ([1, 0, 0, 1], [0, 1, 1, 0]),             # all wrong
    ([1, 1, 1, 1], [0, 1, 1, 0]),             # one predicted class: MCC undefined
    ([0, 1, 1, 0], [1, 1, 1, 1]),             # one true class
    ([0, 0, 0], [0, 0, 0]),                   # no positive anywhere: F1 undefined
    ([0, 0, 0], [1, 1, 0]),                   # no predicted positive
    (np.ones(300000, int), np.r_[np.ones(200000, int), np.zeros(100000, int)]),
    (np.r_[np.ones(150000, int), np.zeros(150000, int)],
     np.r_[np.ones(100000, int), np.zeros(120000, int), np.ones(80000, int)]),  # big counts
]


def sklearn_quietly(metric, preds, labels):
    """sklearn's value, without its warning that a metric is ill-defined."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return metric(labels, preds) * 100.


@pytest.mark.parametrize('preds, labels', BINARY)
def test_binary_metrics_agree_with_sklearn(preds, labels):
    assert accuracy(preds, labels) == pytest.approx(
        sklearn_quietly(sklearn.metrics.accuracy_score, preds, labels))
    assert matthews_corrcoef(preds, labels) == pytest.approx(
        sklearn_quietly(sklearn.metrics.matthews_corrcoef, preds, labels), abs=1e-9)
    assert f1(preds, labels) == pytest.approx(
        sklearn_quietly(sklearn.metrics.f1_score, preds, labels), abs=1e-9)


def test_binary_metrics_known_values():
    preds, labels = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]
    assert accuracy(preds, labels) == pytest.approx(400 / 6)
    assert f1(preds, labels) == pytest.approx(75.)  # tp 3, fp 1, fn 1
    assert matthews_corrcoef(preds, labels) == pytest.approx(25.)  # (3 - 1) / sqrt(4*4*2*2)
    assert matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.
    assert matthews_corrcoef([1, 0], [0, 1]) == -100.
    assert f1([0, 0], [0, 0]) == 0.
    assert isinstance(accuracy(np.array([1]), np.array([1])), float)


def scipy_quietly(correlation, x, y):
    """scipy's value x 100, without its warning that a constant input leaves it undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return correlation(x, y)[0] * 100.


SCORES = [
    # x, y
    (RNG.rand(40) * 5, RNG.rand(40) * 5),
    ([0.0, 1.2, 2.5, 2.5, 4.0, 5.0], [0.5, 1.0, 1.0, 3.0, 4.2, 4.8]),   # ties in both
    (np.round(RNG.rand(200) * 5), np.round(RNG.rand(200) * 5, 1)),    # many ties
    ([1, 2, 3, 4], [8, 6, 4, 2]),                                      # perfectly inverse
    ([1, 1, 2, 2], [3, 3, 3, 4]),
    ([0.1, 0.1, 0.1], [1, 2, 3]),                                      # constant: undefined
    ([1, 2, 3], [2.5, 2.5, 2.5]),
    ([1e9 + 1, 1e9 + 2, 1e9 + 4], [3, 2, 1]),                          # large offset
]


@pytest.mark.parametrize('x, y', SCORES)
def test_correlations_agree_with_scipy(x, y):
    for ours, theirs in ((pearson, scipy.stats.pearsonr), (spearman, scipy.stats.spearmanr)):
        expected = scipy_quietly(theirs, x, y)
        if np.isnan(expected):
            assert np.isnan(ours(x, y))
        else:
            assert ours(x, y) == pytest.approx(expected, abs=1e-9)


def test_correlations_known_values():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(100.)
    assert spearman([1, 2, 3], [1, 5, 100]) == pytest.approx(100.)
    # ranks (1, 2, 3) and (1, 2.5, 2.5)
    assert spearman([1, 2, 3], [0, 7, 7]) == pytest.approx(100 * 1.5 / np.sqrt(2 * 1.5))
    assert np.isnan(pearson([2, 2], [1, 3])) and np.isnan(spearman([2, 2], [1, 3]))


@pytest.mark.parametrize('metric', [accuracy, matthews_corrcoef, f1, pearson, spearman])
def test_mismatched_or_empty_inputs_rejected(metric):
    with pytest.raises(ValueError, match='one length'):
        metric([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match='one length'):
        metric([], [])


@pytest.mark.parametrize('metric', [matthews_corrcoef, f1])
def test_binary_metrics_reject_other_classes(metric):
    with pytest.raises(ValueError, match=r'binary labels \(0 or 1\), found \[0 1 2\]'):
        metric([0, 1, 1], [0, 1, 2])
