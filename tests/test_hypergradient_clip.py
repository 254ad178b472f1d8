"""The virtual step of second and exact order is the weight step that happens, gradient clipping included.

References are computed here independently: the real step by ``clip_grad_norm_`` + ``SGD.step()`` on a
copy of the model, the hypergradient by torch.func double backward through a hand-written clipped step.
"""
import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from dartsnas.architect import Architect, _loss_at, clip_factor, exact_alpha_grad
from dartsnas.autodiff import frozen_batchnorm_stats
from dartsnas.spaces import RecurrentSearchModel, RecurrentSearchSpaceConfig
from dartsnas.train.lm import lm_weight_loss
from conftest import stepped_search_net

TAR = 0.5  # large, so that leaving it out of the virtual step would show


def _flat(ts):
    return torch.cat([t.flatten() for t in ts])


def _cos(a, b):
    a, b = _flat(a), _flat(b)
    return float(a @ b / (a.norm() * b.norm()))


def conv_case(tiny_net, smooth=False):
    return (*stepped_search_net(tiny_net, smooth), None)


def rnn_case(momentum=0.0, ops=("none", "tanh", "relu", "sigmoid", "identity")):
    """A float64 recurrent search model without dropout (deterministic), its SGD, a window pair with states."""
    torch.manual_seed(0)
    model = RecurrentSearchModel(RecurrentSearchSpaceConfig(
        vocab_size=30, emsize=8, nhid=8, nodes=3, dropout=0, dropout_h=0, dropout_x=0, dropout_i=0, dropout_e=0,
        ops=ops)).double()
    with torch.no_grad():
        model.alpha.normal_(0, 0.5)
    opt = torch.optim.SGD(model.weight_parameters(), lr=2.0, momentum=momentum, weight_decay=5e-4)
    g = torch.Generator().manual_seed(2)
    tokens = lambda: torch.randint(0, 30, (6, 4), generator=g)
    state = lambda: 0.3 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    x, xv = tokens(), tokens()
    train = (x, torch.randint(0, 30, (24,), generator=g), state())
    val = (xv, torch.randint(0, 30, (24,), generator=g), state())
    loss = functools.partial(lm_weight_loss, tar=TAR, ar=0.0)
    if momentum:
        loss(model, *train)[0].backward()
        opt.step()
        opt.zero_grad()
    return model, opt, train, val, loss


def weight_loss(model, batch, train_loss):
    return train_loss(model, *batch) if train_loss else model.loss(*batch)


def real_step(model, opt, batch, max_norm, xi, train_loss):
    """What the search loops do: backward, clip_grad_norm_, SGD.step(), on copies. Returns the stepped
    copy and the clip factor that was applied."""
    model, opt = copy.deepcopy((model, opt))
    for group in opt.param_groups:
        group["lr"] = xi
    with frozen_batchnorm_stats(model):
        out = weight_loss(model, batch, train_loss)
        (out[0] if isinstance(out, tuple) else out).backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    return model, min(1.0, max_norm / (float(norm) + 1e-6))


CASES = {"conv": lambda tiny_net: conv_case(tiny_net),
         # Nesterov (GDAS's recipe): with momentum buffers, and at the first step (none yet)
         "conv-nesterov": lambda tiny_net: (*stepped_search_net(tiny_net, nesterov=True), None),
         "conv-nesterov-first-step": lambda tiny_net: (*stepped_search_net(tiny_net, nesterov=True, step=False), None),
         "rnn": lambda tiny_net: rnn_case(),
         "rnn-momentum": lambda tiny_net: rnn_case(momentum=0.9)}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("clipping", [True, False])
