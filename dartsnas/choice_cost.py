"""What a user model's choices cost (``search_model(..., cost=...)``): the cost table of every
:class:`~dartsnas.nn.Choice`'s candidates at the shapes they are called with, and its expectation
under softmax(α) (the conv space's cell table is :mod:`dartsnas.cost`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .cost import COST_KINDS, COUNTED
from .errors import ConfigError
from .nn import Choice, fix
from .spaces.base import mixing_weights


@dataclass
class ChoiceCosts:
    """The cost table of a user model (``search_model(..., cost=...)``): for every
    :class:`~dartsnas.nn.Choice`, each candidate's multiply-adds and parameters counted at the shapes
    it is called with (``torch.utils.flop_counter``, per example), and its latency (ms, PyTorch) when
    asked, summed over the places a shared key uses it; ``fixed`` is the rest of the model (an
    :class:`~dartsnas.nn.InputChoice` costs nothing of its own). The expected cost under softmax(α)
    is differentiable in α and, for sharp α, the cost of the model the picks make."""

    choices: dict[str, dict[str, Any]]
    fixed: dict[str, float]
    measurement: dict[str, Any] | None = None

    @classmethod
    def measure(cls, model: Any, inputs: tuple, timer: Any = None) -> "ChoiceCosts":
        """Count (and with a :class:`~dartsnas.latency.Timer`, time) ``model``'s (a
        :class:`~dartsnas.nn.SearchableModel`) candidates on one forward pass of ``inputs``."""
        calls: dict[int, list[tuple[tuple, dict]]] = {}  # per Choice module: every call's arguments
        hooks = []
        for members in model.groups.values():
            for module in {id(m): m for _, m in members if isinstance(m, Choice)}.values():
                hooks.append(module.register_forward_pre_hook(
                    lambda m, args, kwargs: calls.setdefault(id(m), []).append((args, kwargs)), with_kwargs=True))
        was = model.training
        model.eval()
        counter = FlopCounterMode(display=False)
        try:
            with torch.no_grad(), counter:
                model(*inputs)
        finally:
            for h in hooks:
                h.remove()
        kinds = COUNTED + (("latency",) if timer is not None else ())
        choices: dict[str, dict[str, Any]] = {}
        counted_params: set[int] = set()
        macs_in_choices = params_in_choices = 0
        for name, members in model.groups.items():
            first = members[0][1]
            if not isinstance(first, Choice):
                continue
            costs = {k: [0.0 if k == "latency" else 0] * len(first.names) for k in kinds}
            modules = {id(m): m for _, m in members}.values()  # a module at several paths is called as often
            for module, (args, kwargs) in ((m, call) for m in modules for call in calls.get(id(m), [])):
                for i, candidate in enumerate(module.candidates.values()):
                    c = FlopCounterMode(display=False)
                    with torch.no_grad(), c:
                        candidate(*args, **kwargs)
                    costs["macs"][i] += c.get_total_flops() // 2
                    new = [p for p in candidate.parameters() if id(p) not in counted_params]
                    counted_params.update(id(p) for p in new)
                    costs["params"][i] += sum(p.numel() for p in new)
                    if timer is not None:
                        costs["latency"][i] += timer.call(lambda: candidate(*args, **kwargs))
            macs_in_choices += sum(costs["macs"])
            params_in_choices += sum(costs["params"])
            choices[name] = {"candidates": first.names, **costs}
        fixed: dict[str, float] = {"macs": counter.get_total_flops() // 2 - macs_in_choices,
                                   "params": sum(p.numel() for p in model.weight_parameters()) - params_in_choices}
        measurement = None
        if timer is not None:
            picks = model.picks()
            whole = fix(model, picks).eval()
            with torch.no_grad():
                fixed["latency"] = timer.call(lambda: whole(*inputs))
            fixed["latency"] -= sum(c["latency"][c["candidates"].index(picks[n])] for n, c in choices.items())
            measurement = timer.describe()
        model.train(was)
        return cls(choices, fixed, measurement)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in COST_KINDS if k in self.fixed)

    def expected(self, kind: str, model: Any) -> torch.Tensor:
        """E[cost] of ``model``'s choices under softmax(α), plus the fixed part."""
        if kind not in self.kinds:
            raise ConfigError(f"the model's cost table holds no {kind} (it has {', '.join(self.kinds)})")
        total = None
        for name, module in model.choices():
            if name in self.choices:
                weights = mixing_weights(module.alpha)
                term = (weights * torch.tensor(self.choices[name][kind], dtype=weights.dtype,
                                               device=weights.device)).sum()
                total = term if total is None else total + term
        if total is None:
            raise ConfigError("no Choice in the model has a cost: a cost needs candidates modules")
        return total + self.fixed[kind]

    def of_picks(self, picks: dict[str, Any]) -> dict[str, float]:
        """The cost of the model the picks make (choices.json's)."""
        out = dict(self.fixed)
        for name, c in self.choices.items():
            i = c["candidates"].index(picks[name])
            for k in self.kinds:
                out[k] += c[k][i]
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {"choices": self.choices, "fixed": self.fixed}
        if self.measurement is not None:
            out["measurement"] = self.measurement
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChoiceCosts":
        try:
            return cls(dict(data["choices"]), dict(data["fixed"]), data.get("measurement"))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not a choice cost table: missing or malformed {e}") from None
