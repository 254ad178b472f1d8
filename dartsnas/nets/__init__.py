"""Final networks built from genotypes, registered by name."""
from .conv import (NETWORKS, AuxiliaryHead, Cell, NetworkCIFAR, NetworkConfig, NetworkImageNet,
                   build_network, check_input_size, drop_path)

__all__ = ["NETWORKS", "AuxiliaryHead", "Cell", "NetworkCIFAR", "NetworkConfig", "NetworkImageNet",
           "build_network", "check_input_size", "drop_path"]
