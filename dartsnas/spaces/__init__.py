"""Search spaces, registered by name: ``SEARCH_SPACES.get("cnn")`` (the conv cells' network) and
``"rnn"`` (the recurrent cell's language model); each is built from its space config. The search
commands look their network up here, so a space registered by a user joins the same loop."""
from ..registry import Registry

SEARCH_SPACES: Registry = Registry("search space")

from .conv import ConvSearchSpaceConfig, MixedOp, SearchCell, SearchNetwork  # noqa: E402
from .recurrent import RecurrentSearchModel, RecurrentSearchSpaceConfig, SearchRecurrentCell  # noqa: E402

__all__ = ["SEARCH_SPACES", "ConvSearchSpaceConfig", "MixedOp", "RecurrentSearchModel",
           "RecurrentSearchSpaceConfig", "SearchCell", "SearchNetwork", "SearchRecurrentCell"]
