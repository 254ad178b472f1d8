"""Training and evaluation of final networks from a genotype (paper, section 3.2).

Recipes: the defaults of :class:`TrainConfig` are the paper's CIFAR-10 recipe; :data:`RECIPES`
holds the per-dataset changes (ImageNet mobile: 250 epochs, batch 128, lr 0.1 decayed by 0.97 per
epoch, label smoothing 0.1, ...). Every value can be overridden.

A run directory holds ``metrics.jsonl`` (one record per epoch), ``checkpoint.pt`` (resumable) and,
at the end, ``model.pt`` (weights, genotype and network config, for ``dartsnas eval``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..data import (PYTHON_DATASET, BatchLoader, data_root, is_folder_dataset, load_splits, split_by_dataset,
                    stratified_split)
from ..data.folder import FolderLoader, folder_datasets, folder_info
from ..errors import CheckpointError, ConfigError
from ..genotype import Genotype, genotype_from_dict, load_genotype
from ..nets import NETWORKS, RESIZE_HINT, NetworkConfig, build_network, check_input_size
from .checkpoint import CHECKPOINT, load_checkpoint, model_file, save_checkpoint
from ..config import Compile, Epochs, FastConv, Momentum, RunOptions, Seed, configclass, option
from ..data.options import ImageData
from .common import autocast, cosine_lr, python_data_config, resolve_device
from .loop import Run, batch_source, set_lr
from .meters import ClassifierEpoch, EpochMeter, evaluate
from .rng import seed_everything

KIND = "train-cnn"
#: The runs (and model files) of a trained conv network: train cnn's and train nb201's.
CNN_MODEL_KINDS = (KIND, "model-cnn", "train-nb201")
MODEL = "model.pt"


@configclass(epochs=600, batch_size=96, lr_min=0.0)
class TrainConfig(RunOptions, Compile, FastConv, Seed, Momentum, Epochs, ImageData):
    """A final-network training run; defaults are the paper's CIFAR-10 recipe (600 epochs)."""

    genotype: str = option("DARTS_V2", "built-in name, genotype.json or search run directory")
    train_portion: float = option(1.0, "train on this part of the training split and report val_* on the held-out "
                                  "rest instead of the test split (the paper's selection)", above=0, max=1)
    network: str = option("cifar", "cifar or imagenet: DARTS's networks of a conv genotype; nb201: NAS-Bench-201's of "
                          "an arch string (train nb201 has its recipe)", group="network",
                          choices=("cifar", "imagenet", "nb201"))
    init_channels: int = option(36, "C", group="network", min=1)
    layers: int = option(20, "cells L", group="network", min=1)
    lr_schedule: str = option("cosine", "cosine (to --lr-min) or exponential (lr x gamma^epoch)", group="optimisation",
                              choices=("cosine", "exponential"))
    lr_gamma: float = option(0.97, "decay per epoch of --lr-schedule exponential", group="optimisation", above=0)
    label_smoothing: float = option(0.0, group="optimisation", min=0, below=1)
    auxiliary_weight: float = option(0.4, "0 disables the auxiliary head", group="optimisation", min=0)
    drop_path: float = option(0.2, "final drop-path probability (scheduled: drop_path x epoch / epochs)",
                              group="optimisation", min=0, below=1)
    cutout: int = option(16, "cutout square size, 0 disables", group="optimisation", min=0)

    DATASET_COMMAND = "train"
    TITLES = {"optimisation": "optimisation (defaults: the paper's CIFAR-10 recipe)"}
    FLAG_HELP = {"compile": "run every cell through torch.compile (minutes of one-off compilation; no faster on CPU, "
                            "measure on your GPU with benchmarks/train_step.py --compile)"}

    def check(self) -> None:
        super().check()
        if self.train_portion < 1.0 and is_folder_dataset(self.dataset):
            raise ConfigError(f"{{train_portion}} below 1 is not available for {self.dataset}", names=("train_portion",))


