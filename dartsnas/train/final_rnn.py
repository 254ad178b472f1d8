"""Training and evaluation of the final recurrent language model (paper, section 3.2).

SGD with the reference's settings (lr 20, batch 64, variable-length BPTT around 35, clip 0.25,
weight decay 8e-7, TAR 1e-3), switching to averaged SGD once the validation loss has not improved
on the best of all but the last ``nonmono`` epochs (the non-monotone trigger of AWD-LSTM). With
ASGD, validation and the saved model use the averaged weights. Test perplexity is reported at
batch size 1, as the reference does.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import Compile, Epochs, RunOptions, Seed, configclass, option
from ..data.options import CorpusData
from ..data.text import Corpus, batchify
from ..errors import CheckpointError, ConfigError
from ..genotype import RecurrentGenotype, load_genotype
from ..nets.recurrent import RNNConfig, build_rnn_model
from .checkpoint import CHECKPOINT, load_checkpoint, model_file, save_checkpoint
from .common import resolve_device
from .lm import evaluate_lm, stream_rows, train_lm_epoch
from .loop import Run
from .rng import seed_everything

KIND = "train-rnn"
MODEL = "model.pt"


@configclass(epochs=8000, batch_size=64, lr=20.0, weight_decay=8e-7, grad_clip=0.25, emsize=850, nhid=850,
             dropout_e=0.1)
class RNNTrainConfig(RunOptions, Compile, Seed, Epochs, CorpusData):
    """Final recurrent training; defaults are the reference's Penn Treebank settings."""

    genotype: str = option("DARTS_V2", "built-in name, genotype.json or search run directory")
    test_split: str = option("test", group="corpus")
    test_batch_size: int = option(1, group="corpus", min=1, resumable=True)
    nonmono: int = option(5, "epochs without improvement before ASGD", group="corpus", min=1)

    TITLES = {"corpus": "corpus and model"}
    FLAG_HELP = {
        "compile": "fuse the cell's time step with torch.compile (about 1.7x faster on CPU after a one-off "
                   "compilation of a minute or two)"}

    def check(self) -> None:
        super().check()
        if self.emsize != self.nhid:
            raise ConfigError(f"tied weights need {{emsize}} == {{nhid}}, got {self.emsize} and {self.nhid}",
                              names=("emsize", "nhid"))

    def model_config(self, vocab_size: int) -> RNNConfig:
        return RNNConfig(vocab_size=vocab_size, emsize=self.emsize, nhid=self.nhid, dropout=self.dropout,
                         dropout_h=self.dropout_h, dropout_x=self.dropout_x, dropout_i=self.dropout_i,
                         dropout_e=self.dropout_e)


