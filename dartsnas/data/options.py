"""The config groups of the commands that read data: images (:class:`ImageData`) or a text corpus
(:class:`CorpusData`); the datasets a command takes come from :mod:`.table`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config, option
from ..errors import ConfigError
from .build import OwnDataOptions
from .table import datasets_for


@dataclass
class ImageData(Config):
    """Where the images come from, and how a user's own images are read."""

    dataset: str = option("cifar10", group="data")  # the command's table of datasets gives the choices
    data_dir: str | None = option(None, "folder holding the dataset, or imagefolder's root (train/<class>/, optional "
                                  "val/<class>/), or arrays' .npz file (x_train, y_train[, x_test, y_test]); "
                                  "$DARTSNAS_DATA when absent", group="data", default_text="data", resumable=True)
    download: bool = option(False, "fetch the official dataset archive (md5-checked) if missing", group="data",
                            resumable=True)
    verify: bool = option(True, "skip the official md5 check (for your own files in the CIFAR format)", group="data",
                          resumable=True)
    image_size: int | None = option(None, "imagefolder: resize the shorter side to S and centre-crop S x S (images of "
                                    "mixed sizes need it); imagenet: the crop size, 224 if not given", group="data", min=1,
                                    default_text="as they are")
    skip_bad_images: bool = option(False, "skip unreadable image files (the count is reported) instead of stopping",
                                   group="data", resumable=True)
    flip: bool = option(True, "no random horizontal flips for your own images (text, digits, anything with a "
                        "direction)", group="data")
    memory_gb: float = option(2.0, "your own images are held in memory up to this decoded size, streamed above it",
                              group="data", min=0, resumable=True)
    workers: int = option(2, "decoding processes for streamed images", group="data", min=0, resumable=True)

    #: The command whose column of the dataset table gives the datasets it accepts.
    DATASET_COMMAND = ""

    def check(self) -> None:
        super().check()
        accepted = datasets_for(self.DATASET_COMMAND)
        if self.dataset not in accepted:
            shown = [name for name in accepted if name != "python"]
            raise ConfigError(f"{{dataset}} must be one of {', '.join(shown)}, got {self.dataset!r}", names=("dataset",))

    def own_data_options(self, info: dict[str, Any] | None = None) -> Any:
        """The loading options these fields give; ``info`` (a trained model's data) fixes the classes,
        statistics and resize of evaluation and prediction."""
        if info is None:
            return OwnDataOptions(image_size=self.image_size, skip_bad_images=self.skip_bad_images, flip=self.flip,
                                  memory_gb=self.memory_gb)
        return OwnDataOptions(image_size=info["resize"], skip_bad_images=self.skip_bad_images, flip=self.flip,
                              memory_gb=self.memory_gb, stats=(tuple(info["mean"]), tuple(info["std"])),
                              classes=info["classes"])


@dataclass
class CorpusData(Config):
    """A language-modelling corpus and the AWD-LSTM model and objective around a recurrent cell."""

    data_dir: str | None = option(None, "corpus folder: train/valid/test .txt, ptb.*.txt or wiki.*.tokens",
                                  group="corpus", resumable=True)
    train_split: str = option("train", "split that trains w", group="corpus")
    val_split: str = option("valid", "split for α / model selection", group="corpus")
    emsize: int = option(300, group="corpus", min=1)
    nhid: int = option(300, group="corpus", min=1)
    bptt: int = option(35, group="corpus", min=1)
    max_seq_len_delta: int = option(20, "jitter of the random window length (AWD-LSTM)", group="corpus", min=0)
    eval_batch_size: int = option(10, group="corpus", min=1)
    tar: float = option(1e-3, "temporal activation regularisation β", group="corpus", min=0)
    ar: float = option(0.0, "activation regularisation α: α·mean(h²) of the cell's outputs after the output "
                       "dropout (AWD-LSTM; DARTS's rnn/train.py --alpha, default 0)", group="corpus", min=0)
    dropout: float = option(0.75, group="corpus", min=0, below=1)
    dropout_h: float = option(0.25, group="corpus", min=0, below=1)
    dropout_x: float = option(0.75, group="corpus", min=0, below=1)
    dropout_i: float = option(0.2, group="corpus", min=0, below=1)
    dropout_e: float = option(0.0, group="corpus", min=0, below=1)

    def check(self) -> None:
        super().check()
        if self.data_dir is None:
            raise ConfigError("{data_dir} is required: a folder with train/valid/test text files", names=("data_dir",))
