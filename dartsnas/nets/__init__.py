"""Final networks built from genotypes, registered by name."""
from .conv import (NETWORKS, AuxiliaryHead, Cell, NetworkCIFAR, NetworkConfig, NetworkImageNet,
                   build_network, drop_path)

__all__ = ["NETWORKS", "AuxiliaryHead", "Cell", "NetworkCIFAR", "NetworkConfig", "NetworkImageNet",
           "build_network", "drop_path"]
