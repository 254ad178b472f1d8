"""The methods that fixed DARTS's selection: β-DARTS's Beta-Decay term, DrNAS's Dirichlet sampler, DARTS-PT's
perturbation-based selection; each on its rule, then in a search."""
import dataclasses
import json
import math
import signal
from types import SimpleNamespace

import pytest
import torch

from dartsnas.architect import Architect
from dartsnas.errors import CheckpointError, ConfigError, Interrupted
from dartsnas.methods.beta_decay import beta_decay, beta_decay_weight
from dartsnas.methods.drnas import DirichletSampler, Drnas, concentration, dirichlet_kl
from dartsnas.methods.pt import PerturbationSelection, Projection, node_edges
from dartsnas.train.checkpoint import load_checkpoint
from dartsnas.train.nb201 import NB201Search, NB201SearchConfig
from dartsnas.train.search import Search, SearchConfig, derive_from_checkpoint


def _nb201(**kw):
    return NB201SearchConfig(**{"dataset": "digits", "init_channels": 4, "layers": 1, "batch_size": 16,
                                "steps_per_epoch": 2, "epochs": 1, "checkpoint_every": 100, **kw})


# -- β-DARTS ---------------------------------------------------------------------------------------


def test_beta_decay_value_gradient_and_schedule():
    a = torch.tensor([[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[1.0, 1.0, -3.0]], dtype=torch.float64, requires_grad=True)
    by_hand = (math.log(sum(math.exp(v) for v in (0.3, -1.0, 2.0))) + math.log(sum(math.exp(v) for v in (0.0, 0.5, -0.2)))) / 2
    by_hand += math.log(2 * math.e + math.exp(-3.0))
    assert float(beta_decay([a, b]).detach()) == pytest.approx(by_hand, rel=1e-12)
    grad = torch.autograd.grad(beta_decay([a, b]), a)[0]
    torch.testing.assert_close(grad, torch.softmax(a.detach(), -1) / 2)  # λ·softmax(α)/edges
    eps, fd = 1e-6, torch.zeros_like(a)
    for i in range(2):
        for j in range(3):
            d = torch.zeros_like(a)
            d[i, j] = eps
            fd[i, j] = (beta_decay([a.detach() + d, b]) - beta_decay([a.detach() - d, b])) / (2 * eps)
    torch.testing.assert_close(grad, fd, atol=1e-8, rtol=1e-6)
    assert [beta_decay_weight(e) for e in (0, 1, 99)] == [0.0, 0.5, 49.5]  # the authors' 50·epoch/100


def test_beta_decay_joins_the_alpha_step(tiny_net):
    from dartsnas.methods.beta_decay import BetaDecay
    net = tiny_net(dtype=torch.float64)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    arch = Architect(net, opt, order="first")
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (4,), generator=g))
    plain = arch.alpha_grad(batch, batch, 0.1)
    method = BetaDecay(SimpleNamespace(beta_decay_slope=0.5, epochs=10))
    run = SimpleNamespace(model=net, architect=arch, epoch=4)
    method.attach(run)
    method.epoch_start(run, {})
    before = [p.detach().clone() for p in (net.alpha_normal, net.alpha_reduce)]
    grads = arch.step(batch, batch, 0.1)
    assert method.weight == 2.0  # λ = 0.5 x epoch 4
    for a, g0, g1 in zip(before, plain, grads):  # the term's gradient: λ·softmax(α)/edges, per cell
        torch.testing.assert_close(g1 - g0, 2.0 * torch.softmax(a, -1) / a.shape[0])


# -- DrNAS -----------------------------------------------------------------------------------------


