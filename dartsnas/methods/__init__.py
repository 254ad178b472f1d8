"""Search methods, registered by name: DARTS and the successors that change how it searches.

A method is one module holding one :class:`SearchMethod` subclass (and its config group, if it has
flags). A search asks the registry which methods its config selects (:func:`methods_of`) and lets
each one play its part; DARTS itself (``darts``) is the base every search starts from. See
``docs/architecture.md`` ("A new method") for the parts and a worked example.
"""
from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry
from ..train.hooks import Hook


class SearchMethod(Hook):
    """One method's part in a bilevel search; every part is optional.

    A method is a hook of the run (``epoch_start`` / ``epoch_end`` / ``epoch_saved`` / ``stops``, a
    ``key`` and ``state_dict`` for what it keeps across a resume), and besides:

    - ``applies(config)``: whether a search config selects it (its flags);
    - ``check(config)``: its cross-field rules, before any data is read;
    - ``first_space(space, saved)``: the space of the run's first network (a staged method's first
      stage, or a resumed run's stage from its checkpoint ``saved``);
    - ``label(config)``: its part of the method's name (leaderboards, ``select``);
    - ``space_options(config)``: the fields of the search space's config it sets;
    - ``attach(run)``: once the search network, its optimisers and the architect exist (and again
      when a stage rebuilds them): the sampler of the mixing weights, the terms it adds to α's
      objective (``run.architect.terms``);
    - ``perturb(run)``: the mixing weights the weight step sees instead of softmax(α), or None;
    - ``alpha_moves(run)``: whether this epoch takes α steps (None: not this method's call);
    - ``schedule(run)``: before an epoch, (epoch, epochs, record fields) of the learning-rate schedule
      where the method runs its own (P-DARTS's stages), else None;
    - ``record(run, record, genotype)``: its fields of the epoch's record, and its part of the line;
    - ``run_state(run)`` / ``load_run_state(state)``: entries at the top of the checkpoint;
    - ``extra_epochs(run)``: epochs the method runs after the search's (DARTS-PT's selection);
    - ``derive(run)``: the genotype where the method derives it instead of α's top-k, or None.
    """

    name = ""
    #: Whether the weight step leaves some weights without gradients (DistributedDataParallel must look).
    unused_parameters = False
    #: Whether a step updates w first, then α on the updated w (GDAS); DARTS's Algorithm 1 is α first.
    weights_first = False

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def applies(cls, config: Any) -> bool:
        return False

    @classmethod
    def check(cls, config: Any) -> None:
        """Raise a ConfigError naming the fields that do not combine (called by the config's check)."""

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return ""

    @classmethod
    def space_options(cls, config: Any) -> dict[str, Any]:
        return {}

    def first_space(self, space: Any, saved: dict[str, Any] | None) -> Any:
        return space

    def attach(self, run: Any) -> None:
        pass

    def perturb(self, run: Any) -> Callable[[], Any] | None:
        return None

    def alpha_moves(self, run: Any) -> bool | None:
        return None

    def schedule(self, run: Any) -> tuple[int, int, dict[str, Any]] | None:
        return None

    def record(self, run: Any, record: dict[str, Any], genotype: Any) -> str:
        return ""

    def prefix(self, record: dict[str, Any]) -> str:
        """Its part of the epoch line's start (after the epoch count)."""
        return ""

    def describe(self) -> str:
        """Its part of the run's first line."""
        return ""

    def run_state(self, run: Any) -> dict[str, Any]:
        return {}

    def extra_epochs(self, run: Any) -> int:
        return 0

    def derive(self, run: Any) -> Any:
        return None

    def load_run_state(self, state: dict[str, Any]) -> None:
        pass


class Regularizer(SearchMethod):
    """A method chosen by ``--regularizer NAME``, its registered name (SDARTS-RS, DARTS-)."""

    @classmethod
    def applies(cls, config: Any) -> bool:
        return getattr(config, "regularizer", "none") == cls.name

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return f"+{cls.name}" if config.get("regularizer") == cls.name else ""


#: The method classes; their order (registration's) is the order their parts run in.
SEARCH_METHODS: Registry = Registry("search method")


def regularizers() -> tuple[str, ...]:
    """The choices of ``--regularizer``: none, or a registered :class:`Regularizer`."""
    return ("none", *(cls.name for cls in SEARCH_METHODS.values() if issubclass(cls, Regularizer)))


def methods_of(config: Any) -> list[SearchMethod]:
    """The methods ``config`` selects, in the registry's order, each made for this run."""
    return [cls(config) for cls in SEARCH_METHODS.values() if cls.applies(config)]


def space_options_of(config: Any) -> dict[str, Any]:
    """The fields of the search space's config that the methods ``config`` selects set."""
    options: dict[str, Any] = {}
    for cls in SEARCH_METHODS.values():
        if cls.applies(config):
            options.update(cls.space_options(config))
    return options


def check_methods(config: Any) -> None:
    """Every registered method's rules for ``config`` (a method not selected checks nothing)."""
    for cls in SEARCH_METHODS.values():
        cls.check(config)


#: How a label joins a method's name: a regulariser (+...), then the order ( (...)), then a budget (, ...).
_SUFFIXES = ("+", " ", ",")


def method_name(config: dict[str, Any]) -> str:
    """The name of the method a search run's config (its config.json) ran: the first method that
    names itself (p-darts, gdas, pc-darts; darts otherwise), then what the others add."""
    parts = [cls.label(config) for cls in SEARCH_METHODS.values()]
    head = next((p for p in parts if p and not p.startswith(_SUFFIXES)), "darts")
    return head + "".join(sorted((p for p in parts if p.startswith(_SUFFIXES)), key=lambda p: _SUFFIXES.index(p[0])))


from . import darts, pdarts, gdas, drnas_progressive, drnas, pcdarts, sdarts, darts_minus, beta_decay, budget, pt  # noqa: E402,F401  (registration)

__all__ = ["SEARCH_METHODS", "Regularizer", "SearchMethod", "check_methods", "method_name", "methods_of",
           "regularizers", "space_options_of"]
