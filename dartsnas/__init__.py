"""dartsnas: DARTS, Differentiable Architecture Search (Liu, Simonyan, Yang, ICLR 2019)."""
from .errors import CheckpointError, ConfigError, DartsError, DataError, GenotypeError
from .genotype import CONV_GENOTYPES, Genotype, derive_genotype, load_genotype
from .ops import CONV_OPS, DARTS_OPS
from .spaces import ConvSearchSpaceConfig, SearchNetwork

__version__ = "0.1.0"

__all__ = [
    "CONV_GENOTYPES", "CONV_OPS", "DARTS_OPS", "CheckpointError", "ConfigError",
    "ConvSearchSpaceConfig", "DartsError", "DataError", "Genotype", "GenotypeError",
    "SearchNetwork", "derive_genotype", "load_genotype", "__version__",
]
