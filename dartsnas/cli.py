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
import importlib
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ConfigError, DartsError, Interrupted
from .flags import add_flags, given_fields, load_config_file
from .genotype import CONV_GENOTYPES, load_genotype
from .protocol import SamplingConfig
from .spaces import SEARCH_SPACES


def _config_flags(p: argparse.ArgumentParser, cls: type, exclude: Sequence[str] = ()) -> None:
    """The flags of a command's config (one per field, see :mod:`dartsnas.config`), --config FILE and
    the run-directory flags."""
    run = add_flags(p, cls, exclude=exclude)["run"]
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="options from a JSON or TOML file (keys as in a run's config.json, or spelt as flags); "
                          "flags given override it")
    _out_flags(run)


def _runs() -> dict[str, Any]:
    from .train.commands import RUNS
    return RUNS


def _devices_flag(p: argparse.ArgumentParser, data_parallel: bool = False) -> None:
    from .cluster import add_launcher_flags
    p.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                   help="run jobs side by side, one per entry (e.g. cuda:0 cuda:1, or cpu cpu) "
                        "[every CUDA device, else cpu]")
    add_launcher_flags(p, data_parallel)


def _seeds_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="one search per seed into OUT/seed_S (the paper runs 4), side by side over --devices")
    _devices_flag(p, data_parallel=True)


def _out_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--out", required=True, type=Path, help="run directory")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument("--quiet", action="store_true", help="no progress or per-epoch output")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events to RUN_DIR/tensorboard (needs the tensorboard package)")


