"""Search spaces, registered by name ("cnn", later "rnn")."""
from ..registry import Registry

SEARCH_SPACES: Registry = Registry("search space")

from .conv import ConvSearchSpaceConfig, MixedOp, SearchCell, SearchNetwork  # noqa: E402
from .recurrent import RecurrentSearchModel, RecurrentSearchSpaceConfig, SearchRecurrentCell  # noqa: E402

__all__ = ["SEARCH_SPACES", "ConvSearchSpaceConfig", "MixedOp", "RecurrentSearchModel",
           "RecurrentSearchSpaceConfig", "SearchCell", "SearchNetwork", "SearchRecurrentCell"]
