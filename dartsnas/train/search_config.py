"""The conv search's config: the groups of the run, the data, DARTS's bilevel step and every method's
flags (each method's group lives in its module under ``methods/``), and the recipes that set a
dataset's defaults (PC-DARTS's ImageNet search)."""
from __future__ import annotations

from typing import Any

from ..config import ArchStep, ArchWarmup, Curvature, Epochs, FastConv, Momentum, RunOptions, Seed, configclass, option
from ..data.options import ImageData
from ..errors import ConfigError
from ..methods import check_methods, regularizers, space_options_of
from ..methods.budget import CostBudget
from ..methods.gdas import GdasOptions
from ..methods.pcdarts import PartialChannelOptions
from ..methods.pdarts import ProgressiveOptions
from ..methods.sdarts import SmoothingOptions
from ..spaces.cnn import ConvSpaceOptions
from ..spaces.conv_config import REDUCE_CELLS, ConvSearchSpaceConfig

#: The choices of --regularizer: the registered regularising methods (SDARTS-RS, DARTS-).
REGULARIZERS = regularizers()


@configclass()
class SearchConfig(RunOptions, FastConv, Seed, Curvature, ArchWarmup, GdasOptions, ArchStep, Momentum, Epochs, ImageData,
                   CostBudget, PartialChannelOptions, SmoothingOptions, ProgressiveOptions, ConvSpaceOptions):
    """Everything that defines a conv search; defaults are the paper's CIFAR-10 settings."""

    train_portion: float = option(0.5, "part of the training split that trains w; the rest trains α", above=0, below=1)
    max_skip: int | None = option(None, "cap on skip_connects in the derived normal cell", group="optimisation", min=0,
                                  default_text="none")
    regularizer: str = option("none", "sdarts-rs: weight steps see softmax(α) + U(-ε, ε) (SDARTS-RS); darts-minus: an "
                              "auxiliary skip on every edge, its weight decaying from 1 to 0 (DARTS-)",
                              group="optimisation", choices=REGULARIZERS)
    warmup_epochs: int = option(0, "linear learning-rate warm-up: epoch e < N uses lr x (e+1)/N (PC-DARTS's ImageNet "
                                "search: 5)", group="optimisation", min=0)
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
        if self.cost == "latency" and self.latency_table is None:
            raise ConfigError("{cost} latency needs {latency_table}, a table of dartsnas latency-table",
                              names=("cost", "latency_table"))
        if len(self.sample) != 2 or not all(0 < p < 1 for p in self.sample):
            raise ConfigError(f"{{sample}} needs two parts of a class in (0, 1), for w and α, got {list(self.sample)}",
                              names=("sample",))
        check_methods(self)
        self.space().validate()  # before any data is read


#: Per-dataset departures from the paper's CIFAR-10 search: PC-DARTS's ImageNet search (Xu et al., 2020:
#: 10% / 2.5% of each class for w / α, partial channels K=2, the three-conv stem, batch 1024 with lr 0.5
#: warmed up over 5 epochs, α frozen for the first 35 of 50 epochs, α learning rate 6e-3).
SEARCH_RECIPES: dict[str, dict[str, Any]] = {
    "imagenet": dict(stem="imagenet", partial_channels=2, epochs=50, batch_size=1024, lr=0.5, lr_min=0.0,
                     weight_decay=3e-4, warmup_epochs=5, arch_lr=6e-3, arch_start_epoch=35, image_size=224,
                     workers=4),
}


def search_recipe(dataset: str, **overrides: Any) -> SearchConfig:
    """The search config for ``dataset``: its recipe where it has one, then ``overrides``."""
    return SearchConfig(**{"dataset": dataset, **SEARCH_RECIPES.get(dataset, {}), **overrides})
