"""Final networks built from genotypes, registered by name."""
from . import nb201  # noqa: F401  (registers the nb201 network)
from .conv import (FINAL_NETWORKS, NETWORKS, RESIZE_HINT, AuxiliaryHead, Cell, NetworkCIFAR, NetworkConfig,
                   NetworkImageNet, build_network, check_input_size, drop_path)

__all__ = ["FINAL_NETWORKS", "NETWORKS", "RESIZE_HINT", "AuxiliaryHead", "Cell", "NetworkCIFAR", "NetworkConfig",
           "NetworkImageNet", "build_network", "check_input_size", "drop_path"]
