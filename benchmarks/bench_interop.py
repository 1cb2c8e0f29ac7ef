"""The exact NTK of models from PyTorch: ``nk.ntk(nk.from_torch(cnn))`` on digits.

The CNN of ``benchmarks/compare_interop.py`` (two 3 x 3 convolutions, average pooling, a
linear readout; P = 5,050, O = 10) on N = 256 random 8 x 8 images, float32, CPU. Skips
(``NotImplementedError`` in ``setup``) where torch is not installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import nntk_array as nk


class NTKFromTorchCNN:
    timeout = 600

    def setup(self) -> None:
        try:
            import torch
            from torch import nn
        except ImportError:
            raise NotImplementedError("torch is not installed") from None
        torch.manual_seed(0)
        cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        )
        self.model = nk.from_torch(cnn)
        self.theta = self.model.theta0
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.random((256, 1, 8, 8), dtype=np.float32))
        nk.ntk(self.model, self.theta, self.x[:8])  # warm-up

    def time_ntk_from_torch_cnn(self) -> Any:
        return nk.ntk(self.model, self.theta, self.x)

    def peakmem_ntk_from_torch_cnn(self) -> Any:
        return nk.ntk(self.model, self.theta, self.x)
