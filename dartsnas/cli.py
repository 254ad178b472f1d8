"""The ``dartsnas`` command line: one parser, one set of flag spellings for every command.

    dartsnas search cnn --dataset digits --epochs 10 --out runs/digits
    dartsnas derive runs/digits/checkpoint.pt
    dartsnas genotype DARTS_V2

User mistakes raise :class:`~dartsnas.errors.DartsError`; they are printed as one line
(``dartsnas: error: ...``) with exit status 1, never as a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ConfigError, DartsError, Interrupted
from .genotype import CONV_GENOTYPES, load_genotype


S = argparse.SUPPRESS  # only flags given on the command line reach a config


def _data_flags(p: argparse.ArgumentParser, d: Any, datasets: str) -> argparse._ArgumentGroup:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help=f"{datasets} [{d.dataset}]")
    g.add_argument("--data-dir", default=S,
                   help="folder holding the dataset, or imagefolder's root (train/<class>/, optional val/<class>/), "
                        "or arrays' .npz file (x_train, y_train[, x_test, y_test]); $DARTSNAS_DATA when absent [data]")
    g.add_argument("--download", action="store_true", default=S,
                   help="fetch the official dataset archive (md5-checked) if missing")
    g.add_argument("--no-verify", dest="verify", action="store_false", default=S,
                   help="skip the official md5 check (for your own files in the CIFAR format)")
    g.add_argument("--image-size", type=int, default=S,
                   help="imagefolder: resize the shorter side to S and centre-crop S x S (images of mixed sizes "
                        "need it) [as they are]" + ("; imagenet: crop size [224]" if hasattr(d, "network") else ""))
    g.add_argument("--skip-bad-images", action="store_true", default=S,
                   help="skip unreadable image files (the count is reported) instead of stopping")
    g.add_argument("--no-flip", dest="flip", action="store_false", default=S,
                   help="no random horizontal flips for your own images (text, digits, anything with a direction)")
    g.add_argument("--memory-gb", type=float, default=S,
                   help=f"your own images are held in memory up to this decoded size, streamed above it [{d.memory_gb}]")
    g.add_argument("--workers", type=int, default=S, help=f"decoding processes for streamed images [{d.workers}]")
    return g


def _shape_flags(g: argparse._ArgumentGroup, d: Any) -> None:
    g.add_argument("--init-channels", type=int, default=S, help=f"C [{d.init_channels}]")
    g.add_argument("--layers", type=int, default=S, help=f"cells L [{d.layers}]")


def _sgd_flags(g: argparse._ArgumentGroup, d: Any) -> None:
    g.add_argument("--epochs", type=int, default=S, help=f"[{d.epochs}]")
    g.add_argument("--batch-size", type=int, default=S, help=f"[{d.batch_size}]")
    g.add_argument("--lr", type=float, default=S, help=f"weight learning rate [{d.lr}]")
    g.add_argument("--lr-min", type=float, default=S, help=f"end of the cosine schedule [{d.lr_min}]")
    g.add_argument("--momentum", type=float, default=S, help=f"[{d.momentum}]")
    g.add_argument("--weight-decay", type=float, default=S, help=f"[{d.weight_decay}]")
    g.add_argument("--grad-clip", type=float, default=S, help=f"[{d.grad_clip}]")
    g.add_argument("--steps-per-epoch", type=int, default=S, help="cap the steps of an epoch (smoke runs)")


def _run_flags(p: argparse.ArgumentParser, d: Any) -> argparse._ArgumentGroup:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=S, help=f"[{d.seed}]")
    g.add_argument("--device", default=S, help=f"auto, cpu or cuda[:N] [{d.device}]")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=S,
                   help="keep NCHW activations (channels_last is faster on CPU and GPU)")
    g.add_argument("--no-amp", dest="amp", action="store_false", default=S,
                   help="float32 on CUDA too (default there: bf16 autocast; CPU is always float32)")
    _reliability_flags(g)
    _out_flags(g)
    return g


def _search_flags(p: argparse.ArgumentParser) -> None:
    from .train.search import SearchConfig
    d = SearchConfig()
    _data_flags(p, d, "cifar10, digits (bundled, offline), imagefolder or arrays (your own images)")
    p.add_argument("--train-portion", type=float, default=S,
                   help=f"part of the training split that trains w; the rest trains α [{d.train_portion}]")
    g = p.add_argument_group("search space")
    _shape_flags(g, d)
    g.add_argument("--nodes", type=int, default=S, help=f"intermediate nodes N per cell [{d.nodes}]")
    g.add_argument("--ops", nargs="+", default=S, metavar="OP",
                   help="candidate op set, or a named one (any case): darts, or RobustDARTS's reduced spaces s2 (skip_connect, "
                        "sep_conv_3x3), s3 (none too), s4 (noise, sep_conv_3x3), s1 (two ops per edge, chosen per "
                        "edge; 4 nodes) "
                        f"[{' '.join(d.ops)}]")
    g.add_argument("--partial-channels", type=int, default=S, metavar="K",
                   help="PC-DARTS: mixed ops see 1/K of the channels, edges weighted by β [1: plain DARTS]")
    g = p.add_argument_group("optimisation")
    _sgd_flags(g, d)
    g.add_argument("--arch-lr", type=float, default=S, help=f"Adam learning rate of α [{d.arch_lr}]")
    g.add_argument("--arch-weight-decay", type=float, default=S, help=f"[{d.arch_weight_decay}]")
    g.add_argument("--arch-start-epoch", type=int, default=S,
                   help=f"first epoch (0-based) with α steps; before it only w trains (PC-DARTS: 15) "
                        f"[{d.arch_start_epoch}]")
    g.add_argument("--order", choices=("first", "second", "exact"), default=S,
                   help=f"architecture gradient [{d.order}]")
    g.add_argument("--fd-step", type=float, default=S,
                   help=f"finite-difference step of --order second, divided by the gradient norm [{d.fd_step}]")
    _fd_scheme_flag(g, d)
    g.add_argument("--max-skip", type=int, default=S,
                   help="cap on skip_connects in the derived normal cell [none]")
    g.add_argument("--regularizer", choices=("none", "sdarts-rs", "darts-minus"), default=S,
                   help="sdarts-rs: weight steps see softmax(α) + U(-ε, ε) (SDARTS-RS); darts-minus: an auxiliary "
                        f"skip on every edge, its weight decaying from 1 to 0 (DARTS-) [{d.regularizer}]")
    g.add_argument("--sdarts-epsilon", type=float, default=S,
                   help=f"SDARTS-RS: the perturbation grows linearly from 0.03 to this [{d.sdarts_epsilon}]")
    _curvature_flags(p, d)
    _run_flags(p, d)


def _rnn_flags(p: argparse.ArgumentParser, d: Any) -> argparse._ArgumentGroup:
    """Corpus, model-size and BPTT flags shared by the recurrent commands."""
    g = p.add_argument_group("corpus and model")
    g.add_argument("--data-dir", default=S, help="corpus folder: train/valid/test .txt, ptb.*.txt or wiki.*.tokens")
    g.add_argument("--train-split", default=S, help=f"split that trains w [{d.train_split}]")
    g.add_argument("--val-split", default=S, help=f"split for α / model selection [{d.val_split}]")
    g.add_argument("--emsize", type=int, default=S, help=f"[{d.emsize}]")
    g.add_argument("--nhid", type=int, default=S, help=f"[{d.nhid}]")
    g.add_argument("--bptt", type=int, default=S, help=f"[{d.bptt}]")
    g.add_argument("--epochs", type=int, default=S, help=f"[{d.epochs}]")
    g.add_argument("--batch-size", type=int, default=S, help=f"[{d.batch_size}]")
    g.add_argument("--eval-batch-size", type=int, default=S, help=f"[{d.eval_batch_size}]")
    g.add_argument("--lr", type=float, default=S, help=f"[{d.lr}]")
    g.add_argument("--weight-decay", type=float, default=S, help=f"[{d.weight_decay}]")
    g.add_argument("--grad-clip", type=float, default=S, help=f"[{d.grad_clip}]")
    g.add_argument("--steps-per-epoch", type=int, default=S, help="cap the steps of an epoch (smoke runs)")
    return g


def _curvature_flags(p: argparse.ArgumentParser, d: Any) -> None:
    g = p.add_argument_group("collapse (Zela et al., 2020)")
    g.add_argument("--hessian-every", type=int, default=S, metavar="N",
                   help="every N epochs (and the last), the dominant eigenvalue of the α-Hessian of the validation "
                        "loss into metrics.jsonl [0: never]")
    g.add_argument("--hessian-batches", type=int, default=S,
                   help=f"fixed validation batches the eigenvalue is computed over [{d.hessian_batches}]")
    g.add_argument("--hessian-steps", type=int, default=S,
                   help=f"Lanczos iterations (Hessian-vector products) per eigenvalue [{d.hessian_steps}]")
    g.add_argument("--early-stop", choices=("hessian",), default=S,
                   help="DARTS-ES: stop when the eigenvalue's local average grows 1.3x over 4 evaluations, and keep "
                        "the genotype of the earlier epoch (needs --hessian-every)")
    g.add_argument("--es-start", type=int, default=S, help=f"first epoch DARTS-ES may name [{d.es_start}]")


def _search_rnn_flags(p: argparse.ArgumentParser) -> None:
    from .train.search_rnn import RNNSearchConfig
    d = RNNSearchConfig()
    g = _rnn_flags(p, d)
    g.add_argument("--nodes", type=int, default=S, help=f"[{d.nodes}]")
    g.add_argument("--arch-lr", type=float, default=S, help=f"[{d.arch_lr}]")
    g.add_argument("--arch-weight-decay", type=float, default=S, help=f"[{d.arch_weight_decay}]")
    g.add_argument("--order", choices=("first", "second", "exact"), default=S, help=f"[{d.order}]")
    g.add_argument("--fd-step", type=float, default=S, help=f"[{d.fd_step}]")
    _fd_scheme_flag(g, d)
    _curvature_flags(p, d)
    _rnn_run_flags(p, d)


def _train_rnn_flags(p: argparse.ArgumentParser, genotype: bool = True) -> None:
    from .train.final_rnn import RNNTrainConfig
    d = RNNTrainConfig()
    if genotype:
        p.add_argument("--genotype", default=S, help=f"built-in name, genotype.json or search run directory [{d.genotype}]")
    g = _rnn_flags(p, d)
    g.add_argument("--test-split", default=S, help=f"[{d.test_split}]")
    g.add_argument("--test-batch-size", type=int, default=S, help=f"[{d.test_batch_size}]")
    g.add_argument("--nonmono", type=int, default=S, help=f"epochs without improvement before ASGD [{d.nonmono}]")
    for name in ("dropout", "dropout_h", "dropout_x", "dropout_i", "dropout_e"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=S, help=f"[{getattr(d, name)}]")
    _rnn_run_flags(p, d)


def _rnn_run_flags(p: argparse.ArgumentParser, d: Any) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=S, help=f"[{d.seed}]")
    g.add_argument("--device", default=S, help=f"auto, cpu or cuda[:N] [{d.device}]")
    g.add_argument("--compile", action="store_true", default=S,
                   help="fuse the cell's time step with torch.compile (about 1.7x faster on CPU after a "
                        "one-off compilation of a minute or two)")
    _reliability_flags(g)
    _out_flags(g)


def _fd_scheme_flag(g: argparse._ArgumentGroup, d: Any) -> None:
    g.add_argument("--fd-scheme", choices=("central", "forward"), default=S,
                   help="finite difference of --order second: the paper's central one, or one-sided "
                        f"(one pass fewer per step) [{d.fd_scheme}]")


def _reliability_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--checkpoint-every", type=int, default=S, metavar="STEPS",
                   help="also checkpoint every STEPS steps inside an epoch [every 5 minutes of work]")
    g.add_argument("--skip-nonfinite", type=int, default=S, metavar="N",
                   help="skip up to N batches with a non-finite loss or gradient, logged, before stopping [0]")
    g.add_argument("--deterministic", action="store_true", default=S,
                   help="deterministic kernels (torch.use_deterministic_algorithms; slower on CUDA)")
    g.add_argument("--sync-bn", action="store_true", default=S,
                   help="launched with torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)")


def _devices_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                   help="run jobs side by side, one per entry (e.g. cuda:0 cuda:1, or cpu cpu) "
                        "[every CUDA device, else cpu]")


def _seeds_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="one search per seed into OUT/seed_S (the paper runs 4), side by side over --devices")
    _devices_flag(p)


def _out_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--out", required=True, type=Path, help="run directory")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument("--quiet", action="store_true", help="no progress or per-epoch output")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events to RUN_DIR/tensorboard (needs the tensorboard package)")


def _train_flags(p: argparse.ArgumentParser, genotype: bool = True) -> None:
    from .train.final import TrainConfig
    d = TrainConfig()
    if genotype:
        p.add_argument("--genotype", default=S, help=f"built-in name, genotype.json or search run directory [{d.genotype}]")
    _data_flags(p, d, "cifar10, digits, imagenet, imagefolder or arrays; each has its recipe's defaults")
    p.add_argument("--train-portion", type=float, default=S,
                   help="train on this part of the training split and report val_* on the held-out rest "
                        f"instead of the test split (the paper's selection) [{d.train_portion}]")
    g = p.add_argument_group("network")
    g.add_argument("--network", choices=("cifar", "imagenet"), default=S, help=f"[{d.network}]")
    _shape_flags(g, d)
    g = p.add_argument_group("optimisation (defaults: the paper's CIFAR-10 recipe)")
    _sgd_flags(g, d)
    g.add_argument("--lr-schedule", choices=("cosine", "exponential"), default=S, help=f"[{d.lr_schedule}]")
    g.add_argument("--lr-gamma", type=float, default=S, help=f"decay per epoch of --lr-schedule exponential [{d.lr_gamma}]")
    g.add_argument("--label-smoothing", type=float, default=S, help=f"[{d.label_smoothing}]")
    g.add_argument("--auxiliary-weight", type=float, default=S, help=f"0 disables the auxiliary head [{d.auxiliary_weight}]")
    g.add_argument("--drop-path", type=float, default=S, help=f"final drop-path probability [{d.drop_path}]")
    g.add_argument("--cutout", type=int, default=S, help=f"cutout square size, 0 disables [{d.cutout}]")
    _run_flags(p, d).add_argument(
        "--compile", action="store_true", default=S,
        help="run every cell through torch.compile (minutes of one-off compilation; no faster on CPU, "
             "measure on your GPU with benchmarks/train_step.py --compile)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dartsnas", description="DARTS: differentiable architecture search (Liu et al., ICLR 2019)")
    parser.add_argument("--version", action="version", version=f"dartsnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("search", help="search a cell with DARTS")
    spaces = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    for name, flags, text in (("cnn", _search_flags, "convolutional cells (normal + reduction)"),
                              ("rnn", _search_rnn_flags, "a recurrent cell (language modelling)")):
        q = spaces.add_parser(name, help=text)
        flags(q)
        _seeds_flags(q)

    p = sub.add_parser("train", help="train a final network from a genotype")
    kinds = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    _train_flags(kinds.add_parser("cnn", help="the CIFAR or ImageNet network of conv cells"))
    _train_rnn_flags(kinds.add_parser("rnn", help="the recurrent language model of a recurrent cell"))

    p = sub.add_parser("select", help="train candidate genotypes briefly, rank them on validation, keep the best")
    kinds = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    for space, flags in (("cnn", _train_flags), ("rnn", _train_rnn_flags)):
        q = kinds.add_parser(space, help=f"{space} candidates; every training flag of 'train {space}' sets the budget")
        q.add_argument("candidates", nargs="*", help="genotype JSON files, search run directories or built-in names")
        flags(q, genotype=False)
        _devices_flag(q)

    p = sub.add_parser("random-search", help="sample genotypes uniformly from the search space and select among them")
    kinds = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    for space, flags in (("cnn", _train_flags), ("rnn", _train_rnn_flags)):
        q = kinds.add_parser(space, help=f"{space} cells; every training flag of 'train {space}' sets the budget")
        g = q.add_argument_group("sampling")
        g.add_argument("--samples", type=int, required=True, help="number of genotypes K")
        g.add_argument("--nodes", type=int, default=None, help=f"intermediate nodes [{4 if space == 'cnn' else 8}]")
        g.add_argument("--ops", nargs="+", default=None, metavar="OP", help="op set, or a named one (darts, s1-s4) [the DARTS ops]")
        g.add_argument("--no-train", action="store_true", help="only write the sampled genotypes")
        flags(q, genotype=False)
        _devices_flag(q)

    p = sub.add_parser("eval", help="evaluate a trained network on a test split (JSON)")
    p.add_argument("checkpoint", type=Path, help="model.pt, checkpoint.pt or a training run directory")
    p.add_argument("--dataset", default=None, help="[the training run's]")
    p.add_argument("--data-dir", default=None, help="[the training run's]")
    p.add_argument("--split", default="test", help="corpus split of a recurrent model [test]")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the md5 check")
    p.add_argument("--batch-size", type=int, default=None, help="[256; recurrent: the run's test batch size]")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("export", help="write a trained network as ONNX or TorchScript (takes [0, 1] images)")
    p.add_argument("run", type=Path, help="a training run directory, model.pt or checkpoint.pt")
    p.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    p.add_argument("--out", type=Path, required=True, help="the file to write")

    p = sub.add_parser("predict", help="top classes of image files (one JSON line per image)")
    p.add_argument("model", type=Path, help="a training run directory, model.pt, or an exported .onnx / TorchScript file")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--top", type=int, default=5, help="classes per image [5]")

    p = sub.add_parser("derive", help="print the genotype a search checkpoint derives to")
    p.add_argument("checkpoint", type=Path, help="checkpoint.pt or a run directory")
    p.add_argument("--max-skip", type=int, default=None, help="override the run's skip_connect cap")

    p = sub.add_parser("summary", help="parameters and multiply-adds of a final network (JSON)")
    p.add_argument("--genotype", default="DARTS_V2", help="built-in name, JSON file or run directory [DARTS_V2]")
    p.add_argument("--network", choices=("cifar", "imagenet", "ptb", "wt2"), default="cifar",
                   help="cifar, imagenet, or the recurrent ptb (850/850, 10k words) / wt2 (700/700, 33,278 words)")
    p.add_argument("--emsize", type=int, default=None, help="recurrent networks: embedding = hidden size")
    p.add_argument("--vocab-size", type=int, default=None, help="recurrent networks: vocabulary size")
    p.add_argument("--init-channels", type=int, default=None, help="C [36 cifar, 48 imagenet]")
    p.add_argument("--layers", type=int, default=None, help="L [20 cifar, 14 imagenet]")
    p.add_argument("--num-classes", type=int, default=None, help="[10 cifar, 1000 imagenet]")
    p.add_argument("--image-size", type=int, default=None, help="[32 cifar, 224 imagenet]")

    p = sub.add_parser("plot", help="draw the cells of a genotype (one file per cell type)")
    p.add_argument("genotype", help="built-in name, genotype.json, run directory or checkpoint")
    p.add_argument("--out", required=True, type=Path, help="FILE.png|svg|pdf|dot (suffixed _normal, _reduce, ...)")
    p.add_argument("--space", choices=("cnn", "rnn"), default=None, help="[from the file; cnn for built-in names]")
    p.add_argument("--format", choices=("png", "svg", "pdf", "dot"), default=None, help="[from --out's suffix]")
    p.add_argument("--engine", choices=("matplotlib", "graphviz"), default="matplotlib",
                   help="cell-diagram renderer; graphviz uses the dot program where installed [matplotlib]")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--alphas", action="store_true", help="RUN_DIR: softmax(α) of every edge against the epoch")
    what.add_argument("--curves", action="store_true", help="RUN_DIR: loss / accuracy or perplexity / lr curves")
    what.add_argument("--evolution", action="store_true", help="RUN_DIR: the derived cell per epoch as a GIF")

    p = sub.add_parser("genotype", help="validate a genotype and print its canonical JSON")
    p.add_argument("genotype", help=f"built-in name ({', '.join(CONV_GENOTYPES.names())}) or JSON file")
    p.add_argument("--space", choices=("cnn", "rnn"), default="cnn", help="search space of the genotype [cnn]")
    return parser


def _given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of config class ``cls`` that flags set (flags default to SUPPRESS: absent if not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    if "ops" in given:
        given["ops"] = tuple(given["ops"])
    return given


def _config(cls: type, kind: str, args: argparse.Namespace, make: Any = None) -> Any:
    """The run's config: the checkpoint's on --resume, else defaults; flags given override both."""
    from .train.checkpoint import CHECKPOINT, load_checkpoint
    given = _given(cls, args)
    if args.resume and (args.out / CHECKPOINT).is_file():  # without one yet, the run starts afresh
        saved = load_checkpoint(args.out / CHECKPOINT, kind=kind)["config"]
        return dataclasses.replace(cls.from_dict(saved), **given)
    return make(**given) if make else cls(**given)


def _cmd_search(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        return _search_seeds(args)
    if args.devices is not None:
        raise ConfigError("--devices applies to several searches: give --seeds too")
    if args.space == "rnn":
        from .train import search_rnn as mod
        mod.search_rnn(_config(mod.RNNSearchConfig, mod.KIND, args), args.out, resume=args.resume,
                       overwrite=args.overwrite, quiet=args.quiet, tensorboard=args.tensorboard)
    else:
        from .train import search as mod
        mod.search(_config(mod.SearchConfig, mod.KIND, args), args.out, resume=args.resume,
                   overwrite=args.overwrite, quiet=args.quiet, tensorboard=args.tensorboard)
    if not args.quiet:
        print(f"genotype written to {args.out / 'genotype.json'}")
    return 0


def _not_under_torchrun(command: str) -> None:
    """The protocol commands start their own processes; torchrun would start N drivers."""
    from .distributed import launched_by_torchrun
    if launched_by_torchrun():
        raise ConfigError(f"{command} starts its own jobs (one per --devices entry): run it without torchrun")


def _search_seeds(args: argparse.Namespace) -> int:
    from .protocol import search_seeds
    _not_under_torchrun("search --seeds")
    if "seed" in vars(args):
        raise ConfigError("give either --seed or --seeds, not both")
    if args.space == "rnn":
        from .train.search_rnn import RNNSearchConfig as cls
    else:
        from .train.search import SearchConfig as cls
    paths = search_seeds(args.space, cls(**_given(cls, args)), args.seeds, args.out, devices=args.devices, resume=args.resume,
                         overwrite=args.overwrite, log=(lambda m: None) if args.quiet else print)
    for path in paths.values():
        print(path)
    return 0


def _selection_config(args: argparse.Namespace) -> Any:
    """The short-training budget of select / random-search: the paper's (CIFAR-10: 100 epochs with a
    held-out half of the training split; PTB: 300 epochs) unless flags say otherwise."""
    if args.space == "rnn":
        from .train.final_rnn import RNNTrainConfig
        return RNNTrainConfig(**{"epochs": 300, **_given(RNNTrainConfig, args)})
    from .train.final import TrainConfig, recipe
    given = _given(TrainConfig, args)
    dataset = given.pop("dataset", "cifar10")
    return recipe(dataset, **{"epochs": 100, "train_portion": 0.5, **given})


def _cmd_select(args: argparse.Namespace) -> int:
    from .protocol import select
    _not_under_torchrun("select")
    rows = select(args.candidates, args.space, _selection_config(args), args.out, devices=args.devices,
                  resume=args.resume, overwrite=args.overwrite, log=(lambda m: None) if args.quiet else print)
    if not args.quiet:
        print((args.out / "leaderboard.md").read_text(), end="")
    return 0 if rows else 1


def _cmd_random_search(args: argparse.Namespace) -> int:
    from .protocol import random_search
    _not_under_torchrun("random-search")
    config = None if args.no_train else _selection_config(args)
    ops = args.ops
    if args.space == "cnn" and ops is not None:
        from .ops import resolve_op_set
        ops = resolve_op_set(ops)  # a named op set: --ops s2 (or S2)
    result = random_search(args.space, args.samples, getattr(args, "seed", 0), args.out, config, nodes=args.nodes,
                           ops=ops, devices=args.devices, resume=args.resume, overwrite=args.overwrite,
                           log=(lambda m: None) if args.quiet else print)
    if config is None:
        for path in result:
            print(path)
    elif not args.quiet:
        print((args.out / "leaderboard.md").read_text(), end="")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.space == "rnn":
        from .train import final_rnn as mod
        mod.train_rnn(_config(mod.RNNTrainConfig, mod.KIND, args), args.out, resume=args.resume,
                      overwrite=args.overwrite, quiet=args.quiet, tensorboard=args.tensorboard)
        return 0
    from .train.final import KIND, TrainConfig, recipe, train
    make = lambda **given: recipe(given.pop("dataset", "cifar10"), **given)
    config = _config(TrainConfig, KIND, args, make)
    train(config, args.out, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet,
          tensorboard=args.tensorboard)
    if not args.quiet:
        print(f"weights written to {args.out / 'model.pt'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    from .train.checkpoint import load_checkpoint, model_file
    from .train.final import evaluate_checkpoint
    from .train.final_rnn import evaluate_perplexity
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    path = model_file(args.checkpoint)
    state = load_checkpoint(path)  # loaded once: its kind picks the evaluator
    if state.get("kind") in ("train-rnn", "model-rnn"):
        result = evaluate_perplexity(path, split=args.split, data_dir=args.data_dir, batch_size=args.batch_size,
                                     device=args.device, state=state)
    else:
        result = evaluate_checkpoint(path, dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                     batch_size=args.batch_size or 256, verify=args.verify, state=state)
    print(json.dumps(result))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model
    print(export_model(args.run, args.format, args.out))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json
    from .export import predict
    for row in predict(args.model, args.images, top=args.top):
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _cmd_derive(args: argparse.Namespace) -> int:
    from .train.search import derive_from_checkpoint
    print(derive_from_checkpoint(args.checkpoint, max_skip=args.max_skip).to_json())
    return 0


NETWORK_DEFAULTS = {"cifar": dict(init_channels=36, layers=20, num_classes=10, image_size=32),
                    "imagenet": dict(init_channels=48, layers=14, num_classes=1000, image_size=224)}


RNN_DEFAULTS = {"ptb": dict(emsize=850, vocab_size=10000), "wt2": dict(emsize=700, vocab_size=33278)}


def _cmd_summary(args: argparse.Namespace) -> int:
    import json
    if args.network in RNN_DEFAULTS:
        from .nets.recurrent import RNNConfig, build_rnn_model
        from .nets.summary import count_parameters
        d = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in RNN_DEFAULTS[args.network].items()}
        model = build_rnn_model(load_genotype(args.genotype, "rnn"),
                                RNNConfig(vocab_size=d["vocab_size"], emsize=d["emsize"], nhid=d["emsize"]))
        print(json.dumps({"network": args.network, "genotype": args.genotype, "emsize": d["emsize"],
                          "nhid": d["emsize"], "vocab_size": d["vocab_size"],
                          "params": count_parameters(model)["params"]}))
        return 0
    from .nets import NetworkConfig, build_network
    from .nets.summary import summarize
    d = {k: getattr(args, k) if getattr(args, k) is not None else v
         for k, v in NETWORK_DEFAULTS[args.network].items()}
    for k, v in d.items():
        if v < 1:
            raise ConfigError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    genotype = load_genotype(args.genotype)
    net = build_network(args.network, NetworkConfig(genotype, init_channels=d["init_channels"],
                                                    layers=d["layers"], num_classes=d["num_classes"]))
    info = {"network": args.network, "genotype": args.genotype, "init_channels": d["init_channels"],
            "layers": d["layers"], "num_classes": d["num_classes"],
            **summarize(net, (3, d["image_size"], d["image_size"]))}
    print(json.dumps(info))
    return 0


def _cmd_genotype(args: argparse.Namespace) -> int:
    print(load_genotype(args.genotype, args.space).to_json())
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .genotype import Genotype, RecurrentGenotype
    from .plot import plot_alphas, plot_curves, plot_evolution, plot_genotype
    from .train.checkpoint import load_checkpoint
    spec = Path(args.genotype)
    if args.alphas or args.curves or args.evolution:
        if args.alphas:
            paths = plot_alphas(spec, args.out)
        elif args.curves:
            paths = [plot_curves(spec, args.out)]
        else:
            paths = [plot_evolution(spec, args.out)]
        for path in paths:
            print(path)
        return 0
    if spec.is_file() and spec.suffix == ".pt":
        data = load_checkpoint(spec).get("genotype")
        if not isinstance(data, dict):
            raise ConfigError(f"{spec}: checkpoint holds no genotype")
        genotype = (RecurrentGenotype if "recurrent" in data else Genotype).from_dict(data, source=str(spec))
    else:
        space = args.space
        if space is None:
            path = spec / "genotype.json" if spec.is_dir() else spec
            space = "rnn" if path.is_file() and '"recurrent"' in path.read_text(errors="replace") else "cnn"
        genotype = load_genotype(args.genotype, space)
    for path in plot_genotype(genotype, args.out, args.format, engine=args.engine):
        print(path)
    return 0


COMMANDS = {"search": _cmd_search, "derive": _cmd_derive, "genotype": _cmd_genotype,
            "summary": _cmd_summary, "train": _cmd_train, "eval": _cmd_eval, "plot": _cmd_plot,
            "select": _cmd_select, "random-search": _cmd_random_search, "export": _cmd_export,
            "predict": _cmd_predict}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Interrupted as e:  # SIGTERM / SIGINT: checkpoint written at a step boundary
        print(f"dartsnas: {e}", file=sys.stderr)
        return e.exit_code
    except DartsError as e:
        print(f"dartsnas: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dartsnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
