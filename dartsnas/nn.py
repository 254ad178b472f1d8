"""Architecture choices inside any PyTorch model: DARTS over a network of your own.

Put :class:`Choice` (one of several candidate modules) and :class:`InputChoice` (which of several
tensors) where your network has a decision you are unsure of; its ``forward`` stays as it is. During
the search a choice's output is the softmax(α)-weighted sum of its candidates (the paper's equation 1),
α its own or shared by every choice of the same ``key``. :class:`SearchableModel` exposes the α, the
weights and the loss to :class:`~dartsnas.architect.Architect` (first, second or exact order), and
:func:`fix` returns the plain network of the chosen candidates::

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = Choice({"3x3": nn.Conv2d(8, 8, 3, padding=1), "5x5": nn.Conv2d(8, 8, 5, padding=2)})
            self.head = nn.Linear(8, 10)
        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)))

    space = SearchableModel(Net(), F.cross_entropy)   # arch_parameters(), named_weight_parameters(), loss(x, y)
    plain = fix(space)                                # conv is the Conv2d whose α is largest
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .spaces.base import ArchitectureSplit, is_recomputing, mixing_weights, recomputed, sampled_sum

#: A choice's pick: a candidate's name (Choice) or the chosen input indices (InputChoice).
Pick = Any


def _alpha(n: int) -> nn.Parameter:
    return nn.Parameter(1e-3 * torch.randn(n))  # DARTS's initialisation: nearly uniform, ties broken


def _check_shapes(name: str, labels: Sequence[str], tensors: Sequence[Any], what: str) -> None:
    for label, t in zip(labels, tensors):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"choice {name}: {what} {label} is a {type(t).__name__}, not a tensor")
    first = tensors[0].shape
    for label, t in zip(labels[1:], tensors[1:]):
        if t.shape != first:
            raise ConfigError(f"choice {name}: {what} {label} has shape {list(t.shape)} but {what} {labels[0]} "
                              f"{list(first)}: the {what}s of a choice must have one shape")


class Choice(nn.Module):
    """One of several candidate modules taking the same input to outputs of one shape.

    ``candidates``: a dict of name -> module (or a list: names "0", "1", ...). ``key``: choices with the
    same key share one α (the same decision taken in several places). In search, the output is
    sum_k softmax(α)_k candidate_k(input). With ``recompute`` set (``search_model(..., recompute="choice")``)
    the candidates' activations are not kept for backward but recomputed there: the memory of one
    candidate's output instead of every candidate's intermediate tensors, for about one more forward pass.
    """

    def __init__(self, candidates: Mapping[str, nn.Module] | Sequence[nn.Module], *, key: str | None = None) -> None:
        super().__init__()
        items = list(candidates.items()) if isinstance(candidates, Mapping) else \
            [(str(i), m) for i, m in enumerate(candidates)]
        if len(items) < 2:
            raise ConfigError(f"a Choice needs at least two candidates, got {len(items)}")
        for label, module in items:
            if not isinstance(label, str) or not label or "." in label:
                raise ConfigError(f"candidate name {label!r}: a non-empty string without '.' is needed")
            if not isinstance(module, nn.Module):
                raise ConfigError(f"candidate {label!r} is a {type(module).__name__}, not an nn.Module")
        self.candidates = nn.ModuleDict(dict(items))
        self.key = key
        self.alpha = _alpha(len(items))
        self.label = key or "Choice"  # its name in the model, once SearchableModel or fix has looked
        self.reached = False
        self.recompute = False
        # GDAS: (straight-through weights, index) drawn for this forward pass by SearchableModel
        self.sampled: tuple[torch.Tensor, int] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.candidates.keys())

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.reached = True
        if self.recompute and torch.is_grad_enabled() and not is_recomputing(self):
            return recomputed(self, *args, **kwargs)
        if self.sampled is not None:  # GDAS: only the drawn candidate runs
            weights, index = self.sampled
            return sampled_sum(weights, index, list(self.candidates.values())[index](*args, **kwargs))
        outputs = [module(*args, **kwargs) for module in self.candidates.values()]
        _check_shapes(self.label, [repr(n) for n in self.names], outputs, "candidate")
        weights = mixing_weights(self.alpha)
        out = weights[0].to(outputs[0].dtype) * outputs[0]
        for w, o in zip(weights[1:], outputs[1:]):
            out = out + w.to(o.dtype) * o
        return out

    def strongest(self) -> str:
        return self.names[int(self.alpha.detach().argmax())]

    def fixed(self, pick: str) -> nn.Module:
        if pick not in self.candidates:
            raise ConfigError(f"choice {self.label}: no candidate {pick!r} (candidates: {', '.join(self.names)})")
        return self.candidates[pick]


class ChosenInputs(nn.Module):
    """The fixed form of an :class:`InputChoice`: the chosen inputs (summed or averaged when several)."""

    def __init__(self, indices: Sequence[int], n_candidates: int, reduction: str = "sum") -> None:
        super().__init__()
        self.indices, self.n_candidates, self.reduction = list(indices), n_candidates, reduction

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != self.n_candidates:
            raise ConfigError(f"input choice: {len(inputs)} inputs given, {self.n_candidates} expected")
        out = inputs[self.indices[0]]
        for i in self.indices[1:]:
            out = out + inputs[i]
        return out / len(self.indices) if self.reduction == "mean" and len(self.indices) > 1 else out

    def extra_repr(self) -> str:
        return f"indices={self.indices}, reduction={self.reduction!r}"


class InputChoice(nn.Module):
    """Which of ``n_candidates`` tensors to use: called on a list of tensors of one shape. In search
    the output is sum_i softmax(α)_i inputs_i; fixed, the ``n_chosen`` strongest (summed, or averaged
    with ``reduction="mean"``)."""

    def __init__(self, n_candidates: int, n_chosen: int = 1, *, key: str | None = None, reduction: str = "sum") -> None:
        super().__init__()
        if n_candidates < 2:
            raise ConfigError(f"an InputChoice needs at least two candidates, got {n_candidates}")
        if not 1 <= n_chosen <= n_candidates:
            raise ConfigError(f"n_chosen must lie in 1..{n_candidates}, got {n_chosen}")
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"reduction must be sum or mean, got {reduction!r}")
        self.n_candidates, self.n_chosen, self.key, self.reduction = n_candidates, n_chosen, key, reduction
        self.alpha = _alpha(n_candidates)
        self.label = key or "InputChoice"
        self.reached = False

    @property
    def names(self) -> list[str]:
        return [str(i) for i in range(self.n_candidates)]

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        self.reached = True
        if len(inputs) != self.n_candidates:
            raise ConfigError(f"choice {self.label}: {len(inputs)} inputs given, {self.n_candidates} expected")
        _check_shapes(self.label, [f"#{i}" for i in range(len(inputs))], list(inputs), "input")
        weights = mixing_weights(self.alpha)
        out = weights[0].to(inputs[0].dtype) * inputs[0]
        for w, x in zip(weights[1:], inputs[1:]):
            out = out + w.to(x.dtype) * x
        return out

    def strongest(self) -> list[int]:
        return sorted(torch.topk(self.alpha.detach(), self.n_chosen).indices.tolist())

    def fixed(self, pick: Sequence[int] | int) -> nn.Module:
        indices = [pick] if isinstance(pick, int) else list(pick)
        if len(indices) != self.n_chosen or any(not isinstance(i, int) or not 0 <= i < self.n_candidates
                                                for i in indices):
            raise ConfigError(f"choice {self.label}: pick {pick!r} is not {self.n_chosen} distinct input(s) "
                              f"of 0..{self.n_candidates - 1}")
        if len(set(indices)) != len(indices):
            raise ConfigError(f"choice {self.label}: pick {pick!r} repeats an input")
        return ChosenInputs(sorted(indices), self.n_candidates, self.reduction)


ChoiceModule = (Choice, InputChoice)


def choice_modules(model: nn.Module) -> dict[str, list[tuple[str, nn.Module]]]:
    """The choices of ``model`` by name (their key, else their path), each with the paths of the modules
    taking it; checks that choices sharing a key have the same candidates."""
    groups: dict[str, list[tuple[str, nn.Module]]] = {}
    names: dict[int, str] = {}  # a module registered at several paths is one choice
    for path, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, ChoiceModule):
            if any(path.startswith(f"{p}.") for g in groups.values() for p, _ in g if p):
                raise ConfigError(f"choice {path}: a choice inside a candidate of another choice is not supported")
            name = names.setdefault(id(module), module.key or path or "root")
            groups.setdefault(name, []).append((path, module))
            module.label = name  # errors name the choice as the model and choices.json do
    for name, members in groups.items():
        first = members[0][1]
        for path, other in members[1:]:
            if type(other) is not type(first) or other.names != first.names or \
                    getattr(other, "n_chosen", None) != getattr(first, "n_chosen", None):
                raise ConfigError(f"choices with key {name!r} differ: {members[0][0]} has candidates "
                                  f"{first.names}, {path} has {other.names}")
    return groups


class SearchableModel(ArchitectureSplit, nn.Module):
    """A model holding choices, as the :class:`~dartsnas.architect.Architect` sees a search model: its α
    (one per choice name; shared keys share it), its weights (everything else) and ``loss(inputs,
    targets)`` = ``loss_fn(model(inputs), targets)``. The model itself is unchanged except that choices
    sharing a key now hold the same α parameter. With a ``sampler`` (GDAS) every forward pass draws one
    candidate per choice name (choices sharing a key share the draw) and runs only that one."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.groups = choice_modules(model)
        if not self.groups:
            raise ConfigError("the model holds no Choice or InputChoice: nothing to search")
        for name, members in self.groups.items():
            shared = members[0][1].alpha
            for _, module in members:
                module.alpha = shared  # one Parameter: named_parameters() lists it once
        self.sampler: Any = None  # GDAS: a methods.gdas.GumbelSampler

    def arch_parameters(self) -> list[nn.Parameter]:
        return [members[0][1].alpha for members in self.groups.values()]

    def forward(self, *inputs: Any) -> Any:
        return self._run(inputs)

    def loss(self, inputs: Any, targets: Any) -> torch.Tensor:
        return self.loss_fn(self._run((inputs,)), targets)

    def _run(self, inputs: tuple[Any, ...]) -> Any:
        samplable = [(name, members) for name, members in self.groups.items() if isinstance(members[0][1], Choice)]
        if self.sampler is None or not samplable:
            return self.model(*inputs)
        for name, members in samplable:  # one draw per choice name, in the model's order
            weights, index = self.sampler.sample(members[0][1].alpha, self.training)
            for _, m in members:
                m.sampled = (weights, int(index))
        try:
            return self.model(*inputs)
        finally:
            for _, members in samplable:
                for _, m in members:
                    m.sampled = None

    def choices(self) -> Iterator[tuple[str, nn.Module]]:
        for name, members in self.groups.items():
            yield name, members[0][1]

    @torch.no_grad()
    def check_reached(self, *inputs: Any) -> None:
        """One forward pass on ``inputs`` (eval mode: no statistics move) must use every choice, or its
        α would never learn (and the α gradient would fail)."""
        for members in self.groups.values():
            for _, m in members:
                m.reached = False
        was = self.training
        self.eval()
        try:
            self.model(*inputs)
        finally:
            self.train(was)
        for name, members in self.groups.items():
            if not any(m.reached for _, m in members):
                raise ConfigError(f"choice {name}: no forward pass reached it (its α would get no gradient): "
                                  "use it in forward or remove it")

    def weights(self) -> dict[str, dict[str, float]]:
        """softmax(α) of every choice: {choice name: {candidate name (input index): weight}}."""
        return {name: {c: round(float(v), 6) for c, v in zip(m.names, mixing_weights(m.alpha.detach()))}
                for name, m in self.choices()}

    def picks(self) -> dict[str, Pick]:
        """The candidate (or input indices) each choice's α ranks first: what :func:`fix` keeps."""
        return {name: m.strongest() for name, m in self.choices()}


