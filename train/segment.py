"""Train the segmenter from a config file; the same as ``usher2 train segmenter``.

Usage:
    python train/segment.py --config train/configs/segmenter_unet_cpu.yaml
    torchrun --nproc_per_node=4 train/segment.py --config train/configs/segmenter_unet_gpu.yaml

With ``cv_folds`` the recipe is cross-validated over BUS-BRA's patient-grouped folds first, then
the final network is trained on every fold and exported with its model card. A killed run
resumes from its checkpoints when started again with the same config.
"""

from __future__ import annotations

import sys

from usher2.cli import app

if __name__ == "__main__":
    app(["train", "segmenter", *sys.argv[1:]])
