"""GDAS (Dong & Yang, CVPR 2019, "Searching for A Robust Neural Architecture in Four GPU Hours"):
every forward pass computes one candidate per edge (Choice), drawn by hard Gumbel-softmax over α,
its gradient straight through the relaxed weights at a temperature τ annealed over the search; with
``--reduce-cell gdas`` (GDAS-FRC) the reduction cells are GDAS's fixed, hand-designed one and only
the normal cell is searched (the reduction cell's network is ``nets.conv.FIXED_REDUCTION``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config, option
from ..errors import ConfigError
from . import SEARCH_METHODS, SearchMethod


@dataclass
class GdasOptions(Config):
    """GDAS's config group (the conv search and search_model take it)."""

    sampler: str = option("none", "gdas: every edge (Choice) computes one candidate, drawn by hard Gumbel-softmax over "
                          "α (GDAS); a step costs about one candidate's work instead of all of them; dirichlet: every edge's "
                          "mixing weights are a draw from Dirichlet(elu(α) + 1) (DrNAS; cell spaces)", group="sampled search",
                          choices=("none", "gdas", "dirichlet"))
    tau_max: float = option(10.0, "GDAS: the Gumbel-softmax temperature τ at the first epoch, annealed linearly to "
                            "--tau-min at the last", group="sampled search", above=0)
    tau_min: float = option(0.1, "GDAS: τ at the last epoch", group="sampled search", above=0)


class GumbelSampler:
    """GDAS's sampler: per row of α, the candidate that maximises log softmax(α) + Gumbel noise (so
    drawn with probability softmax(α), whatever τ), and its straight-through weights
    ``one_hot - p.detach() + p`` with p = softmax((log softmax(α) + g) / τ): the forward pass sees
    exactly one candidate (weight 1), the gradient flows through the relaxed p, sharper as τ falls.
    The noise comes from its own seeded generator (on the CPU, so it is the same on every device and
    rank) whose state a checkpoint keeps. Outside training it picks argmax α, noise-free."""

    def __init__(self, seed: int, tau: float = 10.0) -> None:
        self.tau = float(tau)
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self, alpha: torch.Tensor, training: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(straight-through weights, picked index per row) for α of shape (..., candidates)."""
        if not training:
            index = alpha.detach().argmax(-1)
            return F.one_hot(index, alpha.shape[-1]).to(alpha.dtype), index
        logp = torch.log_softmax(alpha if alpha.dtype in (torch.float32, torch.float64) else alpha.float(), -1)
        while True:  # an exponential draw of exactly 0 gives infinite noise: draw again, as GDAS does
            noise = torch.empty(alpha.shape, dtype=logp.dtype).exponential_(generator=self.generator)
            gumbel = -noise.log()
            if torch.isfinite(gumbel).all():
                break
        probs = F.softmax((logp + gumbel.to(logp.device)) / self.tau, dim=-1)
        index = probs.detach().argmax(-1)
        hard = F.one_hot(index, alpha.shape[-1]).to(probs.dtype)
        return hard - probs.detach() + probs, index

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = float(state["tau"])
        self.generator.set_state(state["generator"])


def gdas_tau(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """GDAS's temperature at ``epoch`` (0-based): linear from ``tau_max`` at the first epoch to
    ``tau_min`` at the last."""
    return tau_min + (tau_max - tau_min) * (epochs - 1 - min(epoch, epochs - 1)) / max(epochs - 1, 1)


#: The sampler's seed: the run's seed plus this (its own stream, apart from the weights' and the data's).
SAMPLER_SEED_OFFSET = 13


@SEARCH_METHODS.register("gdas")
class Gdas(SearchMethod):
    """The sampler in the search model (conv network or a user model's choices), τ annealed from
    --tau-max to --tau-min in the sampler and each epoch's record; the sampler's random stream (and
    τ) kept in the checkpoint, so a resumed run draws the same ops."""

    name = "gdas"
    key = "sampler"
    unused_parameters = True  # the unsampled candidates get no gradient
    weights_first = True  # GDAS.py search_func: the w step on the base batch, then the α step

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.sampler = GumbelSampler(config.seed + SAMPLER_SEED_OFFSET)

    @classmethod
    def applies(cls, config: Any) -> bool:
        return getattr(config, "sampler", "none") == "gdas"

    @classmethod
    def check(cls, config: Any) -> None:
        if not cls.applies(config):
            return
        if getattr(config, "order", "first") != "first":
            raise ConfigError("{sampler} gdas needs {order} first: each forward pass draws its own candidates, so "
                              "the unrolled step and its Hessian-vector product would see different networks",
                              names=("sampler", "order"))
        if config.tau_min > config.tau_max:
            raise ConfigError(f"{{tau_min}} {config.tau_min} is above {{tau_max}} {config.tau_max}",
                              names=("tau_min", "tau_max"))
        if hasattr(config, "progressive"):  # the conv search's flags
            config.check_exclusive("sampler", {"hessian_every": 0, "regularizer": "none", "progressive": False})

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return "gdas" if config.get("sampler") == "gdas" else ""

    def attach(self, run: Any) -> None:
        run.model.sampler = self.sampler

    def describe(self) -> str:
        return ", GDAS sampler"

    def epoch_start(self, run: Any, record: dict[str, Any]) -> None:
        cfg = self.config
        self.sampler.tau = record["tau"] = gdas_tau(run.epoch, cfg.epochs, cfg.tau_max, cfg.tau_min)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


@SEARCH_METHODS.register("gdas-frc")
class FixedReductionCell(SearchMethod):
    """GDAS-FRC: the search network's reduction cells are GDAS's fixed one (no α_reduce); the derived
    genotype names it (``"reduce_cell": "gdas"``) and the final networks build it."""

    name = "gdas-frc"

    @classmethod
    def applies(cls, config: Any) -> bool:
        return getattr(config, "reduce_cell", "searched") != "searched"

    @classmethod
    def check(cls, config: Any) -> None:
        if cls.applies(config):
            config.check_exclusive("reduce_cell", {"cost": None, "hessian_every": 0, "progressive": False,
                                                   "regularizer": "none"})

    @classmethod
    def space_options(cls, config: Any) -> dict[str, Any]:
        return {"reduce_cell": config.reduce_cell}
