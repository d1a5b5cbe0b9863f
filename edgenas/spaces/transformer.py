"""The HAT SubTransformer space: heterogeneous encoder-decoder Transformers for machine translation.

Wang et al., "HAT: Hardware-Aware Transformers for Efficient Natural Language Processing" (ACL 2020). A
SubTransformer of the WMT'14 En-De SuperTransformer has

* an encoder embedding dimension and a decoder embedding dimension;
* 6 encoder layers, each with its own feed-forward hidden dimension and number of self-attention heads;
* 1-6 decoder layers (the first ``decoder_layer_num`` are active), each with its own feed-forward hidden
  dimension, self-attention heads, encoder-decoder attention heads, and the number of the encoder's last
  layers its encoder-decoder attention reads (HAT's *arbitrary encoder-decoder attention*: 1, 2 or 3).

The choices are those of HAT's published latency data sets (2,000 measured SubTransformers per device;
``../shared/data/hat``), a superset of the paper's search space (feed-forward 512 and 2 heads included).

HAT's latency predictor sees ten numbers per SubTransformer, and the data sets record only those: the two
embedding dimensions, the two layer counts and the averages over the active layers of each per-layer
choice. :meth:`HATSpace.latency_features` computes them; :meth:`HATSpace.from_features` gives one
SubTransformer with exactly a row's features (any of them has the same features, so the same predicted
latency), which is how a data set row becomes an architecture of this space.

The choices are a :class:`HATConfig`: ``hat-wmt14`` is the paper's, ``hat-tiny`` a scaled-down space of
the same structure that trains on a CPU (the SuperTransformer of :mod:`edgenas.models.transformer`,
``edgenas hat train``). Networks of this space translate token sequences, not images: they are trained,
searched and exported by ``edgenas hat``, not ``edgenas search``, which serves them latency models only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgenas.errors import InvalidArchitecture
from edgenas.spaces.base import Arch, Dimension, SearchSpace

EMBED = (512, 640)
FFN = (512, 1024, 2048, 3072)
HEADS = (2, 4, 8)
ENDE_LAYERS = (1, 2, 3)
ENCODER_LAYERS = 6
MAX_DECODER_LAYERS = 6
QKV_DIM = 512  # HAT keeps the attention's query/key/value width fixed; heads split it

#: HAT's feature columns, in its data sets' order.
FEATURES: tuple[str, ...] = (
    "encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg", "encoder_self_attention_heads_avg",
    "decoder_embed_dim", "decoder_layer_num", "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg",
)
ENCODER_PARTS = ("ffn", "heads")
DECODER_PARTS = ("ffn", "heads", "ende_heads", "ende_layers")
_FEATURE_OF = {("enc", "ffn"): "encoder_ffn_embed_dim_avg", ("enc", "heads"): "encoder_self_attention_heads_avg",
               ("dec", "ffn"): "decoder_ffn_embed_dim_avg", ("dec", "heads"): "decoder_self_attention_heads_avg",
               ("dec", "ende_heads"): "decoder_ende_attention_heads_avg",
               ("dec", "ende_layers"): "decoder_arbitrary_ende_attn_avg"}


@dataclass(frozen=True)
class HATConfig:
    """The choices of a HAT space: embedding dims, feed-forward dims, heads, how many of the encoder's last
    layers a decoder layer may attend to, the (fixed) encoder depth, the largest decoder depth, and the
    attention width that the heads split (fixed, as in HAT)."""

    embed: tuple[int, ...] = EMBED
    ffn: tuple[int, ...] = FFN
    heads: tuple[int, ...] = HEADS
    ende_layers: tuple[int, ...] = ENDE_LAYERS
    encoder_layers: int = ENCODER_LAYERS
    max_decoder_layers: int = MAX_DECODER_LAYERS
    qkv_dim: int = QKV_DIM

    def __post_init__(self) -> None:
        for h in self.heads:
            if self.qkv_dim % h:
                raise ValueError(f"qkv_dim {self.qkv_dim} is not divisible by {h} heads")
        if max(self.ende_layers) > self.encoder_layers:
            raise ValueError(f"ende_layers {self.ende_layers} reach beyond {self.encoder_layers} encoder layers")

    def choices(self, part: str) -> tuple[int, ...]:
        return {"ffn": self.ffn, "heads": self.heads, "ende_heads": self.heads, "ende_layers": self.ende_layers}[part]


def _decoder_layer_active(name: str, partial: Mapping[str, Any]) -> bool:
    if not name.startswith("dec") or "." not in name:
        return True
    return int(name[3:name.index(".")]) <= int(partial.get("decoder_layer_num", 1 << 30))


#: a HAT space small enough to train on a CPU in minutes (same structure as HAT's, smaller widths)
TINY = HATConfig(embed=(48, 64), ffn=(64, 128, 256), heads=(2, 4), ende_layers=(1, 2), encoder_layers=3,
                 max_decoder_layers=3, qkv_dim=64)


@dataclass
class HATSpace(SearchSpace):
    """The HAT SubTransformer space (see the module docstring)."""

    hat: HATConfig = field(default_factory=HATConfig)

    @classmethod
    def create(cls, name: str = "hat-wmt14", cfg: HATConfig | None = None, description: str = "") -> HATSpace:
        cfg = cfg or HATConfig()
        dims = [Dimension("encoder_embed_dim", cfg.embed, "encoder embedding dim"),
                Dimension("decoder_embed_dim", cfg.embed, "decoder embedding dim")]
        for i in range(1, cfg.encoder_layers + 1):
            dims += [Dimension(f"enc{i}.{part}", cfg.choices(part), f"encoder layer {i} {part.replace('_', ' ')}")
                     for part in ENCODER_PARTS]
        dims.append(Dimension("decoder_layer_num", tuple(range(1, cfg.max_decoder_layers + 1)), "decoder layers"))
        for j in range(1, cfg.max_decoder_layers + 1):
            dims += [Dimension(f"dec{j}.{part}", cfg.choices(part), f"decoder layer {j} {part.replace('_', ' ')}")
                     for part in DECODER_PARTS]
        per_enc = math.prod(len(cfg.choices(p)) for p in ENCODER_PARTS)
        per_dec = math.prod(len(cfg.choices(p)) for p in DECODER_PARTS)
        total = len(cfg.embed) ** 2 * per_enc ** cfg.encoder_layers * sum(
            per_dec ** d for d in range(1, cfg.max_decoder_layers + 1))
        return cls(name=name, dimensions=dims, is_active=_decoder_layer_active, counter=lambda: total, hat=cfg,
                   config={"hat": asdict(cfg)},
                   description=description or "HAT SubTransformers (WMT'14 En-De): embed dims, 1-6 decoder "
                   "layers, per-layer FFN dims and heads, arbitrary encoder-decoder attention")

    def build(self, arch: Mapping[str, Any], num_classes: int, in_channels: int = 3, seed: int = 0) -> Any:
        raise InvalidArchitecture(
            f"space '{self.name}' has no build function for image classifiers: it holds translation Transformers; "
            f"train its SuperTransformer with 'edgenas hat train --space {self.name}' and search it with 'edgenas "
            "hat search' (edgenas latency fit also takes this space)")

    # ------------------------------------------------------------ HAT's features
    def latency_feature_names(self) -> list[str]:
        return list(FEATURES)

    def latency_features(self, archs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """HAT's ten features of each architecture (``(n, 10)``, columns :data:`FEATURES`)."""
        out = np.empty((len(archs), len(FEATURES)))
        for row, arch in enumerate(archs):
            a = self.validate(arch)
            d = int(a["decoder_layer_num"])
            n_enc = self.hat.encoder_layers
            enc = {p: np.mean([a[f"enc{i}.{p}"] for i in range(1, n_enc + 1)]) for p in ENCODER_PARTS}
            dec = {p: np.mean([a[f"dec{j}.{p}"] for j in range(1, d + 1)]) for p in DECODER_PARTS}
            out[row] = (a["encoder_embed_dim"], n_enc, enc["ffn"], enc["heads"],
                        a["decoder_embed_dim"], d, dec["ffn"], dec["heads"], dec["ende_heads"], dec["ende_layers"])
        return out

    def macs(self, arch: Mapping[str, Any], source_tokens: int = 30, target_tokens: int = 30) -> float:
        """Multiply-accumulates of translating one sentence (``source_tokens`` in, ``target_tokens`` out,
        the decoder run once per output token with cached keys and values), in the encoder and decoder
        layers: projections, attention scores and weighted sums, feed-forward layers. Embedding look-ups
        and the output vocabulary projection are left out (they depend on the vocabulary, not the
        architecture's choices). The cost model HAT shows to rank latency poorly (its Fig. 2)."""
        a = self.validate(arch)
        e_enc, e_dec, d = int(a["encoder_embed_dim"]), int(a["decoder_embed_dim"]), int(a["decoder_layer_num"])
        S, T, qkv = source_tokens, target_tokens, self.hat.qkv_dim
        total = 0.0
        for i in range(1, self.hat.encoder_layers + 1):
            f = int(a[f"enc{i}.ffn"])
            total += S * (4 * e_enc * qkv + 2 * e_enc * f) + 2 * S * S * qkv
        for j in range(1, d + 1):
            f = int(a[f"dec{j}.ffn"])
            per_token = 4 * e_dec * qkv + 2 * e_dec * qkv + 2 * e_dec * f  # self-attn, ende q/out, FFN
            ende_kv = 2 * S * e_enc * qkv  # keys and values of the encoder output, once per sentence
            ende_len = S * int(a[f"dec{j}.ende_layers"])  # arbitrary attention: 1-3 encoder layers' outputs
            attn = sum(2 * t * qkv for t in range(1, T + 1)) + T * 2 * ende_len * qkv
            total += T * per_token + ende_kv * int(a[f"dec{j}.ende_layers"]) + attn
        return float(total)

    def from_features(self, row: Mapping[str, Any]) -> Arch:
        """A SubTransformer whose :meth:`latency_features` equal ``row`` (a data set row: the keys of
        :data:`FEATURES`); a value no combination of choices reaches is an :class:`InvalidArchitecture`."""
        missing = [f for f in FEATURES if f not in row]
        if missing:
            raise InvalidArchitecture(f"HAT features lack {', '.join(missing)}")
        try:
            values = {f: float(row[f]) for f in FEATURES}
        except (TypeError, ValueError):
            raise InvalidArchitecture("HAT features must be numbers") from None
        n_enc, max_dec = self.hat.encoder_layers, self.hat.max_decoder_layers
        if values["encoder_layer_num"] != n_enc:
            raise InvalidArchitecture(f"encoder_layer_num {values['encoder_layer_num']:g} is not {n_enc} "
                                      f"(the space '{self.name}' has {n_enc} encoder layers)")
        d = values["decoder_layer_num"]
        if d not in range(1, max_dec + 1):
            raise InvalidArchitecture(f"decoder_layer_num {d:g} not in {{1, ..., {max_dec}}}")
        arch: Arch = {"encoder_embed_dim": _as_choice(values["encoder_embed_dim"]),
                      "decoder_embed_dim": _as_choice(values["decoder_embed_dim"]), "decoder_layer_num": int(d)}
        for prefix, n, parts in (("enc", n_enc, ENCODER_PARTS), ("dec", int(d), DECODER_PARTS)):
            for part in parts:
                feature = _FEATURE_OF[prefix, part]
                choices = self.hat.choices(part)
                for k, v in enumerate(_layers_with_mean(choices, n, values[feature], feature), start=1):
                    arch[f"{prefix}{k}.{part}"] = v
        return self.validate(arch)


def _as_choice(value: float) -> int:
    return int(value) if float(value).is_integer() else value  # type: ignore[return-value]


def _layers_with_mean(choices: Sequence[int], n: int, mean: float, feature: str) -> tuple[int, ...]:
    """``n`` choices (non-decreasing) whose mean is ``mean``, or an error naming ``feature``."""
    target = mean * n
    for combo in itertools.combinations_with_replacement(sorted(choices), n):
        if abs(sum(combo) - target) < 1e-6 * max(1.0, abs(target)):
            return combo
    raise InvalidArchitecture(f"{feature} {mean:g} is not the mean of {n} choices from {set(choices)}")


def hat_wmt14_space() -> HATSpace:
    return HATSpace.create()


def hat_tiny_space() -> HATSpace:
    return HATSpace.create("hat-tiny", TINY, "HAT SubTransformers, CPU-sized: embed 48/64, FFN 64-256, 2/4 heads, "
                           "3 encoder and 1-3 decoder layers, arbitrary encoder-decoder attention")
