"""Zero-shot (training-free) accuracy proxies: score an untrained network in about a second.

Every proxy has one signature, ``score(model_or_builder, (x, y), seed) -> float``, higher is better
(see :mod:`edgenas.estimators.proxies.base`); ``PROXIES`` maps registry names to them and ``score(name,
...)`` calls one by name. ``proxy:NAME`` as an ``--estimator`` makes one an accuracy estimator
(:mod:`edgenas.estimators.proxies.estimator`); ``proxy:ensemble`` or ``proxy:a+b+c`` votes several.
:mod:`edgenas.estimators.proxies.study` measures how well each ranks a space's architectures.

===========  ====================================================  ==========================
name         what it scores                                        source
===========  ====================================================  ==========================
zen          expressivity at a Gaussian init (+ BN variance term)  Lin et al., ICCV 2021
gradsign     agreement of per-sample gradient signs                Zhang & Jia, ICLR 2022
synflow      synaptic flow of the linearised network (data-free)   Tanaka et al., NeurIPS 2020
naswot       log-det of the ReLU-code kernel of a batch            Mellor et al., ICML 2021
grad_norm    summed gradient norms                                 Abdelfattah et al., ICLR 2021
snip         summed connection sensitivity ``|w * g|``              Lee et al., ICLR 2019
grasp        gradient-flow preservation ``-w * Hg``                 Wang et al., ICLR 2020
fisher       summed activation Fisher information                  Turner et al., ICLR 2020
jacob_cov    decorrelation of the inputs' Jacobians                Mellor et al., arXiv v1 2020
params       trainable parameters                                  baseline
flops        MACs of one forward pass                              baseline
===========  ====================================================  ==========================
"""

from __future__ import annotations

from edgenas.errors import unknown_name
from edgenas.estimators.proxies.base import Batch, ModelLike, Proxy
from edgenas.estimators.proxies.ensemble import DEFAULT_MEMBERS, mean_rank_vote, ranks
from edgenas.estimators.proxies.fisher import fisher
from edgenas.estimators.proxies.flops import flops
from edgenas.estimators.proxies.grad_norm import grad_norm
from edgenas.estimators.proxies.gradsign import gradsign
from edgenas.estimators.proxies.grasp import grasp
from edgenas.estimators.proxies.jacob_cov import jacob_cov
from edgenas.estimators.proxies.naswot import naswot
from edgenas.estimators.proxies.params import num_params
from edgenas.estimators.proxies.snip import snip
from edgenas.estimators.proxies.synflow import synflow
from edgenas.estimators.proxies.zen import zen_score

_ABD = "Abdelfattah et al., Zero-Cost Proxies for Lightweight NAS, ICLR 2021"

PROXIES: dict[str, Proxy] = {
    p.name: p
    for p in (
        Proxy("zen", zen_score, "expressivity at a Gaussian init plus BN variance term",
              "Lin et al., Zen-NAS, ICCV 2021", needs_bn=True, data_free=True),
        Proxy("gradsign", gradsign, "agreement of per-sample gradient signs",
              "Zhang & Jia, GradSign, ICLR 2022", needs_labels=True, min_batch=2),
        Proxy("synflow", synflow, "synaptic flow of the linearised, BN-free network",
              f"Tanaka et al., NeurIPS 2020; {_ABD}", data_free=True),
        Proxy("naswot", naswot, "log-det of the ReLU activation-code kernel",
              "Mellor et al., NAS without Training, ICML 2021", min_batch=2),
        Proxy("grad_norm", grad_norm, "summed per-layer gradient norms", _ABD, needs_labels=True),
        Proxy("snip", snip, "summed connection sensitivity |w * dL/dw|",
              f"Lee et al., SNIP, ICLR 2019; {_ABD}", needs_labels=True),
        Proxy("grasp", grasp, "gradient-flow preservation -w * Hg",
              f"Wang et al., GraSP, ICLR 2020; {_ABD}", needs_labels=True),
        Proxy("fisher", fisher, "summed activation Fisher information",
              f"Turner et al., BlockSwap, ICLR 2020; {_ABD}", needs_labels=True),
        Proxy("jacob_cov", jacob_cov, "decorrelation of the inputs' Jacobians",
              f"Mellor et al., arXiv:2006.04647v1; {_ABD}", min_batch=2),
        Proxy("params", num_params, "trainable parameters", _ABD, data_free=True),
        Proxy("flops", flops, "MACs of one forward pass", _ABD, data_free=True),
    )
}

ENSEMBLE = "ensemble"


def proxy_names() -> list[str]:
    """Every registered proxy, then ``ensemble``."""
    return [*PROXIES, ENSEMBLE]


def get_proxy(name: str) -> Proxy:
    """The proxy registered as ``name``; an unknown name lists the valid ones."""
    if name not in PROXIES:
        raise unknown_name("proxy", name, proxy_names())
    return PROXIES[name]


def parse_members(spec: str) -> tuple[str, ...]:
    """``ensemble`` -> the default members; ``a+b+c`` -> those proxies (each checked)."""
    members = DEFAULT_MEMBERS if spec == ENSEMBLE else tuple(s.strip() for s in spec.split("+") if s.strip())
    for m in members:
        get_proxy(m)
    return members


def score(name: str, model: ModelLike, batch: Batch, seed: int = 0, **kwargs: object) -> float:
    """Score ``model`` (an ``nn.Module`` or a builder of one) with the proxy ``name``."""
    return get_proxy(name)(model, batch, seed, **kwargs)


__all__ = [
    "DEFAULT_MEMBERS",
    "ENSEMBLE",
    "PROXIES",
    "Proxy",
    "get_proxy",
    "mean_rank_vote",
    "parse_members",
    "proxy_names",
    "ranks",
    "score",
]
