"""The conv search's config: the groups of the run, the data, DARTS's bilevel step and every method's
flags (each method's group lives in its module under ``methods/``), and the recipes that set a
dataset's defaults (PC-DARTS's ImageNet search)."""
from __future__ import annotations

from typing import Any

from ..config import (ArchStep, ArchWarmup, Curvature, Epochs, FastConv, Momentum, RunOptions, Seed, configclass, option,
                      with_recipe)
from ..data.options import ImageData
from ..errors import ConfigError
from ..methods import check_methods, regularizers, space_options_of
from ..methods.beta_decay import BetaDecayOptions
from ..methods.budget import CostBudget
from ..methods.drnas import DirichletOptions
from ..methods.drnas_progressive import WideningOptions
from ..methods.gdas import GdasOptions
from ..methods.pcdarts import PartialChannelOptions
from ..methods.pdarts import ProgressiveOptions
from ..methods.pt import PTOptions
from ..methods.sdarts import SmoothingOptions
from ..spaces.cnn import ConvSpaceOptions
from ..ops import DARTS_OPS
from ..spaces.conv_config import REDUCE_CELLS, ConvSearchSpaceConfig

#: The choices of --regularizer: the registered regularising methods (SDARTS-RS, DARTS-).
REGULARIZERS = regularizers()


#: The published search scripts' settings by name (docs/successors.md gives each value beside the
#: authors' file and line). A recipe sets defaults: a flag or a config file's key overrides any of them.
_DARTS = dict(epochs=50, batch_size=64, lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5.0,
              arch_lr=3e-4, arch_weight_decay=1e-3, init_channels=16, layers=8, train_portion=0.5)
_GDAS = dict(sampler="gdas", derivation="gdas", search_network="gdas", epochs=250, batch_size=256, lr=0.025,
             lr_min=0.001, momentum=0.9, nesterov=True,
             weight_decay=5e-4, grad_clip=5.0, arch_lr=3e-4, arch_weight_decay=1e-3, tau_max=10.0, tau_min=0.1,
             init_channels=16, layers=6, train_portion=0.5)
SEARCH_RECIPES: dict[str, dict[str, Any]] = {
    # DARTS's cnn/train_search.py: with --unrolled (the paper's second order), and without
    "darts": {**_DARTS, "order": "second"},
    "darts-v1": {**_DARTS, "order": "first"},
    # P-DARTS's train_search.py: 3 stages of 25 epochs (5, 11, 17 cells; 8, 5, 3 ops), batch 96, α's
    # learning rate 6e-4 and gradient norm clipped at 5, a cosine schedule to 0
    "pdarts": dict(progressive=True, stage_layers=(5, 11, 17), stage_ops=(8, 5, 3), stage_dropout=(0.1, 0.4, 0.7),
                   stage_epochs=25, stage_warmup=10, max_skip=2, batch_size=96, lr=0.025, lr_min=0.0, momentum=0.9,
                   weight_decay=3e-4, grad_clip=5.0, arch_lr=6e-4, arch_weight_decay=1e-3, arch_grad_clip=5.0,
                   init_channels=16, train_portion=0.5, order="first"),
    # PC-DARTS's train_search.py (CIFAR-10): K=4, batch 256, lr 0.1 to 0, α from epoch 15 at 6e-4
    "pcdarts": dict(partial_channels=4, epochs=50, batch_size=256, lr=0.1, lr_min=0.0, momentum=0.9,
                    weight_decay=3e-4, grad_clip=5.0, arch_lr=6e-4, arch_weight_decay=1e-3, arch_start_epoch=15,
                    init_channels=16, layers=8, train_portion=0.5, order="first"),
    # PC-DARTS's train_search_imagenet.py: 10% / 2.5% of each class for w / α, K=2, the three-conv stem,
    # batch 1024 with lr 0.5 warmed up over 5 epochs (only above batch 256), α frozen for the first 35
    # of 50 epochs, α's learning rate 6e-3 and gradient norm clipped at 5
    "pcdarts-imagenet": dict(dataset="imagenet", stem="imagenet", partial_channels=2, epochs=50, batch_size=1024,
                             lr=0.5, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0, warmup_epochs=5,
                             arch_lr=6e-3, arch_weight_decay=1e-3, arch_start_epoch=35, arch_grad_clip=5.0,
                             init_channels=16, layers=8, image_size=224, workers=4, order="first"),
    # GDAS (AutoDL-Projects: configs/search-opts/GDAS-NASNet-CIFAR.config, search-archs/GDAS-NASNet-CIFAR.config,
    # exps/NAS-Bench-201-algos/GDAS.py): 250 epochs, batch 256, Nesterov, weight decay 5e-4, τ 10 to 0.1, N=2
    # (6 cells), GDAS's search network (NASNetworkGDAS)
    "gdas": _GDAS,
    # DrNAS's DARTS-space/train_search.py (their only DARTS-space search, progressive): 2 stages of 25 epochs
    # at 20 cells of C=36, partial channels K=6 then 4, 7 ops (no 'none') pruned to 4, α frozen for each
    # stage's first 10; batch 64, lr 0.1 to 0, α's Adam at 6e-4 with weight decay 1e-3 (their l2 reg_scale)
    "drnas": dict(sampler="dirichlet", dirichlet_reg="l2", stage_partial_channels=(6, 4), stage_ops=(7, 4),
                  stage_epochs=25, stage_warmup=10, ops=DARTS_OPS[1:], init_channels=36, layers=20, batch_size=64,
                  lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0, arch_lr=6e-4,
                  arch_weight_decay=1e-3, train_portion=0.5, order="first"),
    # β-DARTS's sota/cnn/train_search.py: DARTS's first-order search, 50 epochs, with the Beta-Decay term
    "beta-darts": {**_DARTS, "order": "first", "regularizer": "beta-decay"},
    "gdas-frc": {**_GDAS, "reduce_cell": "gdas"},
}

