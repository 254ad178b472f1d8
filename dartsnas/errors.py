"""The library's own exception types.

Every user mistake (bad genotype, missing data, foreign checkpoint, bad option) raises a
subclass of :class:`DartsError`; the CLI prints its message on one line and exits non-zero.
Anything else escaping is a bug in dartsnas.
"""


class DartsError(Exception):
    """Base class of every error dartsnas reports to a user."""


class GenotypeError(DartsError, ValueError):
    """A genotype is malformed: unknown op, bad input index, wrong count, bad JSON."""


class DataError(DartsError):
    """A dataset is missing, incomplete, corrupted or has the wrong format."""


class CheckpointError(DartsError):
    """A checkpoint is unreadable, corrupted or belongs to another run."""


class ConfigError(DartsError, ValueError):
    """An option is out of range or conflicts with another.

    ``names`` are the config fields the message speaks of, written ``{name}`` in it: the message
    names them as fields (``batch_size``) and :meth:`at_command_line` as flags (``--batch-size``).
    """

    def __init__(self, message: str, *, names: tuple[str, ...] = ()) -> None:
        self.template, self.names = message, tuple(names)
        super().__init__(self._render(lambda name: name))

    def _render(self, spell) -> str:
        text = self.template
        for name in self.names:
            text = text.replace("{%s}" % name, spell(name))
        return text

    def at_command_line(self) -> str:
        """The message with flags for fields (``--no-verify`` style for switches that default on)."""
        return self._render(lambda name: "--" + name.replace("_", "-"))


class Interrupted(DartsError):
    """SIGTERM / SIGINT arrived: the run wrote a checkpoint at a step boundary and stopped."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Submitted(Interrupted):
    """--submit-only: the jobs are queued on the cluster; the same command run again gathers them."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0)