def test_virtual_weights_are_the_real_optimizer_step(tiny_net, case, clipping):
    model, opt, train, val, train_loss = CASES[case](tiny_net)
    xi = 0.7
    params = model.weight_parameters()
    with frozen_batchnorm_stats(model):
        out = weight_loss(model, train, train_loss)
        norm = float(_flat(torch.autograd.grad(out[0] if isinstance(out, tuple) else out, params)).norm())
    max_norm = norm * (0.2 if clipping else 3.0)
    stepped, factor = real_step(model, opt, train, max_norm, xi, train_loss)
    assert (factor < 0.21) if clipping else factor == 1.0

    arch = Architect(model, opt, order="second", grad_clip=max_norm, train_loss=train_loss)
    virtual = arch.virtual_weights(train, xi)
    expected = [p for _, p in stepped.named_weight_parameters()]
    assert len(virtual) == len(expected)
    for v, e in zip(virtual, expected):
        torch.testing.assert_close(v, e.detach(), rtol=1e-13, atol=1e-15)
    # the model is untouched, and without clipping in the architect the step is a different (longer) one
    assert all(torch.equal(p, q) for p, q in zip(model.weight_parameters(), copy.deepcopy(model).weight_parameters()))
    unclipped = Architect(model, opt, order="second", train_loss=train_loss).virtual_weights(train, xi)
    assert (_flat(unclipped) - _flat(expected)).norm() > 1e-3 if clipping else \
        torch.allclose(_flat(unclipped), _flat(expected), rtol=1e-13, atol=1e-15)


def test_the_unrolled_recurrent_model_decodes_with_the_stepped_tied_weight():
    """The embedding and the decoder share one weight: the virtual step must move both (the original
    reloads the old decoder weight over the stepped embedding)."""
    model, opt, train, val, train_loss = rnn_case()
    assert model.decoder.weight is model.encoder.weight
    stepped, _ = real_step(model, opt, train, 0.05, 0.7, train_loss)
    arch = Architect(model, opt, order="second", grad_clip=0.05, train_loss=train_loss)
    virtual = arch.virtual_weights(train, 0.7)
    names = [n for n, _ in model.named_weight_parameters()]
    with torch.no_grad(), frozen_batchnorm_stats(model), frozen_batchnorm_stats(stepped):
        at_virtual = _loss_at(model, names, virtual, val)
        expected = stepped.loss(*val)[0]
        stale = dict(zip(names, virtual))
        stale["decoder.weight"] = model.decoder.weight  # the original's unrolled model
        with_stale = functional_call(model, stale, (val[0], val[2]), tie_weights=False)
    torch.testing.assert_close(at_virtual, expected, rtol=1e-12, atol=0)
    assert abs(float(F.nll_loss(with_stale[0], val[1]) - expected)) > 1e-6


def reference_hypergradient(model, opt, train, val, xi, max_norm, train_loss, clip_constant):
    """d/dα L_val(w − ξ(c·g + λw + μ·buf), α) by torch.func double backward, written out by hand."""
    names = [n for n, _ in model.named_weight_parameters()]
    w = {n: p.detach() for n, p in model.named_weight_parameters()}
    group = opt.param_groups[0]
    mu, wd = group["momentum"], group["weight_decay"]
    bufs = {n: opt.state[p].get("momentum_buffer") for n, p in model.named_weight_parameters()}
    alpha_names = [n for n, p in model.named_parameters() if any(p is a for a in model.arch_parameters())]

    def loss(params, alpha, batch, objective):
        full = {**params, **dict(zip(alpha_names, alpha))}
        if objective == "val":
            out = functional_call(model, full, (batch[0],) if len(batch) == 2 else (batch[0], batch[2]))
            return F.cross_entropy(out, batch[1]) if len(batch) == 2 else F.nll_loss(out[0], batch[1])
        if train_loss is None:
            return F.cross_entropy(functional_call(model, full, (batch[0],)), batch[1])
        log_prob, _, raw, _ = functional_call(model, full, (batch[0], batch[2]))
        return F.nll_loss(log_prob, batch[1]) + TAR * (raw[1:] - raw[:-1]).pow(2).mean()

    def upper(alpha):
        g = grad(loss)(w, alpha, train, "train")
        norm = torch.sqrt(sum(g[n].pow(2).sum() for n in names))
        c = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if clip_constant:
            c = c.detach()
        unrolled = {n: w[n] - xi * (c * g[n] + wd * w[n] + (mu * bufs[n] if bufs[n] is not None else 0))
                    for n in names}
        return loss(unrolled, alpha, val, "val")

    alpha = tuple(a.detach() for a in model.arch_parameters())
    with frozen_batchnorm_stats(model):
        return list(grad(upper)(alpha))