class _Parser(argparse.ArgumentParser):
    """A mistake in the flags is one line naming it and where the help is, not the whole usage."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .zero_cost import add_prerank_flags
    parser = _Parser(
        prog="dartsnas", description="DARTS: differentiable architecture search (Liu et al., ICLR 2019)")
    parser.add_argument("--version", action="version", version=f"dartsnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    runs = _runs()
    p = sub.add_parser("search", help="search a cell with DARTS")
    kinds = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    for space in SEARCH_SPACES.values():
        q = kinds.add_parser(space.name, help=space.help)
        _config_flags(q, runs[space.search_kind].config)
        _seeds_flags(q)

    p = sub.add_parser("train", help="train a final network from a genotype")
    kinds = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    from .cluster import add_launcher_flags
    for space in SEARCH_SPACES.values():
        q = kinds.add_parser(space.name, help=space.train_help)
        _config_flags(q, runs[space.train_kind].config)
        add_launcher_flags(q)

    p = sub.add_parser("select", help="train candidate genotypes briefly, rank them on validation, keep the best")
    kinds = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    for space in SEARCH_SPACES.values():
        q = kinds.add_parser(space.name, help=f"{space.name} candidates; every training flag of 'train {space.name}' "
                             "sets the budget")
        q.add_argument("candidates", nargs="*", help="genotype JSON files, search run directories or built-in names")
        _config_flags(q, runs[space.train_kind].config, ("genotype",))
        _devices_flag(q)
        add_prerank_flags(q)

    p = sub.add_parser("random-search", help="sample genotypes uniformly from the search space and select among them")
    kinds = p.add_subparsers(dest="space", required=True, metavar="SPACE")
    for space in SEARCH_SPACES.values():
        q = kinds.add_parser(space.name, help=f"{space.name} cells; every training flag of 'train {space.name}' sets "
                             "the budget")
        sampling = add_flags(q, SamplingConfig)["sampling"]
        sampling.add_argument("--no-train", action="store_true", help="only write the sampled genotypes")
        _config_flags(q, runs[space.train_kind].config, ("genotype",))
        _devices_flag(q)
        add_prerank_flags(q)

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

    from .cli_tools import add_derive
    add_derive(sub)

    p = sub.add_parser("summary", help="parameters and multiply-adds of a final network (JSON)")
    p.add_argument("--genotype", default="DARTS_V2", help="built-in name, JSON file or run directory (nb201: or an "
                   "arch string) [DARTS_V2]")
    p.add_argument("--network", choices=("cifar", "imagenet", "nb201", "ptb", "wt2"), default="cifar",
                   help="cifar, imagenet, nb201 (NAS-Bench-201's, of a cell: C=16 N=5; with its benchmark FLOPs), "
                        "or the recurrent ptb (850/850, 10k words) / wt2 (700/700, 33,278 words)")
    p.add_argument("--emsize", type=int, default=None, help="recurrent networks: embedding = hidden size")
    p.add_argument("--vocab-size", type=int, default=None, help="recurrent networks: vocabulary size")
    p.add_argument("--init-channels", type=int, default=None, help="C [36 cifar, 48 imagenet]")
    p.add_argument("--layers", type=int, default=None, help="L [20 cifar, 14 imagenet; nb201: N cells per stage, 5]")
    p.add_argument("--num-classes", type=int, default=None, help="[10 cifar, 1000 imagenet]")
    p.add_argument("--image-size", type=int, default=None, help="[32 cifar, 224 imagenet]")
    p.add_argument("--in-channels", type=int, default=3, help="image channels [3]")

    g = p.add_argument_group("latency (the derived network timed as a latency table times its ops)")
    g.add_argument("--latency", choices=("torch", "onnxruntime"), default=None,
                   help="also time the network in this runtime (median ms, with how it was timed)")
    g.add_argument("--threads", type=int, default=None, help="intra-op threads [torch's current count]")
    g.add_argument("--repeats", type=int, default=30, help="timed runs [30]")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")

    p = sub.add_parser("latency-table", help="time every candidate op at every shape of the final network "
                       "(JSON table for search cnn --cost latency)")
    from .latency import LatencyConfig
    add_flags(p, LatencyConfig)["run"].add_argument("--out", type=Path, required=True, help="the table file to write")
    p.add_argument("--quiet", action="store_true", help="no line per op")
    from .bench201.cli import add_parser as add_bench201
    add_bench201(sub)
    from .zero_cost import add_parser as add_proxies
    add_proxies(sub)

    from .cli_plot import add_plot
    add_plot(sub)

    p = sub.add_parser("genotype", help="validate a genotype and print its canonical JSON")
    p.add_argument("genotype", help=f"built-in name ({', '.join(CONV_GENOTYPES.names())}) or JSON file")
    p.add_argument("--space", choices=SEARCH_SPACES.names(), default="cnn", help="search space of the genotype [cnn]")
    return parser


def _given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of config class ``cls`` that --config FILE and then the flags given set."""
    from .cluster import launcher_fields
    from_file = (load_config_file(args.config, cls, skip=frozenset(launcher_fields()))
                 if getattr(args, "config", None) is not None else {})
    return {**from_file, **given_fields(cls, args)}


def _config(command: Any, args: argparse.Namespace) -> Any:
    """The run's config: the checkpoint's on --resume, else the command's defaults (a dataset's
    recipe); --config FILE and the flags given override both."""
    from .train.checkpoint import CHECKPOINT, load_checkpoint
    given = _given(command.config, args)
    if args.resume and (args.out / CHECKPOINT).is_file():  # without one yet, the run starts afresh
        saved = load_checkpoint(args.out / CHECKPOINT, kind=command.kind)["config"]
        return dataclasses.replace(command.config.from_dict(saved), **given)
    return command.build(**given)


