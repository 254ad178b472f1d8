import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from dartsnas.architect import Architect
from dartsnas.autodiff import frozen_batchnorm_stats
from conftest import count_host_reads, stepped_search_net


def _cos(a, b):
    a = torch.cat([t.flatten() for t in a])
    b = torch.cat([t.flatten() for t in b])
    return float(a @ b / (a.norm() * b.norm()))


@pytest.fixture
def setup(tiny_net):
    """A float64 search network after one real w step (so SGD has momentum buffers)."""
    return lambda smooth=False: stepped_search_net(tiny_net, smooth)


def test_second_order_matches_exact_with_a_smooth_activation_and_small_step(setup):
    net, opt, train, val = setup(smooth=True)
    exact = Architect(net, opt, order="exact").alpha_grad(train, val, xi=0.5)
    second = Architect(net, opt, order="second", fd_step=1e-4).alpha_grad(train, val, xi=0.5)
    first = Architect(net, opt, order="first").alpha_grad(train, val, xi=0.5)
    assert _cos(second, exact) >= 0.999
    # the implicit term matters here: the first-order gradient is clearly different
    assert _cos(first, exact) < 0.99


def test_second_order_with_nesterov_matches_exact_and_differs_from_plain_momentum(tiny_net):
    """Nesterov's step moves w' by ξ(1 + μ)c·g: the finite difference must scale its direction so, or it
    misses the exact hypergradient by that factor on the implicit term."""
    net, opt, train, val = stepped_search_net(tiny_net, smooth=True, nesterov=True)
    exact = Architect(net, opt, order="exact").alpha_grad(train, val, xi=0.5)
    second = Architect(net, opt, order="second", fd_step=1e-4).alpha_grad(train, val, xi=0.5)
    err = (torch.cat([g.flatten() for g in second]) - torch.cat([g.flatten() for g in exact])).norm()
    assert err / torch.cat([g.flatten() for g in exact]).norm() < 1e-3
    plain_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    plain_opt.load_state_dict({**opt.state_dict(), "param_groups": [{**opt.state_dict()["param_groups"][0],
                                                                      "nesterov": False}]})
    plain = Architect(net, plain_opt, order="exact").alpha_grad(train, val, xi=0.5)
    assert _cos(plain, exact) < 0.9999


def test_forward_difference_also_converges_and_central_is_closer_at_a_coarse_step(setup):
    net, opt, train, val = setup(smooth=True)
    exact = torch.cat([g.flatten() for g in Architect(net, opt, order="exact").alpha_grad(train, val, xi=0.5)])

    def error(scheme, step):
        arch = Architect(net, opt, order="second", fd_step=step, fd_scheme=scheme)
        return (torch.cat([g.flatten() for g in arch.alpha_grad(train, val, xi=0.5)]) - exact).norm() / exact.norm()

    assert error("forward", 1e-4) < 1e-3 and error("central", 1e-4) < 1e-3
    assert error("central", 0.3) < error("forward", 0.3)  # O(ε²) against O(ε)
    with pytest.raises(ValueError, match="fd_scheme must be one of central, forward"):
        Architect(net, opt, order="second", fd_scheme="backward")