def test_dirichlet_sample_mean_pathwise_gradient_and_stream():
    alpha = torch.tensor([[0.5, -0.3, 1.2, 0.0]], dtype=torch.float64, requires_grad=True)
    beta = concentration(alpha)
    torch.testing.assert_close(beta, torch.nn.functional.elu(alpha) + 1)
    sampler = DirichletSampler(seed=3)
    draws = torch.stack([sampler.sample(alpha)[0] for _ in range(4000)])
    assert draws.shape == (4000, 1, 4) and torch.allclose(draws.sum(-1), torch.ones(4000, 1, dtype=torch.float64))
    mean = (beta / beta.sum()).detach()
    torch.testing.assert_close(draws.mean(0), mean, atol=0.01, rtol=0)  # E[w] = β / Σβ
    # the pathwise gradient of E[w_0] matches the mean's gradient
    grad = torch.autograd.grad(draws.mean(0)[0, 0], alpha)[0]
    exact = torch.autograd.grad((concentration(alpha) / concentration(alpha).sum())[0, 0], alpha)[0]
    torch.testing.assert_close(grad, exact, atol=0.02, rtol=0)
    # its own stream: seeded, resumable, the global one untouched
    a, b = DirichletSampler(seed=9), DirichletSampler(seed=9)
    before = torch.get_rng_state()
    first = a.sample(alpha)[0]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, b.sample(alpha)[0])
    c = DirichletSampler(seed=0)
    c.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(alpha)[0], c.sample(alpha)[0])


