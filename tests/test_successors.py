"""DARTS's successors: GDAS's sampled search (--sampler gdas) and P-DARTS's progressive one (--progressive)."""
import json
import math
import signal

import pytest
import torch
from torch import nn

from dartsnas.architect import Architect
from dartsnas.cli import main
from dartsnas.errors import ConfigError, Interrupted
from dartsnas.genotype import SKIP_OP
from dartsnas.nn import Choice
from dartsnas.ops import DARTS_OPS
from dartsnas.spaces import ConvSearchSpaceConfig, SearchCell, SearchNetwork
from dartsnas.methods.gdas import GumbelSampler, gdas_tau
from dartsnas.train.checkpoint import load_checkpoint
from dartsnas.methods.pdarts import pdarts_skip_dropout
from dartsnas.train.search import Search, SearchConfig, derive_from_checkpoint, search
from dartsnas.train.search_model import search_model

TINY = dict(dataset="digits", init_channels=4, nodes=2, batch_size=16, steps_per_epoch=2)
STAGES = dict(progressive=True, stage_layers=(3, 4), stage_ops=(8, 3), stage_dropout=(0.2, 0.5), stage_epochs=2,
              stage_warmup=1)
TIMINGS = ("seconds", "images_per_s")


def strip(records):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


# -- GDAS ------------------------------------------------------------------------------------------


def test_gumbel_draws_follow_softmax_alpha_whatever_tau_and_weigh_one_op_forward():
    alpha = torch.tensor([[1.0, 0.0, -1.0, 0.5], [0.0, 0.0, 2.0, -2.0]])
    n = 40000
    draws = {}
    for tau in (10.0, 0.1):
        weights, index = GumbelSampler(seed=3, tau=tau).sample(alpha.repeat(n, 1))
        assert torch.equal(weights.detach(), nn.functional.one_hot(index, 4).float())  # forward: exactly one op
        draws[tau] = index.view(n, 2)
    # argmax(log softmax(α) + g) does not depend on τ: the same noise picks the same ops
    assert torch.equal(draws[10.0], draws[0.1])
    for row in range(2):
        freq = torch.bincount(draws[10.0][:, row], minlength=4).float() / n
        expected = torch.softmax(alpha[row], 0)
        # 4.5 standard errors of a frequency around 0.3 with 40000 draws is 0.010
        assert (freq - expected).abs().max() < 0.0105, (freq, expected)
    # outside training: argmax α, no noise drawn
    sampler = GumbelSampler(seed=3)
    before = sampler.generator.get_state()
    weights, index = sampler.sample(alpha, training=False)
    assert index.tolist() == [0, 2] and torch.equal(sampler.generator.get_state(), before)


def test_gdas_tau_anneals_linearly_from_tau_max_to_tau_min():
    assert [round(gdas_tau(e, 5, 10.0, 0.1), 6) for e in range(5)] == [10.0, 7.525, 5.05, 2.575, 0.1]


