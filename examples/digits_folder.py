"""Write the bundled handwritten digits (scikit-learn's 1,797 real 8x8 images) as PNG class folders,
the layout `dartsnas search cnn --dataset imagefolder` reads, to try the "your own images" path:

    python examples/digits_folder.py my_images      # my_images/train/<digit>/*.png, my_images/val/<digit>/*.png
"""
import sys

from dartsnas.data.bundled import write_digits_folder

if __name__ == "__main__":
    print(write_digits_folder(sys.argv[1] if len(sys.argv) > 1 else "my_images"))