def test_dirichlet_kl_by_hand():
    alpha = torch.tensor([[0.4, -0.5, 1.5]], dtype=torch.float64)
    beta = [float(v) for v in concentration(alpha)[0]]
    s = sum(beta)
    psi = lambda v: float(torch.digamma(torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    by_hand = (math.lgamma(s) - sum(math.lgamma(v) for v in beta) - math.lgamma(3)
               + sum((v - 1) * (psi(v) - psi(s)) for v in beta))
    assert float(dirichlet_kl([alpha, alpha])) == pytest.approx(2 * by_hand, rel=1e-10)
    assert float(dirichlet_kl([torch.zeros(2, 3, dtype=torch.float64)])) == pytest.approx(0.0, abs=1e-12)  # β = 1: the prior


def test_drnas_rules_and_kl_attach(tiny_net):
    with pytest.raises(ConfigError, match="order"):
        SearchConfig(sampler="dirichlet", order="second").validate()
    with pytest.raises(ConfigError, match="progressive"):
        SearchConfig(sampler="dirichlet", progressive=True).validate()
    net = tiny_net(dtype=torch.float64)
    arch = Architect(net, torch.optim.SGD(net.weight_parameters(), lr=0.1), order="first")
    method = Drnas(SearchConfig(sampler="dirichlet", dirichlet_reg="kl", dirichlet_kl=0.5))
    method.attach(SimpleNamespace(model=net, architect=arch))
    assert net.sampler is method.sampler and arch.optimizer.param_groups[0]["weight_decay"] == 0.0
    torch.testing.assert_close(arch.terms[0](), 0.5 * dirichlet_kl([net.alpha_normal, net.alpha_reduce]))
    # every forward pass mixes with a fresh draw (train and eval), the genotype stays softmax(α)'s
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert not torch.equal(net(x), net(x))


def test_drnas_and_beta_darts_searches_are_reproducible(tmp_path):
    for m, flags in enumerate(({"sampler": "dirichlet"}, {"regularizer": "beta-decay", "epochs": 2})):
        runs = [NB201Search(_nb201(**flags), tmp_path / f"{m}{k}", quiet=True).execute() for k in (0, 1)]
        a, b = ((tmp_path / f"{m}{k}" / "metrics.jsonl").read_text().splitlines() for k in (0, 1))
        assert [json.loads(x)["alphas"] for x in a] == [json.loads(x)["alphas"] for x in b]
        assert runs[0].genotype == runs[1].genotype
        if "regularizer" in flags:
            assert [json.loads(x)["beta_decay_weight"] for x in a] == [0.0, 0.5]


# -- DARTS-PT --------------------------------------------------------------------------------------


def test_projection_weights():
    p = Projection(3, ("normal",))
    w = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]], requires_grad=True)
    p.decided["normal"][1] = 0
    p.removed["normal"][2] = True
    p.trial = ("normal", 0, 1)
    out = p.apply(w, "normal")
    torch.testing.assert_close(out, torch.tensor([[0.2, 0.0, 0.3], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))  # no renormalising
    p.trial = ("normal", 0, None)
    assert float(p.apply(w, "normal")[0].sum().detach()) == 0.0
    assert p.apply(w, "reduce") is w  # the other cell as it is
    assert [list(r) for r in node_edges(3)] == [[0, 1], [2, 3, 4], [5, 6, 7, 8]]


def _selection(scores, nodes=3, ops=3, crit="acc"):
    """A selection over a stand-in network whose measurement returns ``scores[trial]``."""
    edges = sum(i + 2 for i in range(nodes))
    model = SimpleNamespace(alpha_normal=torch.zeros(edges, ops), alpha_reduce=None, cell_inputs=2,
                            config=SimpleNamespace(nodes=nodes))
    run = SimpleNamespace(model=model)
    method = PerturbationSelection(SimpleNamespace(seed=0, pt_crit=crit, pt_batches=None))
    method.attach(run)
    method.measure = lambda run, trial: scores(trial)
    return method, run


def test_pt_keeps_the_op_whose_removal_hurts_most_and_the_inputs_whose_removal_hurts():
    # removing op 2 of any edge drops accuracy most (0.1); ops 0 and 1 tie at 0.5 elsewhere
    method, run = _selection(lambda t: 0.1 if t[2] == 2 else 0.5)
    edges = run.model.alpha_normal.shape[0]
    taken = [method.decide(run, "normal", step) for step in range(edges)]
    assert sorted(t["edge"] for t in taken) == list(range(edges))  # every edge once, in the drawn order
    assert all(t["op"] == 2 for t in taken) and method.projection.decided["normal"] == [2] * edges
    assert [t["edge"] for t in taken] != list(range(edges))  # a random order, not the edges' order
    method, run = _selection(lambda t: 0.5)
    assert method.decide(run, "normal", 0)["op"] == 0  # a tie keeps the first op
    method, run = _selection(lambda t: 0.9 if t[2] == 1 else 0.5, crit="loss")
    assert method.decide(run, "normal", 0)["op"] == 1  # by loss: the highest loss without it
    # topology: node 2 (edges 5..8): removing edge 6 or 8 hurts (0.2), 5 and 7 barely (0.8, 0.7)
    method, run = _selection(lambda t: {5: 0.8, 6: 0.2, 7: 0.7, 8: 0.2}.get(t[1], 0.5))
    method.projection.decided["normal"] = [0] * 9
    decisions = [method.decide(run, "normal", 9 + k) for k in range(2)]
    by_node = {d["node"]: d for d in decisions}
    assert by_node[2]["kept"] == [6, 8] and by_node[2]["dropped"] == [5, 7]
    assert by_node[1]["dropped"] == [4]  # 2, 3, 4 tie at 0.5: the later edge goes
    assert method.projection.removed["normal"] == [False] * 4 + [True, True, False, True, False]


def test_pt_search_nb201_selects_resumes_and_derives(tmp_path):
    config = _nb201(select="pt", pt_interval=1, pt_batches=1)
    whole = NB201Search(config, tmp_path / "whole", quiet=True).execute()
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 + 6 and [r.get("pt_decided") for r in records] == [None, 1, 2, 3, 4, 5, 6]
    assert all(r["lr"] == pytest.approx(config.lr / 10) for r in records[1:])
    decided = load_checkpoint(tmp_path / "whole")["pt"]["decided"]["normal"]
    ops = config.ops
    assert [op for op, _ in whole.genotype.edges] == [ops[k] for k in decided]
    for r in records[1:]:  # each decision's op is the one whose removal scored lowest
        (d,) = r["pt"]
        assert d["step"] == r["epoch"] - 2
        assert None not in d["scores"]  # every op tried, none included
        assert d["op"] == min(range(len(d["scores"])), key=lambda k: (d["scores"][k], k))
    assert derive_from_checkpoint(tmp_path / "whole") == whole.genotype

    original = PerturbationSelection.epoch_start

    def stop_mid_selection(self, run, record):
        original(self, run, record)
        if run.epoch == config.epochs + 2:
            run.stop_signal = signal.SIGTERM  # preempted inside the selection's third epoch

    PerturbationSelection.epoch_start = stop_mid_selection
    try:
        with pytest.raises(Interrupted):
            NB201Search(config, tmp_path / "cut", quiet=True).execute()
    finally:
        PerturbationSelection.epoch_start = original
    assert load_checkpoint(tmp_path / "cut")["in_epoch"] is not None
    resumed = NB201Search(dataclasses.replace(config), tmp_path / "cut", resume=True, quiet=True).execute()
    assert resumed.genotype == whole.genotype
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "images_per_s")}  # noqa: E731
                       for x in p.read_text().splitlines()]
    assert strip(tmp_path / "cut" / "metrics.jsonl") == strip(tmp_path / "whole" / "metrics.jsonl")