def test_gdas_alpha_gradient_is_the_hand_computed_straight_through_one_on_a_small_cell():
    """One node, two edges from the cell's inputs: the loss <c, edge0 + edge1>. Edge e computes only
    op k_e, as op_k(x) h_k (GDAS's DARTS-space MixedOp.forward_gdas): the gradient w.r.t. its weights h is
    <c, op_k(x)> for k_e and 0 for the others (the NAS-Bench-201 cell's form would give them the sum of
    c); then through p = softmax((log softmax(α) + g)/τ)."""
    torch.manual_seed(0)
    C, tau = 4, 2.5
    cell = SearchCell(1, C, C, C, reduction=False, reduction_prev=False, op_names=(DARTS_OPS,) * 2).double()
    cell.train()
    alpha = (0.5 * torch.randn(2, len(DARTS_OPS), dtype=torch.float64)).requires_grad_()
    s0, s1 = torch.randn(2, C, 5, 5, dtype=torch.float64), torch.randn(2, C, 5, 5, dtype=torch.float64)
    c = torch.randn(2, C, 5, 5, dtype=torch.float64)
    weights, index = GumbelSampler(seed=7, tau=tau).sample(alpha)
    loss = (c * cell(s0, s1, weights, index=index.tolist())).sum()
    loss.backward()

    # by hand: the same noise, the preprocessed inputs, one op per edge
    noise = torch.empty(alpha.shape, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(7))
    g = -noise.log()
    s = torch.softmax(alpha.detach(), -1)
    p = torch.softmax((torch.log_softmax(alpha.detach(), -1) + g) / tau, -1)
    assert torch.equal(p.argmax(-1), index)
    with torch.no_grad():
        inputs = [cell.preprocess0(s0), cell.preprocess1(s1)]
        expected = torch.zeros_like(alpha)
        for e in range(2):
            k = int(index[e])
            u = torch.zeros(len(DARTS_OPS), dtype=torch.float64)  # dL/dh: the others are not in the output
            u[k] = (c * cell.edges[e].ops[k](inputs[e])).sum()
            v = p[e] * (u - (u * p[e]).sum())          # through the softmax over z
            expected[e] = (v - s[e] * v.sum()) / tau   # through z = (log softmax(α) + g) / τ
    torch.testing.assert_close(alpha.grad, expected, rtol=1e-9, atol=1e-12)


def _op_calls(model, x):
    """How many candidate ops one forward pass computes (pre-activated ops skip __call__: count _op)."""
    calls = []
    for cell in model.cells:
        for edge in cell.edges:
            edge._op = lambda i, *a, _op=edge._op: calls.append(i) or _op(i, *a)
    model(x)
    for cell in model.cells:
        for edge in cell.edges:
            del edge._op
    return len(calls)


def test_a_gdas_forward_pass_computes_one_op_per_edge_darts_all_of_them():
    torch.manual_seed(0)
    space = dict(init_channels=4, layers=3, nodes=2, num_classes=10, in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    gdas = SearchNetwork(ConvSearchSpaceConfig(**space))
    gdas.sampler = GumbelSampler(seed=13)  # what the GDAS method attaches
    darts = SearchNetwork(ConvSearchSpaceConfig(**space))
    edges = 3 * 5  # 3 cells of 5 edges
    assert _op_calls(gdas, x) == edges
    assert _op_calls(darts, x) == edges * (len(DARTS_OPS) - 1)  # 'none' is skipped: it adds 0
    gdas.eval()  # evaluation: argmax α on every edge, no noise
    state = gdas.sampler.generator.get_state()
    assert _op_calls(gdas, x) == edges and torch.equal(gdas.sampler.generator.get_state(), state)


@pytest.fixture(scope="module")
def gdas_runs(tmp_path_factory):
    """A GDAS search run whole, and the same run stopped after its first step of epoch 2 and resumed."""
    tmp = tmp_path_factory.mktemp("gdas")
    config = SearchConfig(**TINY, layers=3, epochs=3, sampler="gdas", checkpoint_every=100)
    whole = search(config, tmp / "whole", quiet=True)
    cut = Search(config, tmp / "cut", quiet=True)
    start = cut.epoch_start

    def preempt_in_epoch_two():
        if cut.epoch == 1:
            cut.stop_signal = signal.SIGTERM  # as if preempted: a checkpoint after the next step
        return start()
    cut.epoch_start = preempt_in_epoch_two
    with pytest.raises(Interrupted):
        cut.execute()
    stopped = load_checkpoint(tmp / "cut")
    resumed = search(config, tmp / "cut", resume=True, quiet=True)
    return whole, resumed, stopped, tmp


def test_gdas_search_anneals_tau_and_resumes_mid_epoch_bit_identically(gdas_runs):
    whole, resumed, stopped, tmp = gdas_runs
    assert [r["tau"] for r in whole.metrics] == [10.0, 5.05, 0.1]
    assert stopped["epoch"] == 1 and stopped["in_epoch"]["step"] == 1 and "generator" in stopped["sampler"]
    assert strip(resumed.metrics) == strip(whole.metrics) and resumed.genotype == whole.genotype
    a, b = load_checkpoint(tmp / "whole"), load_checkpoint(tmp / "cut")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["sampler"]["generator"], b["sampler"]["generator"])