SMOOTH = {"conv": lambda tiny_net: conv_case(tiny_net, smooth=True),
          "rnn": lambda tiny_net: rnn_case(momentum=0.9, ops=("none", "tanh", "sigmoid", "identity"))}


@pytest.mark.parametrize("case", list(SMOOTH))
def test_second_and_exact_against_double_backward_through_the_clipped_step(tiny_net, case):
    model, opt, train, val, train_loss = SMOOTH[case](tiny_net)
    xi = 2.0
    stepped, factor = real_step(model, opt, train, 1.0, xi, train_loss)
    with frozen_batchnorm_stats(model):
        out = weight_loss(model, train, train_loss)
        norm = float(_flat(torch.autograd.grad(out[0] if isinstance(out, tuple) else out,
                                               model.weight_parameters())).norm())
    max_norm = 0.25 * norm  # clipping active: c ≈ 0.25
    const_ref = reference_hypergradient(model, opt, train, val, xi, max_norm, train_loss, clip_constant=True)
    live_ref = reference_hypergradient(model, opt, train, val, xi, max_norm, train_loss, clip_constant=False)

    def arch(order, **kw):
        return Architect(model, opt, order=order, grad_clip=max_norm, train_loss=train_loss, **kw)

    # steps where truncation and rounding errors are both small in float64 for these tiny models
    second = arch("second", fd_step=1e-3).alpha_grad(train, val, xi)
    forward = arch("second", fd_step=1e-4, fd_scheme="forward").alpha_grad(train, val, xi)
    exact = arch("exact").alpha_grad(train, val, xi)
    assert _cos(second, const_ref) >= 0.999 and _cos(forward, const_ref) >= 0.999
    for a, b in zip(exact, live_ref):  # exact differentiates through c
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)
    held, _ = exact_alpha_grad(model, train, val, xi=xi, differentiate_clip=False,
                               **arch("exact")._weight_step_terms())
    for a, b in zip(held, const_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)
    # The fix matters here: the unclipped virtual step (the previous behaviour) is far from the reference.
    old = Architect(model, opt, order="second", fd_step=1e-3, train_loss=train_loss).alpha_grad(train, val, xi)
    rel = lambda a, b: float((_flat(a) - _flat(b)).norm() / _flat(b).norm())
    assert rel(second, const_ref) < 0.02 < 0.2 < rel(old, const_ref)
    # and differentiating c is a different gradient from holding it (the radial part of the step is gone)
    assert rel(live_ref, const_ref) > 0.01


def test_clip_factor_is_clip_grad_norm_s():
    g = [torch.tensor([3.0, 4.0]), torch.tensor([[12.0]])]  # norm 13
    torch.testing.assert_close(clip_factor(g, 6.5), torch.tensor(6.5 / (13 + 1e-6)))
    assert float(clip_factor(g, 20.0)) == 1.0 and clip_factor(g, None) is None and clip_factor(g, float("inf")) is None
    p = [torch.nn.Parameter(torch.zeros_like(t)) for t in g]
    for q, t in zip(p, g):
        q.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(p, 6.5)
    for q, t in zip(p, g):
        torch.testing.assert_close(q.grad, t * clip_factor(g, 6.5), rtol=0, atol=0)


def test_grad_clip_must_be_positive(tiny_net):
    net = tiny_net()
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    with pytest.raises(ValueError, match="grad_clip must be > 0 or None, got 0"):
        Architect(net, opt, order="second", grad_clip=0)
