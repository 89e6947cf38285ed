"""Train an enhancer from a config file; the same as ``usher2 train enhancer``.

Usage:
    python train/enhance.py --config train/configs/enhancer_pix2pix_cpu.yaml
    torchrun --nproc_per_node=4 train/enhance.py --config train/configs/enhancer_pix2pix_gpu.yaml

A killed run resumes from its checkpoint when started again with the same config.
"""

from __future__ import annotations

import sys

from usher2.cli import app

if __name__ == "__main__":
    app(["train", "enhancer", *sys.argv[1:]])