def test_gdas_config_errors_name_the_flags(tmp_path, capsys):
    assert main(["search", "cnn", *("--dataset digits --sampler gdas --order second --out".split()),
                 str(tmp_path / "a")]) == 1
    assert "--sampler gdas needs --order first" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="tau_min 5.0 is above tau_max 1.0"):
        SearchConfig(sampler="gdas", tau_max=1.0, tau_min=5.0).validate()
    with pytest.raises(ConfigError, match="sampler gdas and progressive do not combine"):
        SearchConfig(sampler="gdas", progressive=True).validate()


class Picks(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.a = Choice({"lin": nn.Linear(6, 6), "act": nn.Tanh(), "id": nn.Identity()}, key="shared")
        self.b = Choice({"lin": nn.Linear(6, 6), "act": nn.Tanh(), "id": nn.Identity()}, key="shared")
        self.c = Choice([nn.Linear(6, 3), nn.Sequential(nn.ReLU(), nn.Linear(6, 3))])

    def forward(self, x):
        return self.c(self.b(self.a(self.stem(x))))


def test_search_model_gdas_runs_one_candidate_per_choice_with_shared_keys_drawn_once(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(96, 4), torch.randint(0, 3, (96,))
    data = torch.utils.data.TensorDataset(x, y)
    result = search_model(Picks(), data, out_dir=tmp_path / "run", epochs=2, batch_size=16, sampler="gdas",
                          tau_max=4.0, tau_min=1.0, quiet=True)
    assert [r["tau"] for r in result.metrics] == [4.0, 1.0]
    space = result.model
    ran = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, key=(name, label): ran.__setitem__(key, 1))
             for name in ("a", "b", "c") for label, m in getattr(space.model, name).candidates.items()]
    space.train()
    for _ in range(20):
        ran.clear()
        loss = space.loss(x[:8], y[:8])
        assert sum(1 for name, _ in ran if name == "c") == 1  # one candidate computed
        assert [label for name, label in ran if name == "a"] == [label for name, label in ran if name == "b"]
    for h in hooks:
        h.remove()
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in space.arch_parameters())
    assert all(m.sampled is None for m in (space.model.a, space.model.b, space.model.c))  # cleared after the pass
    assert json.loads((tmp_path / "run" / "choices.json").read_text()) == result.choices


# -- P-DARTS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def progressive_run(tmp_path_factory):
    """A two-stage P-DARTS search (3 then 4 cells, 8 then 3 ops, 2 epochs each with 1 of warm-up),
    recording the epochs in which α moved."""
    tmp = tmp_path_factory.mktemp("pdarts")
    moved = []
    step = Architect.step

    def spy(self, *args, **kwargs):
        moved.append(run.epoch)
        return step(self, *args, **kwargs)
    Architect.step = spy
    try:
        run = Search(SearchConfig(**TINY, **STAGES), tmp / "run", quiet=True)
        result = run.execute()
    finally:
        Architect.step = step
    return result, sorted(set(moved)), tmp / "run"


