"""The dominant eigenvalue of the α-Hessian, and the DARTS-ES rule."""
import numpy as np
import pytest
import torch
from torch.func import functional_call, hessian

from dartsnas.autodiff import frozen_batchnorm_stats
from dartsnas.curvature import EarlyStopHessian, dominant_eigenvalue, hessian_vector_product


def _setup(tiny_net):
    net = tiny_net(dtype=torch.float64, nodes=2)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.7)
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (6,), generator=g))
               for _ in range(2)]
    return net, batches


def _dense_hessian(net, batches):
    names = ["alpha_normal", "alpha_reduce"]
    shapes = [net.alpha_normal.shape, net.alpha_reduce.shape]
    sizes = [s.numel() for s in shapes]

    def loss(flat):
        parts = flat.split(sizes)
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return sum(torch.nn.functional.cross_entropy(functional_call(net, params, (x,)), y) for x, y in batches) / 2

    flat = torch.cat([net.alpha_normal.detach().flatten(), net.alpha_reduce.detach().flatten()])
    with frozen_batchnorm_stats(net):
        return hessian(loss)(flat)


def test_dominant_eigenvalue_is_the_largest_eigenvalue_of_the_dense_hessian(tiny_net):
    net, batches = _setup(tiny_net)
    H = _dense_hessian(net, batches)
    assert H.shape == (80, 80)
    v = torch.randn(80, dtype=torch.float64)
    torch.testing.assert_close(hessian_vector_product(net, batches, v), H @ v, rtol=1e-9, atol=1e-12)
    expected = float(torch.linalg.eigvalsh(H.detach()).max())
    got = dominant_eigenvalue(net, batches, steps=30)
    assert expected > 0 and abs(got - expected) / abs(expected) < 1e-3
    before = {k: t.clone() for k, t in net.state_dict().items()}
    state = torch.get_rng_state()
    dominant_eigenvalue(net, batches, steps=5)
    assert all(torch.equal(before[k], t) for k, t in net.state_dict().items())  # BatchNorm statistics kept
    assert torch.equal(torch.get_rng_state(), state)  # the run's random stream is left alone


