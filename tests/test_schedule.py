"""The data schedule is a pure function of (seed, step)."""

import numpy as np
import pytest

from pintrain import OptionError
from pintrain.training import Schedule


def test_same_seed_same_batches_in_any_order():
    a = Schedule(50, 4, seed=7)
    b = Schedule(50, 4, seed=7)
    ks = np.arange(300)
    forward = [a.batch(k) for k in ks]
    backward = {int(k): b.batch(int(k)) for k in ks[::-1]}
    shuffled = np.random.default_rng(1).permutation(ks)
    c = Schedule(50, 4, seed=7)
    random_order = {int(k): c.batch(int(k)) for k in shuffled}
    for k in ks:
        np.testing.assert_array_equal(forward[k], backward[int(k)])
        np.testing.assert_array_equal(forward[k], random_order[int(k)])


def test_batched_lookup_and_table_agree_with_single_steps():
    s = Schedule(50, 4, seed=3)
    table = s.table(200)
    assert table.shape == (200, 4)
    for k in range(200):
        np.testing.assert_array_equal(table[k], s.batch(k))
    ks = np.array([0, 11, 12, 37, 150])
    union = s.batches(ks, 3)
    assert union.shape == (5, 12)
    for i, k in enumerate(ks):
        np.testing.assert_array_equal(union[i], np.concatenate([s.batch(k + j) for j in range(3)]))


def test_each_epoch_is_a_permutation_and_seeds_differ():
    s = Schedule(50, 5, seed=0)
    assert s.steps_per_epoch == 10
    for epoch in range(3):
        seen = np.concatenate([s.batch(epoch * 10 + b) for b in range(10)])
        np.testing.assert_array_equal(np.sort(seen), np.arange(50))
    first = np.concatenate([s.batch(b) for b in range(10)])
    second = np.concatenate([s.batch(10 + b) for b in range(10)])
    assert not np.array_equal(first, second)
    other = Schedule(50, 5, seed=1)
    assert not np.array_equal(first, np.concatenate([other.batch(b) for b in range(10)]))


def test_remainder_dropped_and_full_batch():
    s = Schedule(10, 3, seed=0)
    assert s.steps_per_epoch == 3 and all(len(s.batch(k)) == 3 for k in range(20))
    full = Schedule(4, None)
    assert full.full_batch and full.steps_per_epoch == 1
    for k in (0, 1, 99):
        np.testing.assert_array_equal(full.batch(k), np.arange(4))
    assert Schedule(4, 4).full_batch
    # a batch larger than the data is a mistake to report, not a full batch in disguise (issue 13)
    with pytest.raises(OptionError, match="batch_size=10 is not allowed.*at most the number of samples, 4"):
        Schedule(4, 10)
    assert Schedule(10, 3).describe()["dropped_per_epoch"] == 1  # said, as DataLoader(drop_last=True)


def test_given_batches_are_the_users_order():
    from pintrain.training.schedule import GivenBatches

    order = [[3, 1], [0, 2], [1, 1], [4, 0]]
    s = GivenBatches(5, order)
    np.testing.assert_array_equal(s.table(4), order)
    np.testing.assert_array_equal(s.batch(2), [1, 1])
    np.testing.assert_array_equal(s.batches(np.array([0, 2]), 2), [[3, 1, 0, 2], [1, 1, 4, 0]])
    with pytest.raises(OptionError, match="one batch per step, 5 at least"):
        s.table(5)
    with pytest.raises(OptionError, match="same size"):
        GivenBatches(5, [[0, 1], [2]])
    with pytest.raises(OptionError, match="0 .. 4"):
        GivenBatches(5, [[0, 5]])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 5, "batch_size": 0}, "batch_size"),
        ({"n_samples": 5, "seed": -1}, "seed"),
    ],
)
def test_bad_schedule_input(kwargs, field):
    with pytest.raises(OptionError, match=field):
        Schedule(**kwargs)
