"""DrNAS (Chen et al., ICLR 2021, "DrNAS: Dirichlet Neural Architecture Search"): an edge's mixing
weights are a draw from a Dirichlet distribution whose concentration is β = elu(α) + 1, differentiated
by the pathwise (reparameterised) gradient; α learns the distribution, not one point of it.

As the authors' code (xiangning-chen/DrNAS, ``utils.py`` ``process_step_vector`` lines 167-194,
``DARTS-space/model_search.py`` lines 176-209, ``201-space/search_model.py`` lines 57-72 and 122-128):
- every forward pass, the weight step's and the α step's alike, draws one sample per edge, shared by
  the batch and by every cell of a type (normal, reduce); evaluation draws too (their ``infer``);
- the genotype is derived from softmax(α), as DARTS's (the argmax of an edge is the Dirichlet mean's);
- the regulariser: ``--dirichlet-reg l2`` (their default ``--reg_type l2``): α's Adam weight decay
  (``--arch-weight-decay``, their ``reg_scale`` 1e-3); ``kl``: ``--dirichlet-kl`` x Σ_edges
  KL(Dir(β_e) ‖ Dir(1)) joins α's objective and α's Adam weight decay is 0 (their ``architect.py``
  lines 17-22);
- first order (their default, ``--unrolled`` off; their second-order path rebuilds the network with
  another K and without the masks, ``model_search.py`` lines 150-154, and cannot be what they ran):
  each forward pass draws anew, so an unrolled step and its finite differences would see different
  networks; ``--order second|exact`` is refused, as with GDAS.

Their progressive variant (the DARTS space's only script: two stages of partial channels K=6 then 4
with the ops pruned 7 to 4 and the network widened Net2Wider-style) is :mod:`.drnas_progressive`
(``search cnn --recipe drnas``). The NAS-Bench-201 recipe ``drnas`` is their ``201-space/train_search.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config, option
from ..errors import ConfigError
from . import SEARCH_METHODS, SearchMethod


@dataclass
class DirichletOptions(Config):
    dirichlet_reg: str = option("l2", "DrNAS's regulariser of α: l2 (α's Adam weight decay, --arch-weight-decay) or "
                                "kl (--dirichlet-kl x KL to the Dirichlet(1) prior; α's weight decay 0)",
                                group="sampled search", choices=("l2", "kl"))
    dirichlet_kl: float = option(1e-3, "DrNAS: the weight of the KL term with --dirichlet-reg kl (their reg_scale)",
                                 group="sampled search", min=0)


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    """DrNAS's Dirichlet concentration β = elu(α) + 1 (positive, 1 at α = 0)."""
    return F.elu(alpha if alpha.dtype in (torch.float32, torch.float64) else alpha.float()) + 1


def dirichlet_kl(alphas: list[torch.Tensor]) -> torch.Tensor:
    """Σ over every edge of KL(Dir(elu(α_e) + 1) ‖ Dir(1, ..., 1)), in closed form."""
    total = 0.0
    for a in alphas:
        beta = concentration(a)
        prior = torch.distributions.Dirichlet(torch.ones_like(beta))
        total = total + torch.distributions.kl_divergence(torch.distributions.Dirichlet(beta), prior).sum()
    return total


class DirichletSampler:
    """Per row of α, one reparameterised draw w ~ Dir(elu(α) + 1) (``rsample``: the gradient flows to α
    through the Gamma draws). The draws come from the sampler's own stream on the CPU (the same on
    every device and rank, kept by a checkpoint); the global stream is untouched."""

    def __init__(self, seed: int) -> None:
        self.state = torch.Generator().manual_seed(int(seed)).get_state()

    def sample(self, alpha: torch.Tensor, training: bool = True) -> tuple[torch.Tensor, None]:
        beta = concentration(alpha)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            weights = torch.distributions.Dirichlet(beta.cpu()).rsample()
            self.state = torch.get_rng_state()
        return weights.to(alpha.device), None

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state["state"].clone()


#: The sampler's seed: the run's seed plus this.
DIRICHLET_SEED_OFFSET = 17


@SEARCH_METHODS.register("drnas")
class Drnas(SearchMethod):
    """The Dirichlet sampler in the search network; with ``--dirichlet-reg kl`` the KL term in α's objective."""

    name = "drnas"
    key = "dirichlet"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.sampler = DirichletSampler(config.seed + DIRICHLET_SEED_OFFSET)

    @classmethod
    def applies(cls, config: Any) -> bool:
        return getattr(config, "sampler", "none") == "dirichlet"

    @classmethod
    def check(cls, config: Any) -> None:
        if not cls.applies(config):
            return
        if not hasattr(config, "regularizer"):
            raise ConfigError("{sampler} dirichlet samples a cell's edges: it is search cnn's and search nb201's",
                              names=("sampler",))
        if getattr(config, "order", "first") != "first":
            raise ConfigError("{sampler} dirichlet needs {order} first: each forward pass draws its own mixing "
                              "weights, so the unrolled step and its Hessian-vector product would see different "
                              "networks (DrNAS's own search is first order)", names=("sampler", "order"))
        if hasattr(config, "progressive"):
            config.check_exclusive("sampler", {"progressive": False, "reduce_cell": "searched"})

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return "drnas" if config.get("sampler") == "dirichlet" else ""

    def attach(self, run: Any) -> None:
        model = run.model
        model.sampler = self.sampler
        if self.config.dirichlet_reg == "kl":
            alphas = model.alphas()
            weight = self.config.dirichlet_kl
            run.architect.terms.append(lambda: weight * dirichlet_kl(alphas))
            for group in run.architect.optimizer.param_groups:
                group["weight_decay"] = 0.0

    def describe(self) -> str:
        reg = f"KL x {self.config.dirichlet_kl:g}" if self.config.dirichlet_reg == "kl" else "l2"
        return f", DrNAS Dirichlet sampler ({reg})"

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
