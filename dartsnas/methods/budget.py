"""A cost budget (issue 23): the expected cost of the final network (multiply-adds, parameters or
measured latency) under the search's distribution joins α's objective as a penalty, and every epoch
records the expected cost and the derived network's. What is priced comes from the search: the conv
space's :class:`~dartsnas.cost.CostTable` of the final network, or the
:class:`~dartsnas.choice_cost.ChoiceCosts` of a user model's choices (``docs/budget.md``)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..config import Config, option, parse_amount
from ..cost import COST_KINDS, round_cost
from ..errors import ConfigError
from . import SEARCH_METHODS, SearchMethod

COST_PENALTIES = ("derived", "hinge", "linear")


@dataclass
class CostBudget(Config):
    """A budget the search aims at: the expected cost of the final network joins α's objective."""

    cost: str | None = option(None, "the cost whose expectation under softmax(α) joins α's objective", group="cost",
                              choices=COST_KINDS, default_text="none")
    cost_target: float | None = option(None, "the budget in --cost's units, a K/M/G suffix allowed (e.g. 300M "
                                       "multiply-adds, 2.5M parameters, 4 ms); needed with --cost", group="cost",
                                       above=0, default_text="none", parse=parse_amount)
    cost_weight: float = option(1.0, "λ of the cost penalty", group="cost", min=0)
    cost_penalty: str = option("derived", "derived: λ E[cost]/target while the cell derived now costs more than the "
                               "budget, nothing once it fits (lands at the budget, docs/budget.md); hinge: λ max(0, "
                               "E[cost]/target - 1), while the expectation is above it; linear: λ E[cost]/target "
                               "(ProxylessNAS), always", group="cost", choices=COST_PENALTIES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.cost_target, str):  # "300M" from a config file or Python
            try:
                self.cost_target = parse_amount(self.cost_target)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"{{cost_target}}: {e}", names=("cost_target",)) from None

    def check(self) -> None:
        super().check()
        if self.cost is not None and self.cost_target is None:
            raise ConfigError("{cost} needs {cost_target}, the budget", names=("cost", "cost_target"))

    def budget_penalty(self, expected: Any, derived: float) -> Any:
        """λ times the expected cost over the budget: the part above it (hinge), all of it while the
        derived cell (cost ``derived``) is over budget (derived), or all of it always (linear)."""
        ratio = expected / self.cost_target
        if self.cost_penalty == "hinge":
            return self.cost_weight * (ratio - 1).relu()
        if self.cost_penalty == "derived" and derived <= self.cost_target:
            return ratio * 0.0  # within the budget: no push, the same graph
        return self.cost_weight * ratio


class Prices(Protocol):
    """What a search prices: the expected cost under its distribution now (differentiable in α), the
    cost of a derived result (a genotype, a model's picks), and the result top-k derives now."""

    def expected(self, kind: str) -> torch.Tensor: ...
    def of(self, derived: Any) -> dict[str, float]: ...
    def top_k(self) -> Any: ...


@SEARCH_METHODS.register("budget")
class Budget(SearchMethod):
    """The penalty ``config.budget_penalty`` of the run's :class:`Prices` (``run.prices``, made before
    the methods attach) as a term of α's objective, and the costs in every epoch's record."""

    name = "budget"

    @classmethod
    def applies(cls, config: Any) -> bool:
        return getattr(config, "cost", None) is not None

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return f", {config['cost']} budget" if config.get("cost") else ""

    def attach(self, run: Any) -> None:
        self.prices: Prices = run.prices
        run.architect.terms.append(self.penalty)

    def penalty(self) -> torch.Tensor:
        cfg = self.config
        derived = self.prices.of(self.prices.top_k())[cfg.cost] if cfg.cost_penalty == "derived" else 0.0
        return cfg.budget_penalty(self.prices.expected(cfg.cost), derived)

    def record(self, run: Any, record: dict[str, Any], derived: Any) -> str:
        kind = self.config.cost
        with torch.no_grad():
            record["expected_cost"] = round_cost(kind, float(self.prices.expected(kind)))
        record["derived_cost"] = round_cost(kind, self.prices.of(derived)[kind])
        return f" | {kind} E {record['expected_cost']:.4g} derived {record['derived_cost']:.4g}"