@configclass()
class SearchConfig(RunOptions, FastConv, Seed, Curvature, ArchWarmup, GdasOptions, ArchStep, Momentum, Epochs, ImageData,
                   CostBudget, PartialChannelOptions, SmoothingOptions, BetaDecayOptions, DirichletOptions, PTOptions,
                   WideningOptions, ProgressiveOptions, ConvSpaceOptions):
    """Everything that defines a conv search; defaults are the paper's CIFAR-10 settings."""

    train_portion: float = option(0.5, "part of the training split that trains w; the rest trains α", above=0, below=1)
    max_skip: int | None = option(None, "cap on skip_connects in the derived normal cell", group="optimisation", min=0,
                                  default_text="none")
    regularizer: str = option("none", "sdarts-rs: weight steps see softmax(α) + U(-ε, ε) (SDARTS-RS); darts-minus: an "
                              "auxiliary skip on every edge, its weight decaying from 1 to 0 (DARTS-); beta-decay: "
                              "λ x mean logsumexp(α) joins α's objective, λ growing with the epoch (β-DARTS)",
                              group="optimisation", choices=REGULARIZERS)
    warmup_epochs: int = option(0, "linear learning-rate warm-up: epoch e < N uses lr x (e+1)/N (PC-DARTS's ImageNet "
                                "search: 5, above batch 256)", group="optimisation", min=0)
    latency_table: str | None = option(None, "the table of dartsnas latency-table (needed with --cost latency; its final "
                                       "network replaces --cost-network, --cost-layers, --cost-channels)", group="cost",
                                       default_text="none", metavar="FILE")
    cost_derive: str = option("top-k", "top-k: the paper's derivation, whatever it costs; budget: where top-k's network "
                              "exceeds --cost-target, picks give way to cheaper ones of their node (the least weight "
                              "lost per cost saved first) until it fits", group="cost", choices=("top-k", "budget"))
    cost_network: str = option("cifar", "the final network the cost is counted in", group="cost",
                               choices=("cifar", "imagenet"))
    cost_layers: int = option(20, "its cells L", group="cost", min=3)
    cost_channels: int = option(36, "its C", group="cost", min=1)
    reduce_cell: str = option("searched", "gdas: the reduction cells are GDAS's fixed, hand-designed one (GDAS-FRC), "
                              "only the normal cell is searched; the genotype names it and the final network builds it",
                              group="sampled search", choices=REDUCE_CELLS)
    recipe: str = option("none", "a published search script's settings, any flag overriding them: darts (second "
                         "order), darts-v1, pdarts, pcdarts, pcdarts-imagenet, gdas, gdas-frc (docs/successors.md); "
                         "drnas (progressive), beta-darts; none: dartsnas's defaults. --progressive, --sampler gdas and --dataset imagenet imply "
                         "theirs", choices=("none", *SEARCH_RECIPES))
    sample: tuple[float, float] = option(
        help="imagenet: the parts of every class of the training images sampled to train w and α (PC-DARTS: 0.1 and "
             "0.025)", factory=lambda: (0.1, 0.025), group="data", metavar="P")

    #: The search space this config searches (spaces.SEARCH_SPACES).
    SPACE = "cnn"
    DATASET_COMMAND = "search"
    TITLES = {"collapse": "collapse (Zela et al., 2020)"}
    FLAG_HELP = {"cost": "macs, params or latency: the expected cost of the final network (--cost-network, "
                         "--cost-layers, --cost-channels, or --latency-table's) joins α's objective"}

    def space(self, num_classes: int = 10, in_channels: int = 3) -> ConvSearchSpaceConfig:
        """The search network this config builds, for the data's classes and channels: the space's
        options and the fields the selected methods set."""
        return self.space_config(num_classes, in_channels, **space_options_of(self))

    def check(self) -> None:
        super().check()
        if self.cost_derive == "budget" and self.cost is None:
            raise ConfigError("{cost_derive} budget needs {cost} and {cost_target}",
                              names=("cost_derive", "cost", "cost_target"))
        if self.cost_derive == "budget" and self.derivation != "top-k":
            raise ConfigError("{cost_derive} budget trades top-k's picks for cheaper ones: it needs {derivation} "
                              "top-k", names=("cost_derive", "derivation"))
        if self.cost == "latency" and self.latency_table is None:
            raise ConfigError("{cost} latency needs {latency_table}, a table of dartsnas latency-table",
                              names=("cost", "latency_table"))
        if len(self.sample) != 2 or not all(0 < p < 1 for p in self.sample):
            raise ConfigError(f"{{sample}} needs two parts of a class in (0, 1), for w and α, got {list(self.sample)}",
                              names=("sample",))
        check_methods(self)
        self.space().validate()  # before any data is read