def fix(model: nn.Module, choices: Mapping[str, Pick] | None = None) -> nn.Module:
    """A copy of ``model`` (or of a :class:`SearchableModel`'s model) with every choice replaced by its
    pick: the strongest α, or ``choices`` ({name: candidate name or input indices}, as a search writes
    to choices.json; every choice must be named). Unchosen candidates and α are gone: the result is a
    plain network whose parameters and state dict are those of the network written by hand."""
    if isinstance(model, SearchableModel):
        model = model.model
    groups = choice_modules(model)
    if choices is not None:
        unknown = sorted(set(choices) - set(groups))
        if unknown:
            raise ConfigError(f"choices name unknown choice(s) {', '.join(unknown)} (the model's: {', '.join(groups)})")
        missing = [name for name in groups if name not in choices]
        if missing:
            raise ConfigError(f"choices name no pick for {', '.join(missing)}")
    fixed = copy.deepcopy(model)
    fixed_groups = choice_modules(fixed)
    for name, members in fixed_groups.items():
        pick = choices[name] if choices is not None else members[0][1].strongest()
        for path, module in members:
            chosen = module.fixed(pick)
            if not path:  # the model itself is a choice
                return chosen
            parent, _, child = path.rpartition(".")
            setattr(fixed.get_submodule(parent) if parent else fixed, child, chosen)
    return fixed