def test_progressive_search_prunes_the_strongest_ops_between_stages_of_growing_depth(progressive_run):
    result, moved, run = progressive_run
    records = result.metrics
    assert [(r["epoch"], r["stage"], r["layers"]) for r in records] == [(1, 1, 3), (2, 1, 3), (3, 2, 4), (4, 2, 4)]
    assert moved == [1, 3]  # α is frozen in each stage's first (warm-up) epoch
    assert [r["lr"] for r in records][::2] == [0.025, 0.025]  # the cosine schedule restarts with each stage
    assert [r["skip_dropout"] for r in records] == [round(pdarts_skip_dropout(p, e, 2, 1), 6)
                                                    for p in (0.2, 0.5) for e in range(2)]
    stages = json.loads((run / "stages.json").read_text())
    assert [(s["stage"], s["layers"], s["ops_per_edge"], s["epochs"]) for s in stages] == \
        [(1, 3, 8, [1, 2]), (2, 4, 3, [3, 4])]
    for cell in ("normal", "reduce"):
        first, kept = stages[0]["edge_ops"][cell], stages[1]["edge_ops"][cell]
        assert all(ops == list(DARTS_OPS) for ops in first)
        for e, ops in enumerate(kept):  # the 3 of largest softmax(α) when stage 1 ended, in the op set's order
            weights = records[1]["alphas"][cell][e]
            top = sorted(sorted(range(8), key=lambda k: -weights[k])[:3])
            assert ops == [DARTS_OPS[k] for k in top]
        assert len(records[-1]["alphas"][cell][0]) == 3
    # the final genotype: the last stage's ops, --max-skip 2 by default, as `derive` gives it again
    config = SearchConfig(**TINY, **STAGES)
    assert config.max_skip == 2 and config.epochs == 4
    assert sum(op == SKIP_OP for op, _ in result.genotype.normal) <= 2
    assert all(op in sum(stages[1]["edge_ops"]["normal"], []) for op, _ in result.genotype.normal)
    assert derive_from_checkpoint(run / "checkpoint.pt") == result.genotype
    assert json.loads((run / "genotype.json").read_text()) == result.genotype.to_dict()


