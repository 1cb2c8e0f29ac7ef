"""The exact NTK of models from PyTorch: ``nk.ntk(nk.from_torch(cnn))`` on digits.

The CNN of ``benchmarks/compare_interop.py`` (two 3 x 3 convolutions, average pooling, a
linear readout; P = 5,050, O = 10) on N = 256 random 8 x 8 images, float32, CPU. Skips
(``NotImplementedError`` in ``setup``) where torch is not installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import nntk_array as nk

from .compare_interop import torch_cnn


class NTKFromTorchCNN:
    timeout = 600

    def setup(self) -> None:
        try:
            import torch
        except ImportError:
            raise NotImplementedError("torch is not installed") from None
        self.model = nk.from_torch(torch_cnn())
        self.theta = self.model.theta0
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.random((256, 1, 8, 8), dtype=np.float32))
        nk.ntk(self.model, self.theta, self.x[:8])  # warm-up

    def time_ntk_from_torch_cnn(self) -> Any:
        return nk.ntk(self.model, self.theta, self.x)

    def peakmem_ntk_from_torch_cnn(self) -> Any:
        return nk.ntk(self.model, self.theta, self.x)
