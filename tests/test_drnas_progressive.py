"""DrNAS's progressive search: Net2Wider's rule on each op, the stage change (pruning by α, widening, the
states that carry over), a search that resumes inside its second stage, the refusals and the recipe."""
import dataclasses
import json
import signal

import pytest
import torch

from dartsnas.errors import ConfigError, Interrupted
from dartsnas.methods import method_name
from dartsnas.methods.drnas_progressive import DrnasProgressive
from dartsnas.ops import DARTS_OPS, FactorizedReduce, build_op
from dartsnas.train.checkpoint import load_checkpoint
from dartsnas.train.search import Search, SearchConfig, derive_from_checkpoint
from dartsnas.train.search_config import search_recipe
from dartsnas.widen import apply_gathers, channel_map, widen_plan

OPS = DARTS_OPS[1:]  # DrNAS's DARTS space: no 'none'


def _widened(name, stride, c_old, c_new, seed=0):
    torch.manual_seed(seed)
    old, new = build_op(name, c_old, stride, affine=True), build_op(name, c_new, stride, affine=True)
    with torch.no_grad():
        for t in old.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t).abs() + 0.1)  # running_var stays positive
    g = torch.Generator().manual_seed(seed)
    g_in = channel_map(c_old, c_new, g)
    plan = widen_plan(old, new, g_in, g)
    new.load_state_dict({n: apply_gathers(old.state_dict()[n], plan[n]) for n in new.state_dict()})
    return old, new, g_in, plan