def test_progressive_search_plots_its_stages(progressive_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, run = progressive_run
    assert main(["plot", str(run), "--alphas", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a_normal.png").stat().st_size > 1000 and (tmp_path / "a_reduce.png").is_file()


def test_progressive_search_resumes_mid_stage_bit_identically(progressive_run, tmp_path):
    whole, _, run_dir = progressive_run
    config = SearchConfig(**TINY, **STAGES, checkpoint_every=100)
    cut = Search(config, tmp_path / "cut", quiet=True)
    start = cut.epoch_start

    def preempt_in_stage_two():
        record = start()
        if cut.epoch == 2:
            cut.stop_signal = signal.SIGTERM  # stops after the first step of epoch 3, the new stage's first
        return record
    cut.epoch_start = preempt_in_stage_two
    with pytest.raises(Interrupted):
        cut.execute()
    stopped = load_checkpoint(tmp_path / "cut")
    assert stopped["stage"] == 1 and stopped["in_epoch"]["step"] == 1 and len(stopped["edge_ops"]["normal"][0]) == 3
    resumed = search(config, tmp_path / "cut", resume=True, quiet=True)
    assert strip(resumed.metrics) == strip(whole.metrics) and resumed.genotype == whole.genotype
    a, b = load_checkpoint(run_dir), load_checkpoint(tmp_path / "cut")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert (tmp_path / "cut" / "stages.json").read_text() == (run_dir / "stages.json").read_text()


@pytest.mark.parametrize("options", [dict(order="second"), dict(order="exact"), dict(partial_channels=2),
                                     dict(regularizer="darts-minus")], ids=["second", "exact", "pc-darts", "darts-minus"])
def test_progressive_search_runs_with_every_order_and_partial_channels(tmp_path, options):
    config = SearchConfig(**{**TINY, "steps_per_epoch": 1}, **{**STAGES, "stage_epochs": 1, "stage_warmup": 0},
                          **options)
    result = search(config, tmp_path / "run", quiet=True)
    assert [r["layers"] for r in result.metrics] == [3, 4]
    assert all(len(row) == 3 for row in result.metrics[-1]["alphas"]["normal"])
    if options.get("partial_channels"):
        assert len(result.metrics[-1]["edge_weights"]["normal"]) == 5
    if options.get("regularizer"):  # the auxiliary skip's weight reaches each stage's network
        assert [r["aux_skip_beta"] for r in result.metrics] == [1.0, 0.5]  # over the run, not per stage


def test_progressive_config_errors_name_the_flags(tmp_path, capsys):
    assert main(["search", "cnn", "--dataset", "digits", "--progressive", "--epochs", "30", "--out",
                 str(tmp_path / "a")]) == 1
    assert "--epochs 30 with --progressive: the run's epochs are 3 stages x --stage-epochs 25 = 75" in \
        capsys.readouterr().err
    assert SearchConfig(progressive=True, epochs=75).epochs == 75
    cases = [(dict(stage_ops=(8, 5)), "need one value per stage"),
             (dict(stage_ops=(7, 5, 3)), r"stage_ops \[7, 5, 3\] must start at the op set's 8"),
             (dict(stage_ops=(8, 3, 5)), "shrink"),
             (dict(stage_warmup=25), "stage_warmup 25 leaves α no epoch"),
             (dict(stage_dropout=(0.1, 1.0, 0.2)), r"stage_dropout must lie in \[0, 1\)"),
             (dict(cost="macs", cost_target=1e6), "progressive and cost do not combine"),
             (dict(arch_start_epoch=3), "each stage warms up for stage_warmup epochs"),
             (dict(ops=("s1",), stage_ops=(2, 2, 1)), "a named per-edge set")]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            SearchConfig(progressive=True, **options).validate()


def test_p_darts_skip_dropout_falls_over_warmup_then_decays_exponentially():
    assert pdarts_skip_dropout(0.4, 0, 25, 10) == pytest.approx(0.4 * 24 / 25)
    assert pdarts_skip_dropout(0.4, 9, 25, 10) == pytest.approx(0.4 * 15 / 25)
    assert pdarts_skip_dropout(0.4, 10, 25, 10) == pytest.approx(0.4)
    assert pdarts_skip_dropout(0.4, 15, 25, 10) == pytest.approx(0.4 * math.exp(-1.0))


def test_skip_dropout_drops_the_identity_only_in_training():
    torch.manual_seed(0)
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, nodes=2, in_channels=1,
                                              ops=("skip_connect", "max_pool_3x3")))
    net.set_skip_dropout(0.5)
    edge = net.cells[0].edges[0]
    x = torch.ones(2, 4, 6, 6)
    w = torch.tensor([1.0, 0.0])
    edge.train()
    y = edge(x, w)
    assert set(y.unique().tolist()) == {0.0, 2.0}  # inverted dropout on the identity
    edge.eval()
    assert torch.equal(edge(x, w), x)


# -- the protocol names the method of each candidate -----------------------------------------------


def test_select_names_each_candidates_method(tmp_path):
    from dartsnas.methods import method_name as search_method
    from dartsnas.protocol import candidate_method, leaderboard, markdown_table
    assert search_method({"progressive": True}) == "p-darts"
    assert search_method({"sampler": "gdas"}) == "gdas"
    assert search_method({"partial_channels": 2, "order": "second"}) == "pc-darts (second order)"
    assert search_method({"regularizer": "darts-minus", "cost": "macs"}) == "darts+darts-minus, macs budget"
    runs = {}
    for name, config in (("pd", {"progressive": True}), ("gd", {"sampler": "gdas"}), ("plain", {})):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"kind": "search-cnn", **config}))
        (run / "genotype.json").write_text("{}")
        runs[name] = run
    samples = tmp_path / "r" / "samples"
    samples.mkdir(parents=True)
    (samples / "sample_000.json").write_text("{}")
    assert [candidate_method(str(p), "cnn") for p in (runs["pd"], runs["gd"] / "genotype.json", runs["plain"])] == \
        ["p-darts", "gdas", "darts"]
    assert candidate_method(str(samples / "sample_000.json"), "cnn") == "random"
    assert candidate_method("DARTS_V2", "cnn") == "built-in"
    assert candidate_method(str(tmp_path / "pd" / "config.json"), "cnn") == "p-darts"
    rows = leaderboard({"a": {"name": "a", "status": "done", "metric": "val_top1", "score": 0.9}}, {"a": "a.json"},
                       {"a": "gdas"})
    assert rows[0]["method"] == "gdas" and "| 1 | a | gdas | 0.9000 |" in markdown_table(rows)


