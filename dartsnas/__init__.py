"""dartsnas: DARTS, Differentiable Architecture Search (Liu, Simonyan, Yang, ICLR 2019)."""
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, ConfigError, DartsError, DataError, GenotypeError
from .genotype import CONV_GENOTYPES, Genotype, derive_genotype, load_genotype
from .ops import CONV_OPS, DARTS_OPS
from .spaces import ConvSearchSpaceConfig, SearchNetwork
from . import nn  # Choice, InputChoice, SearchableModel, fix: DARTS over your own model
from .nn import SearchableModel

if TYPE_CHECKING:
    from .train.final import TrainConfig, TrainResult
    from .train.search import SearchResult
    from .train.search_config import SearchConfig

__version__ = "0.1.0"

_LAZY = {"SearchConfig": "train.search_config", "SearchResult": "train.search",  "TrainConfig": "train.final",
         "TrainResult": "train.final", "recipe": "train.final", "evaluate_checkpoint": "train.final",
         "search_model": "train.search_model", "ModelSearchConfig": "train.search_model",
         "ModelSearchResult": "train.search_model"}


def search(config: "SearchConfig", out_dir: str, **kwargs: Any) -> "SearchResult":
    """A conv search (:func:`dartsnas.train.search.search`); ``train_data`` / ``val_data`` take torch
    Datasets of (CHW image, label) in place of ``config.dataset``."""
    from .train.search import search as run
    return run(config, out_dir, **kwargs)


def train_network(config: "TrainConfig", out_dir: str, **kwargs: Any) -> "TrainResult":
    """The training of a final network (:func:`dartsnas.train.final.train`); ``train_data`` /
    ``test_data`` take torch Datasets of (CHW image, label) in place of ``config.dataset``."""
    from .train.final import train as run
    return run(config, out_dir, **kwargs)


def __getattr__(name: str) -> Any:  # the run configs without importing every training loop up front
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CONV_GENOTYPES", "CONV_OPS", "DARTS_OPS", "CheckpointError", "ConfigError",
    "ConvSearchSpaceConfig", "DartsError", "DataError", "Genotype", "GenotypeError",
    "ModelSearchConfig", "ModelSearchResult", "SearchConfig", "SearchNetwork", "SearchResult", "SearchableModel",
    "TrainConfig", "TrainResult", "derive_genotype", "evaluate_checkpoint", "load_genotype", "nn", "recipe", "search",
    "search_model", "train_network", "__version__",
]
