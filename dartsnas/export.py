"""A trained network out of Python, and predictions on image files.

:func:`export_model` writes the final network of a training run as ONNX or TorchScript: eval mode (no
auxiliary head, no drop path), the training images' normalisation inside the graph so that it takes
float images scaled to [0, 1] (N x C x H x W, any batch size), the class names and the input
description in the file's metadata (ONNX ``metadata_props`` ``dartsnas``; TorchScript extra file
``dartsnas.json``). :func:`predict` reads image files as the training images were read and returns
the top classes by name.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import CheckpointError, ConfigError, DataError
from .train.checkpoint import check_writable_file

FORMATS = ("onnx", "torchscript")
METADATA = "dartsnas"               # ONNX metadata key
EXTRA_FILE = "dartsnas.json"        # TorchScript extra file


class Deployable(nn.Module):
    """A trained network taking images in [0, 1]: normalised with the training statistics, then
    classified; returns logits."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def load_trained(path: str | os.PathLike) -> tuple[Deployable, dict[str, Any]]:
    """The trained network of a run directory, model.pt or checkpoint.pt (eval mode, CPU) and its
    metadata (classes, channels, input size, resize, normalisation, genotype)."""
    from .genotype import genotype_from_dict
    from .nets import build_network
    from .train.checkpoint import load_checkpoint, model_file
    from .train.final import CNN_MODEL_KINDS, TrainConfig, network_config
    path = model_file(path)
    state = load_checkpoint(path)
    if state.get("kind") not in CNN_MODEL_KINDS:
        raise CheckpointError(f"{path}: a {state.get('kind')!r} checkpoint, not a trained conv network")
    info = state.get("data")
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: written by an earlier dartsnas without its data's classes and "
                              "normalisation; retrain it to export or predict")
    config = TrainConfig.from_dict(state["config"])
    genotype = genotype_from_dict(state["genotype"], source=str(path))
    model = build_network(config.network, network_config(config, genotype, len(info["classes"]), info["in_channels"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the network ({str(e).splitlines()[0]})") from None
    meta = {**info, "network": config.network, "genotype": genotype.to_dict(), "dartsnas_version": __version__,
            "input": "float32 images N x C x H x W scaled to [0, 1]; output: logits N x classes"}
    return Deployable(model, info["mean"], info["std"]).eval(), meta


def export_model(run: str | os.PathLike, fmt: str, out: str | os.PathLike) -> Path:
    """Write ``run``'s trained network to ``out`` as ``fmt`` (onnx or torchscript); returns ``out``."""
    check_writable_file(out)
    model, meta = load_trained(run)
    return write_export(model, meta, fmt, out)


def write_export(model: Deployable, meta: dict[str, Any], fmt: str, out: str | os.PathLike) -> Path:
    """Write a deployable network (eval mode) with its metadata (``in_channels``, ``image_size``,
    ``classes``...) to ``out`` as ``fmt``; the file appears whole or not at all."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    check_writable_file(out)
    C, (H, W) = meta["in_channels"], meta["image_size"]
    example = torch.rand(2, C, H, W)  # batch 2: a batch of 1 would be specialised into the graph
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        if fmt == "onnx":
            _export_onnx(model, example, staged, meta)
        else:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings and TorchScript's deprecation notices
                traced = torch.jit.trace(model, example, check_trace=False)
                torch.jit.save(traced, str(staged), _extra_files={EXTRA_FILE: json.dumps(meta)})
        os.replace(staged, out)  # the file appears whole or not at all
    return out


def onnx_graph(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, dynamic_batch: bool = True,
               output: str = "output") -> None:
    """``model`` (one tensor in, one out) as an ONNX file, by torch.onnx's exporter, quietly; any batch
    size with ``dynamic_batch``, else ``example``'s (as a latency table times ops)."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError:
        raise ConfigError("ONNX export needs the onnx and onnxscript packages: pip install 'dartsnas[export]'") from None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    # the exporter prints progress lines on stdout, where export and predict print paths and JSON
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=shapes,
                          input_names=["images"], output_names=[output], external_data=False)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    try:
        import onnx
    except ImportError:
        raise ConfigError("--format onnx needs the onnx and onnxscript packages: pip install 'dartsnas[export]'") from None
    onnx_graph(model, example, path, output="logits")
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {METADATA: json.dumps(meta), "classes": json.dumps(meta["classes"])})
    onnx.save(proto, str(path))


# -- prediction ------------------------------------------------------------------------------------


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith(f"extra/{EXTRA_FILE}") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_predictor(path: str | os.PathLike) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """A function from [0, 1] image batches to logits, and the metadata, for a run directory,
    model.pt, an exported .onnx file (run by onnxruntime) or an exported TorchScript file."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("predicting with an .onnx file needs onnxruntime: pip install 'dartsnas[export]'") from None
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            meta = json.loads(session.get_modelmeta().custom_metadata_map[METADATA])
        except Exception as e:  # onnxruntime's own exception types; a missing key; bad JSON
            raise CheckpointError(f"{path}: not an ONNX model exported by dartsnas ({e.__class__.__name__})") from None
        name = session.get_inputs()[0].name
        return (lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])), meta
    if path.is_file() and _is_torchscript(path):
        extra = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return module, json.loads(extra[EXTRA_FILE])
    model, meta = load_trained(path)
    return model, meta


def read_image(path: str | os.PathLike, meta: dict[str, Any]) -> torch.Tensor:
    """An image file as the model's training images were read: grey or RGB, resized as they were
    (or to the model's input size), scaled to [0, 1]; [C, H, W] float32."""
    from PIL import Image, UnidentifiedImageError

    from .data.decoding import resize_and_centre_crop
    H, W = meta["image_size"]
    try:
        with Image.open(path) as img:
            img = img.convert("L" if meta["in_channels"] == 1 else "RGB")
            if meta.get("resize"):
                img = resize_and_centre_crop(img, int(meta["resize"]))
                if img.size != (W, H):  # ImageNet's resize-then-crop: crop the centre to the input size
                    left, top = (img.width - W) // 2, (img.height - H) // 2
                    img = img.crop((left, top, left + W, top + H))
            elif img.size != (W, H):
                img = img.resize((W, H), Image.BILINEAR)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def predict(model_path: str | os.PathLike, images: Sequence[str | os.PathLike], top: int = 5,
            batch_size: int = 64) -> list[dict[str, Any]]:
    """For each image file, its ``top`` classes by name with their probabilities."""
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    run, meta = load_predictor(model_path)
    classes = meta["classes"]
    k = min(top, len(classes))
    results = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = torch.stack([read_image(p, meta) for p in chunk])
        with torch.no_grad():
            probs = torch.softmax(run(x).float(), dim=1)
        values, indices = probs.topk(k, dim=1)
        for p, vs, ix in zip(chunk, values.tolist(), indices.tolist()):
            results.append({"file": str(p), "top": [{"class": classes[i], "index": i, "prob": round(v, 6)}
                                                    for v, i in zip(vs, ix)]})
    return results