# -- GDAS's fixed reduction cell (GDAS-FRC) --------------------------------------------------------


def test_the_fixed_reduction_cell_has_gdas_branches_shapes_and_parameters():
    from dartsnas.nets.conv import GDASReductionCell
    cell = GDASReductionCell(6, 6, 16, reduction_prev=False)
    assert cell(torch.randn(2, 6, 9, 9), torch.randn(2, 6, 9, 9)).shape == (2, 64, 5, 5)  # 4C, ceil(9/2)
    relu_conv_bn = 6 * 16 + 2 * 16                     # 1x1 conv and affine BN, per input
    factorised = 2 * (16 * 16 // 8 * 3) + 2 * 16 + 16 * 16 + 2 * 16   # 1x3 and 3x1 in 8 groups, BN, 1x1, BN
    assert sum(p.numel() for p in cell.parameters()) == 2 * relu_conv_bn + 2 * factorised + 2 * (2 * 16)
    small = GDASReductionCell(4, 4, 4, reduction_prev=True, affine=False)  # C=4: gcd(8, 4) = 4 groups
    assert small.convs[0][1].groups == 4 and small(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)).shape == (1, 16, 2, 2)


def test_a_search_with_the_fixed_reduction_cell_searches_and_derives_the_normal_cell_only(tmp_path, capsys):
    result = search(SearchConfig(**TINY, layers=3, epochs=2, sampler="gdas", reduce_cell="gdas"), tmp_path / "run",
                    quiet=True)
    g = result.genotype
    assert g.reduce_cell == "gdas" and g.reduce == () and len(g.normal) == 4
    assert set(result.metrics[-1]["alphas"]) == {"normal"}
    saved = json.loads((tmp_path / "run" / "genotype.json").read_text())
    assert saved["reduce_cell"] == "gdas" and saved["reduce"] == [] and derive_from_checkpoint(tmp_path / "run") == g
    # the final network builds the fixed cell at both reductions and trains
    assert main(["train", "cnn", "--dataset", "digits", "--genotype", str(tmp_path / "run" / "genotype.json"),
                 "--init-channels", "4", "--layers", "3", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size",
                 "8", "--quiet", "--out", str(tmp_path / "train")]) == 0
    from dartsnas.export import load_trained
    model, meta = load_trained(tmp_path / "train")  # read back from model.pt, its genotype naming the cell
    assert [type(c).__name__ for c in model.model.cells] == ["Cell", "GDASReductionCell", "GDASReductionCell"]
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_fixed_reduction_genotypes_are_checked(tmp_path):
    from dartsnas.errors import GenotypeError
    from dartsnas.genotype import Genotype
    normal = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": [2]}
    g = Genotype.from_dict({**normal, "reduce": [], "reduce_concat": [], "reduce_cell": "gdas"})
    assert Genotype.from_json(g.to_json()) == g and "reduce_cell" not in Genotype.from_dict(
        {**normal, "reduce": normal["normal"], "reduce_concat": [2]}).to_dict()
    with pytest.raises(GenotypeError, match="reduce_cell must be one of gdas, got 'nasnet'"):
        Genotype.from_dict({**normal, "reduce": [], "reduce_concat": [], "reduce_cell": "nasnet"})
    with pytest.raises(GenotypeError, match="reduce and reduce_concat must be empty"):
        Genotype.from_dict({**normal, "reduce": normal["normal"], "reduce_concat": [2], "reduce_cell": "gdas"})
    with pytest.raises(ConfigError, match="reduce_cell gdas and progressive do not combine"):
        SearchConfig(reduce_cell="gdas", progressive=True).validate()
    with pytest.raises(ConfigError, match="reduce_cell gdas and partial_channels do not combine"):
        SearchConfig(reduce_cell="gdas", partial_channels=2).validate()
