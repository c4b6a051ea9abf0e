"""Masks: exact counts, orderings and N:M patterns checked against numpy brute force."""
import numpy as np
import pytest
import torch

from pruning.pruners.masks import (
    achieved_sparsity,
    check_sparsity,
    is_nm,
    lowest_k_mask,
    mask_from_scores,
    nm_mask,
    nm_sparsity,
    split_counts,
    unstructured_mask,
)


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    return torch.rand(37, 48, generator=g)


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 0.7, 0.333, 0.99])
def test_unstructured_whole_matrix_is_the_k_lowest(scores, s):
    m = unstructured_mask(scores, s)
    k = int(round(s * scores.numel()))
    assert int(m.sum()) == k
    ref = np.sort(scores.numpy().ravel())  # brute force: the k smallest values
    assert np.allclose(np.sort(scores[m].numpy()), ref[:k])


@pytest.mark.parametrize("s", [0.5, 0.7, 0.333, 0.05])
def test_per_row_exact_total_and_rowwise_order(scores, s):
    m = unstructured_mask(scores, s, per_row=True)
    a = scores.numpy()
    k = int(round(s * a.size))
    assert int(m.sum()) == k  # exact matrix total
    counts = m.sum(1).numpy()
    base, extra = divmod(k, a.shape[0])
    assert set(np.unique(counts)) <= {base, base + 1} and int((counts == base + 1).sum()) == extra
    srt = np.sort(a, axis=1)
    for r in range(a.shape[0]):  # each row prunes exactly its own lowest scores
        assert np.allclose(np.sort(a[r][m[r].numpy()]), srt[r, : counts[r]])
    if extra:  # the rows that prune one more are those whose next-lowest score is smallest
        nxt = srt[:, base]
        assert set(np.flatnonzero(counts == base + 1)) == set(np.argsort(nxt, kind="stable")[:extra])


def test_per_row_differs_from_global_when_rows_have_different_scales():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    assert unstructured_mask(a, 0.5).tolist() == [[True, True, True, True], [False] * 4]
    assert unstructured_mask(a, 0.5, per_row=True).tolist() == [[True, True, False, False]] * 2


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4)])
def test_nm_mask_prunes_the_lowest_in_every_group(scores, n, m):
    a = scores[:, :48]
    mask = nm_mask(a, n, m)
    g = a.numpy().reshape(a.shape[0], -1, m)
    gm = mask.numpy().reshape(g.shape)
    assert (gm.sum(-1) == m - n).all()
    srt = np.sort(g, axis=-1)
    assert np.allclose(np.sort(np.where(gm, g, np.inf), axis=-1)[..., : m - n], srt[..., : m - n])
    W = torch.where(mask, 0.0, a)
    assert is_nm(W, n, m) and achieved_sparsity(W) == pytest.approx(nm_sparsity((n, m)))


def test_is_nm_detects_violation():
    W = torch.ones(2, 8)
    W[:, [1, 3, 5, 7]] = 0
    assert is_nm(W, 2, 4)
    W[0, 1] = 1.0
    assert not is_nm(W, 2, 4)
    assert not is_nm(torch.ones(2, 6), 2, 4)  # 6 inputs cannot hold 4-groups


def test_lowest_k_and_split_counts():
    a = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    assert lowest_k_mask(a, 2).tolist() == [False, True, False, True, False]
    assert lowest_k_mask(a, 5).all() and not lowest_k_mask(a, 0).any()
    c = split_counts(7, [3, 3, 3, 1])
    assert sum(c) == 7 and all(abs(ci - 7 * s / 10) <= 1 for ci, s in zip(c, [3, 3, 3, 1]))
    assert split_counts(0, [4, 4]) == [0, 0]


def test_bad_input_messages(scores):
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="outside"):
            check_sparsity(bad)
        with pytest.raises(ValueError, match="outside"):
            mask_from_scores(scores, bad)
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_mask(torch.rand(3, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < N < M"):
        nm_mask(torch.rand(3, 8), 4, 4)