@pytest.mark.slow
def test_derive_method_pt_on_a_finished_pc_darts_search(tmp_path):
    from dartsnas.cli import main
    from dartsnas.train.pt import select_pt
    config = SearchConfig(dataset="digits", init_channels=4, layers=3, nodes=2, batch_size=16, steps_per_epoch=2,
                          epochs=1, partial_channels=2, checkpoint_every=100)
    run = tmp_path / "search"
    Search(config, run, quiet=True).execute()
    before = (run / "metrics.jsonl").read_text(), (run / "genotype.json").read_text()
    genotype = select_pt(run, quiet=True, pt_interval=1, pt_batches=1)
    assert ((run / "metrics.jsonl").read_text(), (run / "genotype.json").read_text()) == before  # the search untouched
    state = load_checkpoint(run / "pt")
    assert state["config"]["select"] == "pt" and state["epoch"] == 1 + (5 + 1 - 1) + 1  # 5 edges, 1 node to choose
    for cell in ("normal", "reduce"):
        removed = state["pt"]["removed"][cell]
        for span in node_edges(2):
            assert sum(not removed[e] for e in span) == 2  # every node keeps two inputs
        kept = [e for e in range(5) if not removed[e]]
        inputs = [j for span in node_edges(2) for j, e in enumerate(span) if not removed[e]]
        assert [i for _, i in getattr(genotype, cell)] == inputs
        assert [op for op, _ in getattr(genotype, cell)] == [config.ops[state["pt"]["decided"][cell][e]] for e in kept]
    tried = [d["scores"] for d in state["pt"]["decisions"] if "edge" in d]
    assert tried and all(s[config.ops.index("none")] is None and None not in s[1:] for s in tried)
    assert json.loads((run / "pt" / "genotype.json").read_text()) == genotype.to_dict()
    assert main(["derive", str(run), "--method", "pt", "--pt-batches", "2"]) == 1  # another setting than it began with
    assert select_pt(run, quiet=True) == genotype  # run again: finished, the same answer
    with pytest.raises(ConfigError, match="already selected"):
        select_pt(run / "pt", tmp_path / "again")


def test_pt_refusals(tmp_path):
    with pytest.raises(ConfigError, match="GDAS"):
        SearchConfig(select="pt", sampler="gdas").validate()
    with pytest.raises(ConfigError, match="progressive"):
        SearchConfig(select="pt", progressive=True).validate()
    from dartsnas.train.pt import select_pt
    config = _nb201(epochs=2)
    run = NB201Search(config, tmp_path / "short", quiet=True)
    run.stop_signal = signal.SIGTERM
    with pytest.raises(Interrupted):
        run.execute()
    with pytest.raises(CheckpointError, match="finish it first"):
        select_pt(tmp_path / "short")
