"""The DARTS search loop for recurrent cells (paper, section 3.1.2; the reference search settings).

Each step takes one α step on a window of the validation stream (its hidden state carried from
window to window through the architect), then one SGD step of the weights on a training window
of random length (AWD-LSTM: 35 most of the time, 17.5 sometimes, jittered), with the learning rate
scaled by the window length and temporal activation regularisation (β) on the cell's outputs.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ArchStep, Compile, Curvature, Epochs, RunOptions, Seed, configclass, option, with_recipe
from ..data.options import CorpusData
from ..data.text import Corpus, get_window
from ..genotype import RecurrentGenotype
from ..spaces import SEARCH_SPACES
from ..spaces.rnn import RecurrentSpaceOptions
from .bilevel import BilevelSearch
from .checkpoint import GENOTYPE, tensors_to_lists
from .hooks import curvature_text
from .lm import evaluate_lm, lm_weight_loss, stream_rows, train_lm_epoch
from .rng import seed_everything

KIND = "search-rnn"


#: DARTS's rnn/train_search.py (argparse, L21-66): its defaults are dartsnas's; ``darts`` adds the paper's
#: second order (README: ``train_search.py --unrolled``), ``darts-v1`` is the first order. Its seed (3) is
#: not a recipe's: --seed stays 0 unless given.
_RNN_DARTS = dict(epochs=50, batch_size=256, lr=20.0, weight_decay=5e-7, grad_clip=0.25, arch_lr=3e-3,
                  arch_weight_decay=1e-3, emsize=300, nhid=300, bptt=35, max_seq_len_delta=20, tar=1e-3, ar=0.0,
                  dropout=0.75, dropout_h=0.25, dropout_x=0.75, dropout_i=0.2, dropout_e=0.0, nodes=8)
RNN_SEARCH_RECIPES: dict[str, dict[str, Any]] = {"darts": {**_RNN_DARTS, "order": "second"},
                                                 "darts-v1": {**_RNN_DARTS, "order": "first"}}


@configclass(batch_size=256, lr=20.0, weight_decay=5e-7, grad_clip=0.25, arch_lr=3e-3, arch_betas=(0.9, 0.999))
class RNNSearchConfig(RunOptions, Compile, Seed, Curvature, ArchStep, Epochs, CorpusData, RecurrentSpaceOptions):
    """A recurrent search; defaults are the reference search on Penn Treebank (the reference's recurrent
    architect uses Adam's default betas, the conv one 0.5)."""

    #: The search space this config searches (spaces.SEARCH_SPACES).
    SPACE = "rnn"
    TITLES = {"collapse": "collapse (Zela et al., 2020)", "corpus": "corpus and model"}
    FLAG_HELP = {"compile": "fuse the cell's time step with torch.compile (about 1.7x faster on CPU after a "
                            "one-off compilation of a minute or two)"}

    recipe: str = option("none", "DARTS's search script's settings, any flag overriding them: darts (second order, "
                         "the paper's), darts-v1 (first order); none: dartsnas's defaults (darts-v1's)",
                         choices=("none", *RNN_SEARCH_RECIPES))


def rnn_search_recipe(dataset: str | None = None, **given: Any) -> RNNSearchConfig:
    """The recurrent search config of these fields: the recipe they name (``recipe``), then the fields."""
    return RNNSearchConfig(**with_recipe(RNN_SEARCH_RECIPES, given.pop("recipe", None), given))


class RNNSearch(BilevelSearch):
    """A resumable recurrent DARTS search writing into ``out_dir``."""

    kind, what = KIND, "search"

    def __init__(self, config: RNNSearchConfig, out_dir: str | Path, *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False, log: Callable[[str], None] = print,
                 tensorboard: bool = False) -> None:
        saved = self.open(config, out_dir, resume=resume, overwrite=overwrite, quiet=quiet, log=log,
                          tensorboard=tensorboard)
        corpus = Corpus(config.data_dir, splits=(config.train_split, config.val_split))
        self.log(f"corpus {config.data_dir}: vocabulary {corpus.vocab_size:,}, {config.train_split} "
                 f"{corpus[config.train_split].numel():,} tokens, {config.val_split} "
                 f"{corpus[config.val_split].numel():,} tokens")
        rows = config.batch_size * self.dist.world_size  # the global batch's streams
        self.train_data = stream_rows(self, corpus[config.train_split], rows)
        self.val_data = stream_rows(self, corpus[config.val_split], rows)
        self.eval_data = stream_rows(self, corpus[config.val_split], config.eval_batch_size)
        seed_everything(config.seed)
        self.select_methods()
        self.space = config.space_config(
            corpus.vocab_size, emsize=config.emsize, nhid=config.nhid, dropout=config.dropout,
            dropout_h=config.dropout_h, dropout_x=config.dropout_x, dropout_i=config.dropout_i,
            dropout_e=config.dropout_e)
        model = self.place_model(SEARCH_SPACES.get(config.SPACE).build(self.space))
        if config.compile:
            model.cell.compile_step()
        # The reference's recurrent architect uses Adam's default betas (the conv one uses 0.5), and
        # its SGD no momentum. The virtual step is the weight step: clipped at --grad-clip, on NLL + TAR.
        self.bilevel(model, train_loss=functools.partial(lm_weight_loss, tar=config.tar, ar=config.ar))
        self.wrap()
        self.lengths = torch.Generator().manual_seed(config.seed)
        fixed = []
        if config.hessian_every:  # the eigenvalue's fixed validation windows, each from a zero state
            rows = self.val_data.shape[0]
            windows = [get_window(self.val_data, k * config.bptt, config.bptt)
                       for k in range(min(config.hessian_batches, max(1, (self.val_data.shape[1] - 1) // config.bptt)))]
            fixed = [(x, y, self.model.init_hidden(rows)) for x, y in windows]
        self.watch(fixed, lambda: self.model.genotype().to_dict())
        self.begin(saved)

    def state_dict(self) -> dict[str, Any]:
        return {**self.bilevel_state(), "lengths": self.lengths.get_state(), "genotype": self.model.genotype().to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_bilevel_state(state)
        self.lengths.set_state(state["lengths"])

    def train_epoch(self) -> dict[str, float]:
        """Alternate α steps on the validation stream (its state carried) and weight steps."""
        cfg = self.config
        state = {"val": self.model.init_hidden(cfg.batch_size)}

        def alpha_step(x: torch.Tensor, y: torch.Tensor, hidden: torch.Tensor, pos: int, lr: float) -> None:
            xv, yv = get_window(self.val_data, pos % (self.val_data.shape[1] - 1), cfg.bptt)
            self.architect.step((x, y, hidden), (xv, yv, state["val"].detach()), lr)
            state["val"] = self.architect.val_extra.detach()

        return train_lm_epoch(self, self.model, self.w_optimizer, self.model.weight_parameters(), self.train_data,
                              cfg, self.lengths, before_step=alpha_step, frozen=self.model.arch_parameters(),
                              carried=state, net=self.net)

    def epoch_start(self) -> dict[str, Any]:
        return {"lr": self.config.lr}

    def evaluate(self) -> dict[str, float]:
        val_loss = evaluate_lm(self.model, self.eval_data, self.config.bptt, self.dist)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50))}

    def describe(self) -> str:
        cfg = self.config
        return (f"search rnn: {cfg.order} order, {cfg.emsize}/{cfg.nhid}, N={cfg.nodes}, batch {cfg.batch_size}, "
                f"{self.where()}")

    def epoch_summary(self, record: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
        genotype = self.model.genotype()
        record.update({"genotype": genotype.to_dict(),
                       "alphas": {"recurrent": tensors_to_lists(self.model.arch_weights())}})
        return lambda r: (f"epoch {r['epoch']}/{self.config.epochs} train ppl {r['train_ppl']:.2f} | "
                          f"val ppl {r['val_ppl']:.2f}{curvature_text(r)} | {r['seconds']:.1f}s\n"
                          f"  genotype {genotype.to_json()}")

    def finish(self) -> tuple[RecurrentGenotype, list[dict[str, Any]]]:
        genotype = self.kept_genotype(self.model.genotype())
        self.write_text(GENOTYPE, genotype.to_json() + "\n")
        return genotype, self.metrics.read()


def search_rnn(config: RNNSearchConfig, out_dir: str | Path, **kwargs: Any) -> tuple[RecurrentGenotype, list]:
    """Run (or with ``resume=True`` continue) a recurrent search; returns the genotype and metrics."""
    return RNNSearch.launch(config, out_dir, **kwargs)