#: A user's data without a test split: this share of the training images is held out to test on.
HELD_OUT = 0.1
_OWN = dict(cutout=0)
#: Per-dataset departures from the CIFAR-10 recipe (the paper's settings where it gives them).
RECIPES: dict[str, dict[str, Any]] = {
    "cifar10": {},
    "imagenet": dict(network="imagenet", init_channels=48, layers=14, epochs=250, batch_size=128, lr=0.1,
                     lr_schedule="exponential", lr_gamma=0.97, weight_decay=3e-5, label_smoothing=0.1,
                     drop_path=0.0, cutout=0, image_size=224, workers=4),
    "imagefolder": _OWN,
    "arrays": _OWN,
    PYTHON_DATASET: _OWN,
    "digits": dict(init_channels=16, layers=8, epochs=30, batch_size=64, lr=0.05, cutout=2),
}


def recipe(dataset: str | None = None, **overrides: Any) -> TrainConfig:
    """The config for ``dataset`` (None: CIFAR-10): the paper's recipe for it, then ``overrides``."""
    dataset = dataset or "cifar10"
    return TrainConfig(**{"dataset": dataset, **RECIPES.get(dataset, {}), **overrides})


def learning_rate(config: TrainConfig, epoch: int) -> float:
    if config.lr_schedule == "exponential":
        return config.lr * config.lr_gamma ** epoch
    return cosine_lr(epoch, config.epochs, config.lr, config.lr_min)


