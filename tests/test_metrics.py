"""Metric definitions checked against hand computations."""

import pytest

from lifelong import metrics

R = [[0.9, 0.1, 0.0],
     [0.6, 0.8, 0.2],
     [0.5, 0.7, 0.9]]


def test_average_accuracy():
    assert metrics.average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_backward_transfer():
    assert metrics.backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_forward_transfer_against_random_init():
    b = [0.1, 0.05, 0.1]
    assert metrics.forward_transfer(R, b) == pytest.approx(((0.1 - 0.05) + (0.2 - 0.1)) / 2)


def test_forgetting_uses_best_earlier_accuracy():
    # exp 0: best 0.9 -> 0.5; exp 1: best 0.8 -> 0.7
    assert metrics.average_forgetting(R) == pytest.approx((0.4 + 0.1) / 2)


def test_undefined_with_one_experience():
    one = [[0.7, 0.2]]
    assert metrics.average_accuracy(one) == pytest.approx(0.45)
    assert metrics.backward_transfer(one) is None
    assert metrics.average_forgetting(one) is None
    assert metrics.forward_transfer(one, [0.1, 0.1]) is None