class averaged_weights:
    """Swap the ASGD running averages into the model for the block (no-op under plain SGD)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer, self.saved = model, optimizer, None

    def __enter__(self) -> None:
        if isinstance(self.optimizer, torch.optim.ASGD):
            self.saved = [p.detach().clone() for p in self.model.parameters()]
            with torch.no_grad():
                for p in self.model.parameters():
                    if "ax" in self.optimizer.state.get(p, {}):
                        p.copy_(self.optimizer.state[p]["ax"])

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            with torch.no_grad():
                for p, s in zip(self.model.parameters(), self.saved):
                    p.copy_(s)


class RNNTraining(Run):
    """A resumable final training of a recurrent genotype writing into ``out_dir``."""

    kind, what = KIND, "training"

    def __init__(self, config: RNNTrainConfig, out_dir: str | Path, *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False, log: Callable[[str], None] = print,
                 tensorboard: bool = False) -> None:
        saved = self.open(config, out_dir, resume=resume, overwrite=overwrite, quiet=quiet, log=log,
                          tensorboard=tensorboard)
        if saved is not None:
            self.genotype = RecurrentGenotype.from_dict(saved["genotype"], source=str(self.out / CHECKPOINT))
        else:
            self.genotype = load_genotype(config.genotype, "rnn")
        corpus = Corpus(config.data_dir, splits=(config.train_split, config.val_split, config.test_split))
        self.vocab_size = corpus.vocab_size
        self.log(f"corpus {config.data_dir}: vocabulary {corpus.vocab_size:,}; {config.train_split} "
                 f"{corpus[config.train_split].numel():,} tokens")
        self.train_data = stream_rows(self, corpus[config.train_split], config.batch_size * self.dist.world_size)
        self.val_data = stream_rows(self, corpus[config.val_split], config.eval_batch_size)
        seed_everything(config.seed)
        self.model = self.place_model(build_rnn_model(self.genotype, config.model_config(corpus.vocab_size)))
        self.net = self.dist.wrap(self.model)
        if config.compile:
            self.model.cell.compile_step()
        self.optimizer: torch.optim.Optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr,
                                                                weight_decay=config.weight_decay)
        self.lengths = torch.Generator().manual_seed(config.seed)
        self.val_history: list[float] = []
        self.best_val = math.inf
        self.begin(saved)

    @property
    def asgd(self) -> bool:
        return isinstance(self.optimizer, torch.optim.ASGD)

    def _switch_to_asgd(self) -> None:
        self.optimizer = torch.optim.ASGD(self.model.parameters(), lr=self.config.lr, t0=0, lambd=0.0,
                                          weight_decay=self.config.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "asgd": self.asgd, "lengths": self.lengths.get_state(),
                "val_history": list(self.val_history), "best_val": self.best_val, "vocab_size": self.vocab_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["asgd"]:
            self._switch_to_asgd()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lengths.set_state(state["lengths"])
        self.val_history = list(state["val_history"])
        self.best_val = float(state["best_val"])

    def train_epoch(self) -> dict[str, float]:
        return train_lm_epoch(self, self.model, self.optimizer, list(self.model.parameters()), self.train_data,
                              self.config, self.lengths, net=self.net)

    def epoch_start(self) -> dict[str, Any]:
        return {"optimizer": "asgd" if self.asgd else "sgd"}

    def evaluate(self) -> dict[str, Any]:
        """Validation with the averaged weights under ASGD; the best model is saved, and ASGD starts
        once the loss has not improved on the best of all but the last ``nonmono`` epochs."""
        cfg = self.config
        with averaged_weights(self.model, self.optimizer):
            val_loss = evaluate_lm(self.model, self.val_data, cfg.bptt, dist=self.dist)
            if val_loss < self.best_val:
                self.best_val = val_loss
                self._save_model()
        switched = {}
        if not self.asgd and len(self.val_history) > cfg.nonmono and val_loss > min(self.val_history[:-cfg.nonmono]):
            self._switch_to_asgd()
            self.log(f"switching to averaged SGD after epoch {self.epoch + 1}")
            switched = {"switched_to_asgd": True}
        self.val_history.append(val_loss)
        return {**switched, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50))}

    def describe(self) -> str:
        cfg = self.config
        params = sum(p.numel() for p in self.model.parameters())
        return f"train rnn: {cfg.emsize}/{cfg.nhid}, {params:,} parameters, {self.where()}"

    def epoch_summary(self, record: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
        return lambda r: (f"epoch {r['epoch']}/{self.config.epochs} ({r['optimizer']}) train ppl "
                          f"{r['train_ppl']:.2f} | val ppl {r['val_ppl']:.2f} | {r['seconds']:.1f}s")

    def finish(self) -> list[dict[str, Any]]:
        cfg = self.config
        if self.dist.is_main:  # the best model, on the test split (one process is enough)
            result = evaluate_perplexity(self.out / MODEL, split=cfg.test_split, device=str(self.device))
            self.log(f"test ppl {result['ppl']:.2f} (best model, batch size {cfg.test_batch_size})")
            self.metrics.append({"test_loss": result["loss"], "test_ppl": result["ppl"]})
        self.dist.barrier()
        return self.metrics.read()

    def _save_model(self) -> None:
        self.dir.write_started()  # the first epoch's best model comes before its metrics line
        if self.dist.is_main:
            save_checkpoint(self.out / MODEL, {"kind": "model-rnn", "config": self.config.to_dict(),
                                               "genotype": self.genotype.to_dict(), "vocab_size": self.vocab_size,
                                               "model": self.model.state_dict()})


def train_rnn(config: RNNTrainConfig, out_dir: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """Train (or with ``resume=True`` continue) a recurrent genotype; the last record is the test result."""
    return RNNTraining.launch(config, out_dir, **kwargs)


def evaluate_perplexity(path: str | Path, *, split: str = "test", data_dir: str | None = None,
                        batch_size: int | None = None, device: str = "auto",
                        state: dict[str, Any] | None = None) -> dict[str, float]:
    """Mean NLL and perplexity of a trained recurrent model (model.pt, checkpoint.pt or run dir);
    ``state`` is that file's content when the caller has already loaded it."""
    path = model_file(path)
    state = state if state is not None else load_checkpoint(path)
    if state.get("kind") not in (KIND, "model-rnn"):
        raise CheckpointError(f"{path}: a {state.get('kind')!r} checkpoint, not a trained recurrent model")
    config = RNNTrainConfig.from_dict(state["config"])
    corpus = Corpus(data_dir or config.data_dir, splits=(split,))
    if corpus.vocab_size != state["vocab_size"]:
        raise CheckpointError(f"{path}: trained on a {state['vocab_size']:,}-word vocabulary, "
                              f"{corpus.root} has {corpus.vocab_size:,}")
    dev = resolve_device(device)
    model = build_rnn_model(RecurrentGenotype.from_dict(state["genotype"]), config.model_config(corpus.vocab_size))
    model.load_state_dict(state["model"])
    data = batchify(corpus[split], batch_size or config.test_batch_size).to(dev)
    loss = evaluate_lm(model.to(dev), data, config.bptt)
    return {"loss": loss, "ppl": math.exp(loss)}