def build_loaders(config: TrainConfig, device: torch.device, *, train_split: bool = True,
                  rank: int = 0, world_size: int = 1, train_data: Any = None, test_data: Any = None,
                  info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Training and test loaders of ``config.dataset`` (or of torch Datasets ``train_data`` /
    ``test_data``), with its class count, channel count and data info (data parallel: this rank's
    share of each global batch). ``info``, a trained model's data, fixes how a user's test images
    are read when the training split is not loaded."""
    common = dict(device=device, channels_last=config.channels_last, rank=rank, world_size=world_size)
    if is_folder_dataset(config.dataset):
        root = data_root(config.data_dir)
        size = config.image_size or 224
        train_ds, test_ds, classes = folder_datasets(root, image_size=size, seed=config.seed)
        out = {"num_classes": len(classes), "in_channels": 3,
               "description": f"{root}: {len(classes)} classes, {len(train_ds)} train / {len(test_ds)} test images",
               "info": folder_info(config.dataset, classes, size),
               "test": FolderLoader(test_ds, batch_size=config.batch_size, shuffle=False, drop_last=False,
                                    workers=config.workers, **common)}
        if train_split:
            out["train"] = FolderLoader(train_ds, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                        workers=config.workers, seed=config.seed, **common)
        return out
    common["workers"] = config.workers
    train, test = load_splits(config.dataset, config.data_dir, download=config.download, verify=config.verify,
                              options=config.own_data_options(info), train=train_split, train_data=train_data,
                              test_data=test_data)
    first = train if train is not None else test
    out = {"num_classes": first.num_classes, "in_channels": first.in_channels,
           "info": info or first.info(), "description": "; ".join(d.description for d in (train, test) if d)}
    indices = test_idx = None
    if test is None:  # a user's data without a test split: hold some training images out
        indices, test_idx = stratified_split(train.labels, 1 - HELD_OUT, config.seed)
        out["description"] += f"; no test split: {len(test_idx)} training images ({HELD_OUT:.0%}) held out to test on"
    out["test"] = BatchLoader(test or train, test_idx, batch_size=max(config.batch_size, 256), shuffle=False,
                              augment=False, **common)
    if train_split:
        if config.train_portion < 1.0:  # the paper's selection: train on part, rank on the held-out rest
            pool = indices if indices is not None else torch.arange(len(train))
            part, rest = split_by_dataset(train.name, train.labels[pool], config.train_portion, config.seed)
            indices, val_idx = pool[part], pool[rest]
            out["val"] = BatchLoader(train, val_idx, batch_size=max(config.batch_size, 256),
                                     shuffle=False, augment=False, **common)
            out["description"] += f"; {len(indices)} train / {len(val_idx)} held-out validation images"
        out["train"] = BatchLoader(train, indices, batch_size=config.batch_size, cutout=config.cutout,
                                   seed=config.seed, drop_last=True, **common)
    return out


def network_config(config: TrainConfig, genotype: Genotype, num_classes: int, in_channels: int) -> NetworkConfig:
    """The final network a training config builds, for ``num_classes`` classes of ``in_channels`` channels."""
    return NetworkConfig(genotype, init_channels=config.init_channels, layers=config.layers,
                         num_classes=num_classes, in_channels=in_channels,
                         auxiliary=config.auxiliary_weight > 0)


class WithAuxiliary(torch.nn.Module):
    """``forward`` returning (logits, auxiliary logits), so that DistributedDataParallel, which hooks
    ``forward`` only, sees the training forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.forward_with_aux(x)


class Training(Run):
    """A resumable training run of a final network writing into ``out_dir``."""

    kind, what = KIND, "training"

    def __init__(self, config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False, log: Callable[[str], None] = print,
                 tensorboard: bool = False, train_data: Any = None, test_data: Any = None) -> None:
        config = python_data_config(config, train_data, test_data, "test_data")
        saved = self.open(config, out_dir, resume=resume, overwrite=overwrite, quiet=quiet, log=log,
                          tensorboard=tensorboard)
        if saved is not None:
            self.genotype = genotype_from_dict(saved["genotype"], source=str(self.out / CHECKPOINT))
        else:
            self.genotype = load_genotype(config.genotype, "nb201" if config.network == "nb201" else "cnn")
        self.autocast = autocast(self.device, config.amp)
        data = build_loaders(config, self.device, rank=self.dist.rank, world_size=self.dist.world_size,
                             train_data=train_data, test_data=test_data)
        self.log(data["description"])
        self.data_info = data["info"]
        self.train_loader, self.test_loader = data["train"], data["test"]
        self.val_loader = data.get("val")
        if len(self.train_loader) == 0:
            raise ConfigError(f"{{batch_size}} {config.batch_size} is larger than the training set", names=("batch_size",))
        H, W = self.data_info["image_size"]
        check_input_size(f"--network {config.network}", NETWORKS.get(config.network).downsampling, H, W,
                         RESIZE_HINT if config.dataset == "imagefolder" else "")
        seed_everything(config.seed)
        self.net_config = network_config(config, self.genotype, data["num_classes"], data["in_channels"])
        self.model = self.place_model(build_network(config.network, self.net_config), config.channels_last)
        if config.compile:
            self.model.compile_cells()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=config.nesterov)
        self.net = self.dist.wrap(WithAuxiliary(self.model), broadcast_buffers=not config.sync_bn)
        self.begin(saved, self.data_info)

    def state_dict(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "data": self.data_info, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "loader": self.train_loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_loader.load_state_dict(state["loader"])

    def train_epoch(self) -> dict[str, float]:
        cfg, model = self.config, self.model
        model.train()
        state = ClassifierEpoch(EpochMeter(self.device, self.dist))
        check = self.checks_every_step
        batches = batch_source(self.train_loader)

        def step(i: int) -> tuple[int, bool, dict[str, Any]]:
            x, y = batches()
            with self.autocast:
                logits, aux = self.net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if aux is not None:
                    loss = loss + cfg.auxiliary_weight * F.cross_entropy(aux.float(), y,
                                                                         label_smoothing=cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            ok = not check or self.all_finite(loss, grad_norm)
            if ok:
                self.optimizer.step()
                state.update(loss, logits, y)
            return y.shape[0], ok, {"loss": loss, "acc": lambda: state.meter.accuracy}

        steps, seconds = self.run_steps(state, step, self.epoch_steps(self.train_loader, cfg.steps_per_epoch))
        return state.summary(self, steps, seconds)

    def epoch_start(self) -> dict[str, Any]:
        lr = learning_rate(self.config, self.epoch)
        set_lr(self.optimizer, lr)
        self.model.drop_path_prob = self.config.drop_path * self.epoch / self.config.epochs
        return {"lr": lr, "drop_path_prob": self.model.drop_path_prob}

    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5 on the held-out validation split when there is one (selection), else the test split."""
        split, loader = ("val", self.val_loader) if self.val_loader is not None else ("test", self.test_loader)
        return {f"{split}_{k}": v for k, v in evaluate(self.model, loader, self.dist).items()}

    def describe(self) -> str:
        cfg = self.config
        params = sum(p.numel() for p in self.model.parameters())
        return (f"train cnn: {cfg.network} network C={cfg.init_channels} L={cfg.layers}, {params:,} "
                f"parameters, {self.where()}")

    def epoch_summary(self, record: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
        split = "val" if self.val_loader is not None else "test"
        return lambda r: (f"epoch {r['epoch']}/{self.config.epochs} lr {r['lr']:.5f} drop-path "
                          f"{r['drop_path_prob']:.3f} train loss {r['train_loss']:.4f} acc "
                          f"{r['train_acc']:.4f} | {split} loss {r[f'{split}_loss']:.4f} top1 "
                          f"{r[f'{split}_top1']:.4f} top5 {r[f'{split}_top5']:.4f} | {r['seconds']:.1f}s")

    def finish(self) -> list[dict[str, Any]]:
        if self.dist.is_main:
            save_checkpoint(self.out / MODEL, {"kind": "model-cnn", "config": self.config.to_dict(),
                                               "genotype": self.genotype.to_dict(), "data": self.data_info,
                                               "model": self.model.state_dict()})
        self.dist.barrier()
        return self.metrics.read()


@dataclass
class TrainResult:
    """A finished training run: per-epoch metrics and the run directory holding model.pt."""

    metrics: list[dict[str, Any]]
    out_dir: Path

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL


def train(config: TrainConfig, out_dir: str | Path, **kwargs: Any) -> TrainResult:
    """Train (or with ``resume=True`` continue) a final network.

    ``train_data`` (and ``test_data``, evaluated each epoch) may be any torch Dataset of (CHW image,
    label), uint8 or float in [0, 1], in place of ``config.dataset`` (recorded as ``python``).
    """
    return TrainResult(Training.launch(config, out_dir, **kwargs), Path(out_dir))


def evaluate_checkpoint(path: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                        device: str = "auto", batch_size: int = 256, verify: bool = True,
                        state: dict[str, Any] | None = None, test_data: Any = None) -> dict[str, float]:
    """Loss, top-1 and top-5 of a trained model (model.pt, checkpoint.pt or a run directory) on its
    dataset's test split (``test_data``: a torch Dataset instead); ``state`` is that file's content
    when the caller has already loaded it. A user's images are read as the model's training images were."""
    path = model_file(path)
    state = state if state is not None else load_checkpoint(path)
    if state.get("kind") not in CNN_MODEL_KINDS:
        raise CheckpointError(f"{path}: a {state.get('kind')!r} checkpoint, not a trained conv network")
    config = TrainConfig.from_dict(state["config"])
    config = dataclasses.replace(config, dataset=PYTHON_DATASET if test_data is not None else dataset or config.dataset,
                                 data_dir=data_dir or config.data_dir, verify=verify, batch_size=batch_size,
                                 channels_last=False)
    config.validate()
    genotype = genotype_from_dict(state["genotype"], source=str(path))
    dev = resolve_device(device)
    same_data = config.dataset == state["config"]["dataset"] or test_data is not None
    data = build_loaders(config, dev, train_split=False, test_data=test_data,
                         info=state.get("data") if same_data else None)
    model = build_network(config.network, network_config(config, genotype, data["num_classes"], data["in_channels"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {config.dataset} ({str(e).splitlines()[0]})") from None
    return evaluate(model.to(dev), data["test"])