#: What a run's config implies when no --recipe is given: its dataset's or its method's recipe.
DATASET_RECIPES = {"imagenet": "pcdarts-imagenet"}


def implied_recipe(dataset: str, given: dict[str, Any]) -> str:
    """The recipe of a search given no --recipe: P-DARTS's with --progressive, GDAS's (or GDAS-FRC's)
    with --sampler gdas, PC-DARTS's ImageNet search on ImageNet; else none (dartsnas's defaults, the
    paper's CIFAR-10 search with the first-order gradient)."""
    if given.get("progressive"):
        return "pdarts"
    if given.get("sampler") == "gdas":
        return "gdas-frc" if given.get("reduce_cell") == "gdas" else "gdas"
    return DATASET_RECIPES.get(dataset, "none")


def search_recipe(dataset: str | None = None, **given: Any) -> SearchConfig:
    """The search config of these fields: the recipe they name (``recipe``) or imply, then the fields
    (``dataset`` None: the recipe's, else CIFAR-10). PC-DARTS's ImageNet warm-up runs only above
    batch 256, as its script's does."""
    name = given.pop("recipe", None) or implied_recipe(dataset or "cifar10", given)
    values = {"dataset": "cifar10", **with_recipe(SEARCH_RECIPES, name, given)}
    if dataset is not None:
        values["dataset"] = dataset
    if name == "pcdarts-imagenet" and "warmup_epochs" not in given and values["batch_size"] <= 256:
        values["warmup_epochs"] = 0
    return SearchConfig(**values)