@pytest.mark.parametrize("name", OPS + ("nor_conv_3x3", "conv_7x1_1x7"))
@pytest.mark.parametrize("stride", (1, 2))
def test_net2wider_copies_channels_consistently(name, stride):
    old, new, g_in, plan = _widened(name, stride, 4, 6)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert set(plan) == set(new_state)
    assert torch.equal(g_in[:4], torch.arange(4)) and all(0 <= int(i) < 4 for i in g_in[4:])
    for n, t in new_state.items():  # the old channels stay where they were, each new one copies an old one
        o = old_state[n]
        if isinstance(new, FactorizedReduce) and n.startswith("bn.") and t.dim():  # its halves: conv_1's, conv_2's
            assert torch.equal(t[torch.tensor([0, 1, 3, 4])], o), n
        elif t.dim():
            assert torch.equal(t[tuple(slice(0, s) for s in o.shape)], o), n
            for kind, dim, index in plan[n]:
                assert kind == "index" and index.shape[0] == t.shape[dim]
    depthwise = [m for m in new.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    for i, conv in enumerate(depthwise):  # a depthwise conv keeps its input's map (the first one: the op's)
        prefix = next(k for k, m in new.named_modules() if m is conv)
        (_, _, g), = plan[prefix + ".weight"]
        if i == 0:
            assert torch.equal(g, g_in)
        else:  # a separable conv's second: the map the BN before it used (DrNAS draws a new one)
            bn = next(k for k, m in new.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
            assert torch.equal(g, plan[bn + ".running_mean"][0][2])
    # with the new input channels at zero, an op of one dense layer gives the old outputs in its old channels
    x = torch.randn(2, 4, 8, 8)
    x_new = torch.cat([x, torch.zeros(2, 2, 8, 8)], 1)
    if name in ("dil_conv_3x3", "dil_conv_5x5", "nor_conv_3x3", "max_pool_3x3", "avg_pool_3x3") or (
            name == "skip_connect" and stride == 2):
        for mode in (False, True):
            old.train(mode), new.train(mode)
            y_old, y_new = old(x), new(x_new)
            if isinstance(new, FactorizedReduce):  # its halves: conv_1's channels, then conv_2's
                keep = torch.cat([torch.arange(2), 3 + torch.arange(2)])
            else:
                keep = torch.arange(4)
            torch.testing.assert_close(y_new[:, keep], y_old, msg=f"{name} train={mode}")


def test_net2wider_widens_sync_batch_norm_too():  # --sync-bn's data-parallel runs
    sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm
    old, new = sync(build_op("sep_conv_3x3", 2, 1, False)), sync(build_op("sep_conv_3x3", 4, 1, False))
    g = torch.Generator().manual_seed(0)
    plan = widen_plan(old, new, channel_map(2, 4, g), g)
    assert set(plan) == set(new.state_dict()) and any("running_mean" in k for k in plan)


def test_net2wider_refuses_a_different_op():
    with pytest.raises(ValueError, match="not the same op"):
        widen_plan(build_op("sep_conv_3x3", 2, 1, False), build_op("dil_conv_3x3", 4, 1, False),
                   torch.arange(4) % 2, torch.Generator())


def _config(**kw):
    return SearchConfig(**{"dataset": "digits", "init_channels": 8, "layers": 3, "batch_size": 16, "steps_per_epoch": 2,
                           "checkpoint_every": 100, "sampler": "dirichlet", "stage_partial_channels": (4, 2),
                           "stage_ops": (7, 3), "stage_epochs": 2, "stage_warmup": 0, "ops": OPS, **kw})


def test_stage_change_prunes_by_alpha_widens_and_carries_the_states(tmp_path):
    run = Search(_config(), tmp_path, quiet=True)
    method = run.method("drnas-progressive")
    assert run.model.beta_normal is None and run.model.cells[0].edges[0].channels == 2  # K=4 of C=8, no β
    run.train_epoch()  # momentum and Adam's moments exist
    old, old_w, old_arch = run.model, run.w_optimizer, run.architect.optimizer
    alpha = old.alpha_normal.detach().clone()
    adam = {k: v.clone() for k, v in old_arch.state[old.alpha_normal].items()}
    stem_momentum = old_w.state[old.stem[0].weight]["momentum_buffer"].clone()
    edge = old.cells[0].edges[0]
    method.next_stage(run, 1)
    new = run.model
    assert new is not old and run.w_optimizer is not old_w
    kept = torch.topk(alpha, 3, dim=1).indices.sort(1).values  # per edge, the 3 largest α, in the set's order
    torch.testing.assert_close(new.alpha_normal.detach(), torch.gather(alpha, 1, kept), rtol=0, atol=0)
    for k in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(run.architect.optimizer.state[new.alpha_normal][k], torch.gather(adam[k], 1, kept))
    assert int(run.architect.optimizer.state[new.alpha_normal]["step"]) == int(adam["step"])
    assert torch.equal(run.w_optimizer.state[new.stem[0].weight]["momentum_buffer"], stem_momentum)
    new_edge = new.cells[0].edges[0]
    assert new_edge.channels == 4 and len(new_edge.ops) == 3 and new.beta_normal is None
    assert run.space.edge_ops("normal")[0] == tuple(OPS[i] for i in kept[0].tolist())
    for k_new, k_old in enumerate(kept[0].tolist()):  # each kept op widened from its old self
        for (name, t_new), t_old in zip(new_edge.ops[k_new].state_dict().items(), edge.ops[k_old].state_dict().values()):
            if t_new.dim():
                assert torch.equal(t_new[tuple(slice(0, s) for s in t_old.shape)], t_old), name
        for p_new, p_old in zip(new_edge.ops[k_new].parameters(), edge.ops[k_old].parameters()):
            m_new, m_old = run.w_optimizer.state[p_new]["momentum_buffer"], old_w.state[p_old]["momentum_buffer"]
            assert torch.equal(m_new[tuple(slice(0, s) for s in m_old.shape)], m_old)
    run.epoch = 2
    assert run.train_epoch()["train_loss"] > 0  # the new stage trains


def test_progressive_search_resumes_inside_its_second_stage(tmp_path):
    config = _config(stage_warmup=1)
    whole = Search.launch(config, tmp_path / "whole", quiet=True)
    records = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["partial_channels"]) for r in records] == [(1, 4), (1, 4), (2, 2), (2, 2)]
    assert all(len(row) == 3 for row in records[2]["alphas"]["normal"])
    assert records[2]["lr"] < records[1]["lr"]  # one cosine over the run, not restarted
    stages = json.loads((tmp_path / "whole" / "stages.json").read_text())
    assert [(s["partial_channels"], s["ops_per_edge"], s["epochs"]) for s in stages] == [(4, 7, [1, 2]), (2, 3, [3, 4])]
    assert derive_from_checkpoint(tmp_path / "whole") == whole.genotype
    assert method_name(json.loads((tmp_path / "whole" / "config.json").read_text())) == "drnas-progressive"

    original = DrnasProgressive.epoch_start

    def stop_in_stage_two(self, run, record):
        original(self, run, record)
        if run.epoch == 2:
            run.stop_signal = signal.SIGTERM  # preempted in the second stage's first epoch

    DrnasProgressive.epoch_start = stop_in_stage_two
    try:
        with pytest.raises(Interrupted):
            Search.launch(config, tmp_path / "cut", quiet=True)
    finally:
        DrnasProgressive.epoch_start = original
    assert load_checkpoint(tmp_path / "cut")["stage"] == 1
    resumed = Search.launch(dataclasses.replace(config), tmp_path / "cut", resume=True, quiet=True)
    assert resumed.genotype == whole.genotype
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "images_per_s")}  # noqa: E731
                       for x in p.read_text().splitlines()]
    assert strip(tmp_path / "cut" / "metrics.jsonl") == strip(tmp_path / "whole" / "metrics.jsonl")


def test_progressive_refusals_and_recipe():
    for kw, match in (({"stage_ops": (7, 4, 2)}, "one value per stage"),
                      ({"stage_partial_channels": (2, 4)}, "fall"),
                      ({"stage_partial_channels": (3, 1)}, "divide"),
                      ({"stage_ops": (8, 4)}, "op set's 7"),
                      ({"partial_channels": 2}, "partial_channels"),
                      ({"sampler": "gdas"}, "gdas"),
                      ({"select": "pt"}, "select"),
                      ({"stage_warmup": 2}, "stage_warmup"),
                      ({"epochs": 7}, "2 stages x")):
        with pytest.raises(ConfigError, match=match):
            _config(**kw).validate()
    recipe = search_recipe(recipe="drnas")
    assert (recipe.stage_partial_channels, recipe.stage_ops, recipe.epochs, recipe.ops) == ((6, 4), (7, 4), 50, OPS)
    assert (recipe.init_channels, recipe.layers, recipe.lr, recipe.arch_lr, recipe.sampler) == (36, 20, 0.1, 6e-4,
                                                                                                 "dirichlet")
    assert recipe.space().partial_channels == 6 and not recipe.space().edge_norm
