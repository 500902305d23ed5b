import numpy as np
import pytest

from carto._validate import BatchError, prepare

N, K = 100, 3


def good(b=4):
    return np.arange(b), np.zeros((b, K), np.float32), np.arange(b) % K


def check(ids, logits, labels, pattern, index=7):
    with pytest.raises(ValueError, match=pattern) as e:
        prepare(2, index, ids, logits, labels, N, K)
    msg = str(e.value)
    assert "epoch 2, batch 7" in msg and "discarded" in msg and "none of its rows are committed" in msg
    assert isinstance(e.value, BatchError) and e.value.batch == index and e.value.epoch == 2


def test_good_batches_pass():
    b = prepare(0, 0, *good(), N, K)
    ids, logits, labels = b.arrays(N, K)
    assert ids.tolist() == [0, 1, 2, 3] and logits.shape == (4, K)


def test_shapes_that_disagree():
    ids, logits, labels = good()
    check(ids[:3], logits, labels, "shapes disagree")
    check(ids, logits, labels[:2], "shapes disagree")
    check(ids.reshape(2, 2), logits, labels, r"ids must have shape \[B\]")
    check(ids, logits[0], labels, r"logits must have shape \[B, K\]")
    check(ids, logits, labels.reshape(4, 1), r"labels must have shape \[B\]")


def test_ids_outside_the_dataset():
    ids, logits, labels = good()
    check(np.array([0, 1, N, 3]), logits, labels, rf"sample id {N} \(row 2\) is outside \[0, {N}\)")
    check(np.array([0, -1, 2, 3]), logits, labels, r"sample id -1")


def test_nan_or_inf_logits():
    ids, logits, labels = good()
    bad = logits.copy()
    bad[1, 2] = np.nan
    check(ids, bad, labels, r"logits of row 1 \(sample 1\) are not finite")
    bad = logits.copy()
    bad[3, 0] = np.inf
    check(ids, bad, labels, r"logits of row 3 .* not finite")


def test_labels_outside_the_classes():
    ids, logits, _ = good()
    check(ids, logits, np.array([0, 1, K, 0]), rf"label {K} .* outside \[0, {K}\)")
    check(ids, logits, np.array([0, -2, 1, 0]), r"label -2")


def test_wrong_number_of_classes():
    ids, _, labels = good()
    check(ids, np.zeros((4, K + 1)), labels, rf"logits have {K + 1} columns, but the job has num_classes = {K}")


def test_wrong_dtypes():
    ids, logits, labels = good()
    check(ids.astype(float), logits, labels, "ids must be integers")
    check(ids, logits, labels.astype(float), "labels must be integers")
    check(ids, logits.astype(np.int64), labels, "logits must be floating point")


def test_lists_are_accepted():
    b = prepare(0, 0, [1, 2], [[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]], [2, 0], N, K)
    ids, logits, labels = b.arrays(N, K)
    assert ids.tolist() == [1, 2] and labels.tolist() == [2, 0]
    assert logits.dtype == np.float64  # Python floats are float64, kept as such
