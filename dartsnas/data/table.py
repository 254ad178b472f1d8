"""The one table of datasets: each name, how it is read, and which commands accept it.

Configs check ``--dataset`` against it, the command line's help lists from it, and the loaders
dispatch on its ``kind``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    #: memory: a named dataset decoded into memory; folder: ImageNet's class folders, decoded per image
    #: in DataLoader workers; own: a user's images (class folders or arrays); python: torch Datasets
    #: passed from the Python API.
    kind: str
    commands: tuple[str, ...]
    about: str
    #: The search's w / α split is the paper's (first part / rest: the files are in random order)
    #: rather than a seeded split stratified by class.
    paper_split: bool = False


DATASET_TABLE: tuple[DatasetEntry, ...] = (
    DatasetEntry("cifar10", "memory", ("search", "train"), "CIFAR-10 (python version; --download fetches it)",
                 paper_split=True),
    DatasetEntry("digits", "memory", ("search", "train"), "scikit-learn's 8x8 digits (bundled, offline)",
                 paper_split=True),
    DatasetEntry("imagenet", "folder", ("search", "train"), "ImageNet class folders (train/, val/; search: "
                 "PC-DARTS's recipe)"),
    DatasetEntry("imagefolder", "own", ("search", "train"), "your own images in class folders"),
    DatasetEntry("arrays", "own", ("search", "train"), "your own images in a NumPy .npz file"),
    DatasetEntry("python", "python", ("search", "train"), "torch Datasets passed from Python"),
)

#: The data passed to the Python API as torch Datasets.
PYTHON_DATASET = "python"


def dataset_entry(name: str) -> DatasetEntry | None:
    return next((entry for entry in DATASET_TABLE if entry.name == name), None)


def datasets_for(command: str) -> tuple[str, ...]:
    """The datasets a command accepts (every one when ``command`` is empty)."""
    return tuple(e.name for e in DATASET_TABLE if not command or command in e.commands)


def datasets_of_kind(*kinds: str) -> tuple[str, ...]:
    return tuple(e.name for e in DATASET_TABLE if e.kind in kinds)


def dataset_help(command: str) -> str:
    """The --dataset help line of a command: what each name it accepts is."""
    return "; ".join(f"{e.name}: {e.about}" for e in DATASET_TABLE
                     if command in e.commands and e.kind != "python")


#: A user's own images, read from --data-dir (statistics from the training images).
OWN_DATASETS = datasets_of_kind("own")
#: Datasets whose search split is the paper's.
PAPER_SPLIT = tuple(e.name for e in DATASET_TABLE if e.paper_split)
