"""Generators that magnet_lab samples from: small CPA toys with known targets (``toy``) and
pre-trained image generators (added alongside), plus ``eval_mode`` for any model."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode (dropout off, BatchNorm on running statistics) and restore its
    previous mode afterwards; anything that is not an ``nn.Module`` passes through."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