def _run(kind: str, args: argparse.Namespace) -> int:
    """Run the command ``kind`` (``search-cnn``, ``train-rnn``, ...) into --out."""
    from .cluster import launcher_of, run_distributed
    command, launcher = _runs()[kind], launcher_of(args)
    if launcher.on_cluster:  # one job of --nnodes x --gpus-per-node processes, data parallel
        run_distributed(kind, _config(command, args), args.out, launcher, resume=args.resume, overwrite=args.overwrite,
                        log=(lambda m: None) if args.quiet else print)
        return 0
    command.run(_config(command, args), args.out, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet,
                tensorboard=args.tensorboard)
    if not args.quiet and command.written is not None:
        what, name = command.written
        print(f"{what} written to {args.out / name}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        return _search_seeds(args)
    if args.devices is not None:
        raise ConfigError("--devices applies to several searches: give --seeds too")
    return _run(SEARCH_SPACES.get(args.space).search_kind, args)


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
    command = _runs()[SEARCH_SPACES.get(args.space).search_kind]
    config = command.build(**_given(command.config, args))
    paths = search_seeds(args.space, config, args.seeds, args.out, devices=args.devices, resume=args.resume,
                         overwrite=args.overwrite, log=(lambda m: None) if args.quiet else print,
                         launcher=_launcher(args))
    for path in paths.values():
        print(path)
    return 0


def _launcher(args: argparse.Namespace) -> Any:
    from .cluster import launcher_of
    return launcher_of(args)


def _selection_config(args: argparse.Namespace) -> Any:
    """The short-training budget of select / random-search: the paper's (CIFAR-10: 100 epochs with a
    held-out half of the training split; PTB: 300 epochs) unless flags say otherwise."""
    command = _runs()[SEARCH_SPACES.get(args.space).train_kind]
    return command.build(**{**command.selection, **_given(command.config, args)})


def _cmd_select(args: argparse.Namespace) -> int:
    from .protocol import select
    from .zero_cost import prerank_of
    _not_under_torchrun("select")
    rows = select(args.candidates, args.space, _selection_config(args), args.out, devices=args.devices,
                  resume=args.resume, overwrite=args.overwrite, log=(lambda m: None) if args.quiet else print,
                  prerank=prerank_of(args), launcher=_launcher(args))
    if not args.quiet:
        print((args.out / "leaderboard.md").read_text(), end="")
    return 0 if rows else 1


def _cmd_random_search(args: argparse.Namespace) -> int:
    from .protocol import random_search
    from .zero_cost import prerank_of
    _not_under_torchrun("random-search")
    sampling = SamplingConfig(**given_fields(SamplingConfig, args))
    sampling.validate()
    config = None if args.no_train else _selection_config(args)
    ops = sampling.ops
    if ops is not None:
        ops = SEARCH_SPACES.get(args.space).resolve_ops(ops)  # a named op set: --ops s2 (or S2)
    result = random_search(args.space, sampling.samples, getattr(args, "seed", 0), args.out, config,
                           nodes=sampling.nodes, ops=ops, devices=args.devices, resume=args.resume, overwrite=args.overwrite,
                           log=(lambda m: None) if args.quiet else print, prerank=prerank_of(args),
                           launcher=_launcher(args))
    if config is None:
        for path in result:
            print(path)
    elif not args.quiet:
        print((args.out / "leaderboard.md").read_text(), end="")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    return _run(SEARCH_SPACES.get(args.space).train_kind, args)


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


def _cmd_genotype(args: argparse.Namespace) -> int:
    print(load_genotype(args.genotype, args.space).to_json())
    return 0


def _lazy(module: str, name: str) -> Any:
    """A command whose module is imported when it runs (start-up time of ``dartsnas --help``)."""
    return lambda args: getattr(importlib.import_module(module, __package__), name)(args)


COMMANDS = {"search": _cmd_search, "derive": _lazy(".cli_tools", "derive"), "genotype": _cmd_genotype,
            "summary": _lazy(".cli_tools", "summary"), "train": _cmd_train, "eval": _cmd_eval, "plot": _lazy(".cli_plot", "plot"),
            "select": _cmd_select, "random-search": _cmd_random_search, "export": _cmd_export,
            "predict": _cmd_predict, "latency-table": _lazy(".cli_tools", "latency_table"),
            "bench201": _lazy(".bench201.cli", "run"), "proxies": _lazy(".zero_cost", "run")}


def main(argv: Sequence[str] | None = None) -> int:
    from .bench201.cli import normalise_argv
    args = build_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    try:
        return COMMANDS[args.command](args)
    except Interrupted as e:  # SIGTERM / SIGINT: checkpoint written at a step boundary
        print(f"dartsnas: {e}", file=sys.stderr)
        return e.exit_code
    except ConfigError as e:  # fields named as flags
        print(f"dartsnas: error: {e.at_command_line()}", file=sys.stderr)
        return 1
    except DartsError as e:
        print(f"dartsnas: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dartsnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
