"""Word-level corpora (Penn Treebank, WikiText-2) in their standard layouts, and batchify.

A corpus directory holds three splits, under any of these names:
``train.txt``/``valid.txt``/``test.txt`` (the AWD-LSTM/DARTS layout), ``ptb.{train,valid,test}.txt``
(Mikolov's distribution) or ``wiki.{train,valid,test}.tokens`` (WikiText-2). Each line is split on
whitespace and ends with ``<eos>``; the vocabulary is built over every split present, in order of
first appearance, as the reference code does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
NAMES = ("{split}.txt", "ptb.{split}.txt", "wiki.{split}.tokens")


def find_split_file(root: Path, split: str) -> Path | None:
    for pattern in NAMES:
        path = root / pattern.format(split=split)
        if path.is_file():
            return path
    return None


@dataclass
class Dictionary:
    word2idx: dict[str, int] = field(default_factory=dict)
    idx2word: list[str] = field(default_factory=list)

    def add(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


class Corpus:
    """Token id streams of the splits found in ``root`` over one shared vocabulary.

    ``splits`` names the ones that must exist (a missing one is an error naming the files looked
    for); the others are read when present so the vocabulary covers them too.
    """

    def __init__(self, root: str | os.PathLike, splits: tuple[str, ...] = SPLITS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"corpus directory {self.root} not found")
        self.dictionary = Dictionary()
        self.files: dict[str, Path] = {}
        for split in SPLITS:
            path = find_split_file(self.root, split)
            if path is None:
                if split in splits:
                    tried = ", ".join(p.format(split=split) for p in NAMES)
                    raise DataError(f"{self.root}: no {split} split (looked for {tried})")
                continue
            self.files[split] = path
        self.streams: dict[str, torch.Tensor] = {s: self._tokenize(p) for s, p in self.files.items()}

    def _tokenize(self, path: Path) -> torch.Tensor:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
        ids = []
        for line in text.splitlines():
            ids.extend(self.dictionary.add(w) for w in line.split())
            ids.append(self.dictionary.add(EOS))
        if not any(line.split() for line in text.splitlines()):
            raise DataError(f"{path}: empty corpus file")
        return torch.tensor(ids, dtype=torch.long)

    def __getitem__(self, split: str) -> torch.Tensor:
        try:
            return self.streams[split]
        except KeyError:
            raise DataError(f"{self.root}: no {split} split") from None

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)


def batchify(stream: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into ``batch_size`` contiguous rows [batch, tokens], dropping the remainder."""
    n = stream.numel() // batch_size
    if n < 2:
        raise DataError(f"{stream.numel()} tokens are too few for {batch_size} streams")
    return stream[: n * batch_size].view(batch_size, n)


def rank_rows(data: torch.Tensor, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's share of the rows of a batchified stream [rows, tokens] (contiguous, as even as
    possible). Rows are independent streams, so data-parallel ranks that each take theirs compute what
    one process computes on all of them."""
    return data.tensor_split(world_size, dim=0)[rank]


def get_window(data: torch.Tensor, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets [T, B] of the window starting at column ``start``."""
    length = min(length, data.shape[1] - 1 - start)
    window = data[:, start:start + length + 1].t()
    return window[:-1], window[1:].reshape(-1)
