"""What every zero-shot proxy shares: the signature, input checks and small model helpers.

A proxy is a function ``score(model, batch, seed) -> float`` (higher is better) where ``model`` is an
``nn.Module`` or a zero-argument builder that returns one, ``batch`` is ``(x, y)`` (``y`` may be ``None``
for proxies that need no labels) and ``seed`` fixes every random draw the proxy makes. A proxy never
changes the caller's module: it scores a deep copy (or a freshly built model), or, if it only reads the
module (#params, FLOPs), the module itself, left exactly as it was.

Unless a proxy's definition says otherwise, networks are scored as the zero-cost-proxy papers do
(Abdelfattah et al., ICLR 2021): at their initialisation, in training mode (batch norm uses the batch's
statistics), with dropout switched off so that the score is a deterministic function of weights and batch.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import EdgenasError

ModelLike = nn.Module | Callable[[], nn.Module]
Batch = tuple[torch.Tensor, torch.Tensor | None]
ProxyFn = Callable[..., float]

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
#: Activations whose "on" region is ``input > 0`` (NASWOT's binary codes).
RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.GELU, nn.SiLU, nn.ELU)


@dataclass(frozen=True)
class Proxy:
    """A registered proxy: its function and what it needs from the model and the batch."""

    name: str
    fn: ProxyFn
    summary: str
    citation: str
    needs_labels: bool = False
    needs_bn: bool = False
    min_batch: int = 1
    data_free: bool = False  # reads only the batch's shape (synflow, zen, #params, FLOPs)

    def __call__(self, model: ModelLike, batch: Batch, seed: int = 0, **kwargs: object) -> float:
        check_batch(self, batch)
        return float(self.fn(model, batch, seed, **kwargs))


def check_batch(proxy: Proxy, batch: Batch) -> None:
    """Clear one-line errors for a batch the proxy cannot use."""
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise EdgenasError(f"proxy '{proxy.name}' takes a batch (x, y); got {type(batch).__name__}")
    x, y = batch
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise EdgenasError(f"proxy '{proxy.name}': the batch's x must be a tensor N x C x H x W")
    check_batch_size(proxy, len(x))
    if proxy.needs_labels:
        if y is None:
            raise EdgenasError(f"proxy '{proxy.name}' needs labels: pass a batch (x, y) with y")
        if len(y) != len(x):
            raise EdgenasError(f"proxy '{proxy.name}': the batch has {len(x)} inputs but {len(y)} labels")


def check_batch_size(proxy: Proxy, size: int) -> None:
    if size < proxy.min_batch:
        raise EdgenasError(
            f"proxy '{proxy.name}' needs a batch of at least {proxy.min_batch} inputs, got {size}; "
            f"pass a larger --batch"
        )


def fresh_model(model: ModelLike) -> nn.Module:
    """A private copy of ``model`` (or the model a builder returns) that a proxy may change."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if callable(model):
        built = model()
        if not isinstance(built, nn.Module):
            raise EdgenasError(f"the model builder returned a {type(built).__name__}, not a torch nn.Module")
        return built
    raise EdgenasError(f"a proxy scores an nn.Module or a builder of one, not a {type(model).__name__}")


def model_to_read(model: ModelLike) -> nn.Module:
    """``model`` itself (not a copy) or the model a builder returns, for a proxy that only reads it (counts
    its parameters, or runs it in evaluation mode without gradients and restores its mode)."""
    return model if isinstance(model, nn.Module) else fresh_model(model)


def train_mode(model: nn.Module) -> nn.Module:
    """Training mode (batch norm on batch statistics) with every dropout layer switched off."""
    model.train()
    for m in model.modules():
        if isinstance(m, DROPOUTS):
            m.eval()
    return model


def channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D weights in channels-last layout: the same function (to float rounding), and on a
    CPU oneDNN runs CIFAR-sized convolutions 1.1-1.7x faster that way forward and backward (a no-op for
    models without 2-D convolutions). Not for double backward, which it slows down."""
    return model.to(memory_format=torch.channels_last)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The convolutions and linear layers whose weights the pruning-at-init proxies score."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS) and m.weight is not None]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, BATCHNORMS) for m in model.modules())


def require_batchnorm(model: nn.Module, proxy: str) -> None:
    if not has_batchnorm(model):
        raise EdgenasError(
            f"proxy '{proxy}' needs batch-norm layers and this network has none; use a proxy that does "
            f"not (e.g. naswot, synflow, jacob_cov)"
        )


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's output; models that return a tuple give their last element (NB201's original
    networks return ``(features, logits)``)."""
    out = model(x)
    if isinstance(out, tuple | list):
        out = out[-1]
    return out


def classification_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the model's logits on ``(x, y)``."""
    return cross_entropy(logits(model, x), y)


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits ``out``; labels outside the network's outputs become a clear error."""
    if y.min() < 0 or y.max() >= out.shape[-1]:
        raise EdgenasError(
            f"labels must lie in [0, {out.shape[-1]}) for a network with {out.shape[-1]} outputs; "
            f"got {int(y.min())}..{int(y.max())}"
        )
    return F.cross_entropy(out, y)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded, restoring its state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def run_forward(fn: Callable[[], float], proxy: str) -> float:
    """Call ``fn``, turning the errors a network raises on an unusable input into one line."""
    try:
        return fn()
    except EdgenasError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgenasError(f"proxy '{proxy}' could not run this network on this batch: {first}") from None


def weight_gradient_sum(model: ModelLike, batch: Batch, seed: int, proxy: str,
                        per_layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """``sum over conv/linear layers of per_layer(weight, dL/dweight)`` after one cross-entropy backward on
    ``batch`` in training mode: the skeleton of the pruning-at-init saliencies (grad_norm, SNIP), in float64."""
    x, y = batch
    with seeded(seed):
        net = train_mode(fresh_model(model))

        def compute() -> float:
            classification_loss(net, x, y).backward()
            total = torch.zeros((), dtype=torch.float64)
            for layer in weight_layers(net):
                if layer.weight.grad is not None:
                    total += per_layer(layer.weight.detach(), layer.weight.grad).double()
            return float(total)

        return run_forward(compute, proxy)