def test_second_order_with_zero_xi_is_the_first_order_gradient(setup):
    net, opt, train, val = setup()
    first = Architect(net, opt, order="first").alpha_grad(train, val, xi=0.1)
    second = Architect(net, opt, order="second").alpha_grad(train, val, xi=0.0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_first_order_is_the_validation_loss_gradient(setup):
    net, opt, train, val = setup()
    first = Architect(net, opt, order="first").alpha_grad(train, val, xi=0.1)
    ref = copy.deepcopy(net)
    with frozen_batchnorm_stats(ref):
        expected = torch.autograd.grad(ref.loss(*val), ref.arch_parameters())
    for a, b in zip(first, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("order", ["first", "second", "exact"])
def test_alpha_step_leaves_weights_buffers_and_optimizer_state_bit_identical(setup, order):
    net, opt, train, val = setup()
    weights = {n: p.detach().clone() for n, p in net.named_weight_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    opt_state = copy.deepcopy(opt.state_dict())
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    arch = Architect(net, opt, order=order)
    arch.step(train, val, xi=0.1)
    for n, p in net.named_weight_parameters():
        assert torch.equal(p, weights[n]), n
        assert p.grad is None
    for n, b in net.named_buffers():
        assert torch.equal(b, buffers[n]), n
    after = opt.state_dict()
    for k, st in opt_state["state"].items():
        assert torch.equal(st["momentum_buffer"], after["state"][k]["momentum_buffer"])
    assert opt_state["param_groups"] == after["param_groups"]
    assert not all(torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters()))


def test_exact_agrees_with_an_independent_torch_func_computation(setup):
    net, opt, train, val = setup()
    xi, mu, wd = 0.3, 0.9, 3e-4
    exact = Architect(net, opt, order="exact").alpha_grad(train, val, xi=xi)

    names = [n for n, _ in net.named_weight_parameters()]
    w = {n: p.detach() for n, p in net.named_weight_parameters()}
    bufs = {n: opt.state[p]["momentum_buffer"] for n, p in net.named_weight_parameters()}

    def loss(params, alpha, batch):
        x, y = batch
        full = {**params, "alpha_normal": alpha[0], "alpha_reduce": alpha[1]}
        return F.cross_entropy(functional_call(net, full, (x,)), y)

    def upper(alpha):
        g = grad(loss)(w, alpha, train)
        unrolled = {n: w[n] - xi * (mu * bufs[n] + g[n] + wd * w[n]) for n in names}
        return loss(unrolled, alpha, val)

    alpha = tuple(a.detach() for a in net.arch_parameters())
    with frozen_batchnorm_stats(net):
        expected = grad(upper)(alpha)
    for a, b in zip(exact, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_unknown_order_and_bad_step_are_refused(tiny_net):
    net = tiny_net()
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    with pytest.raises(ValueError, match="order must be one of"):
        Architect(net, opt, order="third")
    with pytest.raises(ValueError, match="fd_step must be > 0"):
        Architect(net, opt, order="second", fd_step=0)


@pytest.mark.parametrize("order,scheme", [("first", "central"), ("second", "central"), ("second", "forward")])
def test_a_search_step_never_reads_a_value_back_to_the_host(setup, monkeypatch, order, scheme):
    """On a GPU every .item(), bool() or float() of a tensor stalls the step until the device catches up."""
    from dartsnas.train.bilevel import search_step
    net, opt, train, val = setup()
    arch = Architect(net, opt, order=order, fd_scheme=scheme)

    reads = count_host_reads(monkeypatch)
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    loss, _, _, ok = search_step(net, arch, opt, train, val, lr=0.1, grad_clip=5.0)
    monkeypatch.undo()
    assert reads == [0]
    assert ok and torch.isfinite(loss)
    assert not all(torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters()))


class _Flat(torch.nn.Module):
    """A search model whose loss does not depend on its weights: the second-order direction v is 0."""

    def __init__(self):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))

    def arch_parameters(self):
        return [self.alpha]

    def named_weight_parameters(self):
        return [("w", self.w)]

    def loss(self, x):
        return (self.alpha * x).square().sum() + 0.0 * self.w.sum()


@pytest.mark.parametrize("scheme", ["central", "forward"])
def test_a_zero_second_order_direction_gives_the_first_order_gradient(scheme):
    model = _Flat()
    opt = torch.optim.SGD([model.w], lr=0.1)
    x = (torch.tensor([1.0, 2.0], dtype=torch.float64),)
    first = Architect(model, opt, order="first").alpha_grad(x, x, xi=0.1)
    second = Architect(model, opt, order="second", fd_scheme=scheme).alpha_grad(x, x, xi=0.1)
    assert torch.equal(second[0], first[0]) and torch.equal(first[0], 2 * model.alpha.detach() * x[0] ** 2)
