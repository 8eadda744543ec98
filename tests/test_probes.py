"""Probes: a contract over every registered probe, scikit-learn parity for logreg, kNN against brute force."""
import numpy as np
import pytest

from jerc_eval.plugins import create_host

HOST = create_host()


def _blobs(n, d=16, classes=5, sep=1.2, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * sep
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("name", HOST.registry("probes").names())
def test_probe_contract(name):
    x_all, y_all = _blobs(900)
    x, y = x_all[:600], y_all[:600]
    xt_same_centres = x_all[600:], y_all[600:]
    probe = HOST.registry("probes").get(name)()
    fitted = probe.fit(x, y, 5, seed=0, device="cpu")
    pred = fitted.predict(xt_same_centres[0])
    assert pred.dtype == np.int64 and pred.shape == (300,)
    assert (pred == xt_same_centres[1]).mean() > 0.7  # well above chance (0.2) on held-out points
    again = probe.fit(x, y, 5, seed=0, device="cpu").predict(xt_same_centres[0])
    assert np.array_equal(pred, again)  # deterministic given the seed
    assert fitted.info["probe"] == name and "n_train" in fitted.info


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_logreg_matches_sklearn(C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from jerc_eval.probes import fit_logreg

    x_all, y_all = _blobs(3000, d=32, classes=10, sep=0.45)
    x, y, xt, yt = x_all[:2000], y_all[:2000], x_all[2000:], y_all[2000:]
    ours, info = fit_logreg(x, y, 10, c_grid=(C,), max_iter=500, seed=0, device="cpu")
    sc = StandardScaler().fit(x)
    sk = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(sc.transform(x), y)
    acc_ours = (ours.predict(xt) == yt).mean()
    acc_sk = (sk.predict(sc.transform(xt)) == yt).mean()
    assert 0.3 < acc_sk < 0.95  # a task where the regularisation matters
    assert abs(acc_ours - acc_sk) <= 0.003
    assert info["C"] == C


def test_logreg_chooses_c_by_stratified_cross_validation():
    from jerc_eval.probes import fit_logreg, fold_threads

    x, y = _blobs(800, d=64, classes=4, sep=0.3)
    _, info = fit_logreg(x, y, 4, c_grid=(1e-4, 1e-2, 1.0), max_iter=200, seed=0, device="cpu")
    assert info["folds"] == 5 and set(info["cv_accuracy_by_C"]) == {1e-4, 1e-2, 1.0}
    assert all(len(v) == 5 for v in info["cv_fold_accuracy_by_C"].values())
    assert info["cv_accuracy_by_C"][info["C"]] == max(info["cv_accuracy_by_C"].values())
    for C, folds in info["cv_fold_accuracy_by_C"].items():
        assert info["cv_accuracy_by_C"][C] == pytest.approx(np.mean(folds))
    with fold_threads(1):  # the folds one after another: the same bits as side by side
        _, serial = fit_logreg(x, y, 4, c_grid=(1e-4, 1e-2, 1.0), max_iter=200, seed=0, device="cpu")
    assert serial == info


def test_folds_are_stratified_and_shrink_for_small_classes():
    from jerc_eval.probes import stratified_folds

    y = np.array([0] * 12 + [1] * 7 + [2] * 3)
    folds, k = stratified_folds(y, 5)
    assert k == 3  # the smallest class has 3 images
    for c in range(3):
        counts = np.bincount(folds[y == c], minlength=k)
        assert counts.max() - counts.min() <= 1 and counts.min() >= 1


def test_canonical_order_ignores_file_order_and_depends_on_the_seed():
    from jerc_eval.probes import canonical_order

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(50, 4, 4, 3), dtype=np.uint8)
    perm = rng.permutation(50)
    a, b = canonical_order(imgs, 0), canonical_order(imgs[perm], 0)
    np.testing.assert_array_equal(imgs[a], imgs[perm][b])
    assert not np.array_equal(canonical_order(imgs, 0), canonical_order(imgs, 1))


def test_knn_matches_brute_force():
    from jerc_eval.probes import fit_knn

    x, y = _blobs(200, classes=3)
    q = _blobs(50, classes=3, seed=3)[0]
    model, _ = fit_knn(x, y, 3, k=5, temperature=0.1, device="cpu")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sim = qn @ xn.T
    expected = []
    for row in sim:
        idx = np.argsort(-row)[:5]
        votes = np.zeros(3)
        np.add.at(votes, y[idx], np.exp(row[idx] / 0.1))
        expected.append(votes.argmax())
    assert np.array_equal(model.predict(q), np.array(expected))


def test_clean_probe_fits_side_by_side_give_the_bits_of_one_after_another():
    """The pipeline fits the built-in probes side by side on the CPU, one torch thread each (``fit_probes``):
    the same weights as fitting them one after another, and the run's thread count afterwards."""
    from types import SimpleNamespace

    import torch

    from jerc_eval.pipeline import fit_probe, fit_probes

    jobs = []
    for seed in range(4):
        x, y = _blobs(600, d=24, seed=seed)
        jobs.append((x, y, 5, None, None))
    plan = SimpleNamespace(probe=HOST.registry("probes").get("logreg")(), probe_cache=None, cache=None,
                           cfg=SimpleNamespace(seed=0), device="cpu", train_order=None)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        together = fit_probes(plan, jobs)
        assert torch.get_num_threads() == 2
        alone = [fit_probe(plan, *job) for job in jobs]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(together, alone):
        wa, wb = a.predict.__self__, b.predict.__self__
        assert torch.equal(wa.weight, wb.weight) and torch.equal(wa.bias, wb.bias) and a.info["C"] == b.info["C"]