@pytest.mark.slow
def test_forward_over_reverse_products_are_the_dense_hessian_and_leave_the_model_alone(tiny_net):
    net, batches = _setup(tiny_net)
    H = _dense_hessian(net, batches).detach()
    v = torch.randn(80, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    before = {k: t.clone() for k, t in net.state_dict().items()}
    torch.testing.assert_close(hessian_vector_product(net, batches, v, method="forward"), H @ v, rtol=1e-9, atol=1e-12)
    state = torch.get_rng_state()
    got = dominant_eigenvalue(net, batches, steps=30, hvp="forward")
    expected = float(torch.linalg.eigvalsh(H).max())
    assert abs(got - expected) / abs(expected) < 1e-3
    assert all(torch.equal(before[k], t) for k, t in net.state_dict().items())  # BN statistics kept
    assert all(p.requires_grad for p in net.parameters()) and torch.equal(torch.get_rng_state(), state)


def test_finite_difference_products_converge_to_the_dense_hessian_and_leave_the_model_alone(tiny_net):
    # On a smooth network (softplus, log-sum-exp pooling) the central difference converges as step²;
    # ReLU and max pooling have kinks, whose crossings a finite difference sees (docs/robust-search.md).
    from conftest import make_smooth
    net, batches = _setup(tiny_net)
    make_smooth(net)
    H = _dense_hessian(net, batches).detach()
    v = torch.randn(80, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = H @ v
    before = {k: t.clone() for k, t in net.state_dict().items()}
    errors = []
    for fd_step in (1e-2, 1e-3):
        fd = hessian_vector_product(net, batches, v, method="fd", fd_step=fd_step)
        errors.append(float((fd - exact).norm() / exact.norm()))
    assert errors[1] < 1e-5 and errors[1] < errors[0] / 50  # central differences: O(step²)
    assert all(torch.equal(before[k], t) for k, t in net.state_dict().items())  # α restored, BN statistics kept
    expected = float(torch.linalg.eigvalsh(H).max())
    state = torch.get_rng_state()
    got = dominant_eigenvalue(net, batches, steps=30, hvp="fd", fd_step=1e-3)
    assert abs(got - expected) / abs(expected) < 1e-4
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="method must be one of autograd, forward, fd"):
        hessian_vector_product(net, batches, v, method="lanczos")


@pytest.mark.slow
def test_the_eigenvalue_through_recomputed_cells_is_the_plain_one_and_fd_and_forward_run_in_a_search(tmp_path):
    from dartsnas.train.search import SearchConfig, search
    config = dict(dataset="digits", init_channels=4, layers=3, nodes=2, batch_size=16, steps_per_epoch=2, epochs=1,
                  hessian_every=1, hessian_batches=1, hessian_steps=6)
    runs = {name: search(SearchConfig(**config, **kw), tmp_path / name, quiet=True).metrics[0]
            for name, kw in (("plain", {}), ("lean", dict(recompute="cell")), ("fd", dict(hessian_hvp="fd")),
                             ("forward", dict(hessian_hvp="forward", recompute="edge")))}
    assert runs["plain"]["hessian_eigenvalue"] == runs["lean"]["hessian_eigenvalue"] > 0
    assert runs["forward"]["hessian_eigenvalue"] == pytest.approx(runs["plain"]["hessian_eigenvalue"], rel=1e-4)
    assert runs["plain"]["genotype"] == runs["lean"]["genotype"] == runs["fd"]["genotype"] == runs["forward"]["genotype"]
    assert runs["fd"]["hessian_eigenvalue"] > 0  # an estimate: ReLU's kinks make it larger (see the docs)


def test_darts_es_stops_when_the_local_average_grows_by_the_factor_and_names_the_earlier_epoch():
    rule = EarlyStopHessian()  # window 5, factor 1.3, delta 4, naming epoch 11 or later
    flat = [1.0] * 14
    for epoch, ev in enumerate(flat, 1):
        assert not rule.update(epoch, ev, f"g{epoch}")
    growing = EarlyStopHessian()
    values = [1.0] * 12 + [1.1, 1.3, 1.6, 2.0, 2.5, 3.0]
    stop = None
    for epoch, ev in enumerate(values, 1):
        if growing.update(epoch, ev, f"g{epoch}"):
            stop = epoch
            break
    # local averages are centred (window 5): the newest averaged epoch is 2 behind the newest evaluation.
    # At epoch 16 the comparison (delta 4) would name epoch 10, RobustDARTS's epoch 9 counted from 0,
    # before its es_start_epoch 10: not yet. At epoch 17, mean(epochs 13-17) = (1.1 + 1.3 + 1.6 + 2.0 + 2.5) / 5
    # = 1.7 against mean(epochs 9-13) = 1.02, and epoch 11 (RobustDARTS's 10) is named.
    averages = dict(growing.local_averages())
    assert stop == 17 and growing.stopped["averaged_epoch"] == 15 and growing.stopped["epoch"] == 11
    assert averages[15] == pytest.approx(1.7) and averages[11] == pytest.approx(1.02)
    assert growing.stopped["ratio"] == pytest.approx(1.7 / 1.02, abs=1e-4)
    assert growing.genotypes[growing.stopped["epoch"]] == "g11" and "genotype of epoch 11" in growing.reason()
    # a growth before the start epoch does not count; the state survives a round trip (resume)
    early = EarlyStopHessian(start=10)
    for epoch, ev in enumerate([1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 16.0], 1):
        assert not early.update(epoch, ev, None)
    copy = EarlyStopHessian()
    copy.load_state_dict(growing.state_dict())
    assert copy.stopped == growing.stopped and copy.evaluations == growing.evaluations
    assert copy.update(18, 9.0, "g18")  # once stopped, stays stopped


def robustdarts_stop(eigenvalues, window=5, factor=1.3, es_start_epoch=10, delta=4):
    """RobustDARTS's rule as its code applies it (EVLocalAvg.update, then early_stop on every epoch but the
    last; one evaluation per epoch, epochs counted from 0), restated: the first (epoch, named epoch) at which
    it stops, counted from 0, or None."""
    epochs, averages = len(eigenvalues), []
    for epoch in range(epochs - 1):  # at the last epoch the rule is not applied
        seen = eigenvalues[:epoch + 1]
        if len(seen) < -(-window // 2):
            continue
        averages.append(float(np.mean(seen[max(0, len(seen) - window):])))  # centred on epoch - window // 2
        named = epoch - window // 2 - delta
        if named >= es_start_epoch and averages[-1] / averages[-1 - delta] > factor:
            return epoch, named
    return None


def test_darts_es_defaults_stop_where_robustdarts_code_stops():
    """Random eigenvalue sequences of 50 epochs, one evaluation per epoch: the same stop and the same named
    epoch as RobustDARTS's code with its defaults, including sequences whose growth shows first at epoch 10
    (RobustDARTS's 9, too early for it) and at the last epoch (where it no longer applies the rule)."""
    rng = np.random.default_rng(0)
    kinds = {"early": 0, "last": 0}
    for trial in range(600):
        values = np.exp(np.cumsum(rng.normal(rng.uniform(-0.02, 0.08), rng.uniform(0.02, 0.3), 50))).tolist()
        if trial % 3 == 0:  # flat, then growth for the rule to see at the last epoch only
            values = [1.0] * 45 + [1.0, 1.0, 1.5, 2.0, 4.0]
            values = [v * (1 + 0.01 * rng.standard_normal()) for v in values]
        expected = robustdarts_stop(values)
        rule = EarlyStopHessian(last_epoch=len(values))
        got = None
        for epoch, ev in enumerate(values, 1):
            if rule.update(epoch, ev, epoch):
                got = (rule.stopped["at"] - 1, rule.stopped["epoch"] - 1)
                break
        assert got == expected, (trial, values)
        old = EarlyStopHessian(start=10)  # the former defaults: counted from 1, applied at the last epoch
        stopped_old = next((e for e, ev in enumerate(values, 1) if old.update(e, ev, e)), None)
        if stopped_old is not None and got is None and stopped_old == len(values):
            kinds["last"] += 1
        elif stopped_old is not None and (got is None or old.stopped["epoch"] - 1 != got[1]) and old.stopped["epoch"] == 10:
            kinds["early"] += 1
    assert kinds["last"] > 0 and kinds["early"] > 0  # both differences were exercised


def test_darts_es_leaves_the_last_epoch_alone():
    values = [1.0] * 22 + [3.0]  # mean(epochs 19-23) = 1.4 against 1.0: enough only once epoch 23 is in
    rule = EarlyStopHessian(last_epoch=len(values))
    assert not any(rule.update(e, ev, e) for e, ev in enumerate(values, 1)) and rule.stopped is None
    longer = EarlyStopHessian(last_epoch=len(values) + 1)
    assert any(longer.update(e, ev, e) for e, ev in enumerate(values, 1)) and longer.stopped["at"] == 23


@pytest.mark.slow
def test_search_records_the_eigenvalue_stops_early_and_resumes_with_the_rule_state(tmp_path, monkeypatch):
    """The plumbing, with a synthetic eigenvalue sequence (the rule and the eigenvalue are tested above)."""
    import json

    import dartsnas.curvature
    from dartsnas.train.search import SearchConfig, search
    sequence = [1.0] * 5 + [1.5, 2.5, 4.0, 6.0, 9.0, 12.0, 15.0]
    monkeypatch.setattr(dartsnas.curvature, "dominant_eigenvalue",
                        lambda model, batches, **kw: sequence[len(batches_seen.append(1) or batches_seen) - 1])
    batches_seen = []
    config = SearchConfig(dataset="digits", init_channels=4, layers=3, nodes=2, batch_size=16, steps_per_epoch=1,
                          epochs=12, hessian_every=1, hessian_batches=1, early_stop="hessian", es_start=2)
    whole = search(config, tmp_path / "whole", quiet=True)
    records = whole.metrics
    assert [r["hessian_eigenvalue"] for r in records] == sequence[:len(records)]
    stop = whole.early_stop
    assert stop is not None and len(records) == stop["at"] < 12 and records[-1]["early_stop"] == stop
    assert whole.genotype.to_dict() == records[stop["epoch"] - 1]["genotype"]
    assert json.loads((tmp_path / "whole" / "genotype.json").read_text()) == records[stop["epoch"] - 1]["genotype"]
    # preempted after 5 epochs (SIGTERM: checkpoint after the next step), resumed: the rule's state comes
    # back and the same epoch is named
    import signal

    from dartsnas.errors import Interrupted
    from dartsnas.train.search import Search
    batches_seen.clear()
    run = Search(config, tmp_path / "cut", quiet=True)
    record = run.curvature.epoch_end

    def preempt_after_five(run, epoch_record):
        record(run, epoch_record)
        if run.epoch == 5:
            run.stop_signal = signal.SIGTERM
    run.curvature.epoch_end = preempt_after_five
    with pytest.raises(Interrupted):
        run.execute()
    resumed = search(config, tmp_path / "cut", resume=True, quiet=True)
    assert resumed.early_stop == stop and resumed.genotype == whole.genotype
    timings = ("seconds", "images_per_s", "hessian_seconds")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timings} for r in rs]  # noqa: E731
    assert strip(resumed.metrics) == strip(records)
    assert search(config, tmp_path / "cut", resume=True, quiet=True).genotype == whole.genotype  # stays stopped


def test_early_stop_needs_the_eigenvalue(tmp_path):
    from dartsnas.errors import ConfigError
    from dartsnas.train.search import SearchConfig, search
    with pytest.raises(ConfigError, match="early_stop hessian watches the dominant eigenvalue: give hessian_every N"):
        search(SearchConfig(dataset="digits", early_stop="hessian"), tmp_path / "r", quiet=True)
