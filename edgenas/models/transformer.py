"""The HAT SuperTransformer and its SubTransformers: encoder-decoder Transformers with elastic dimensions.

Wang et al., "HAT: Hardware-Aware Transformers for Efficient Natural Language Processing" (ACL 2020). One
SuperTransformer holds the largest choice of every dimension of a :class:`~edgenas.spaces.transformer.HATSpace`;
a SubTransformer uses the *front part* of its weights:

* an embedding dimension ``e`` uses the first ``e`` columns of the embeddings, the first ``e`` input columns
  of every projection read from the residual stream, the first ``e`` output rows of every projection that
  writes into it, and the first ``e`` entries of every layer norm;
* a feed-forward dimension ``f`` uses the first ``f`` hidden units;
* the attention's query/key/value width is fixed (``qkv_dim``) and the number of heads splits it (HAT);
* a decoder with ``d`` layers uses the first ``d``;
* *arbitrary encoder-decoder attention*: decoder layer ``j`` attends to the outputs of the encoder's last
  ``k_j`` layers, concatenated along the sentence.

:class:`ElasticTransformer` is both: built at the largest sizes it is the SuperTransformer
(:meth:`~ElasticTransformer.set_active` picks the SubTransformer the next forward runs), built at one
architecture's sizes it is that SubTransformer as a standalone module (:meth:`~ElasticTransformer.extract`
copies the weights). Layers are pre-norm (a layer norm before each sub-layer, one after the stack), which
trains without a warm-up schedule at this scale; HAT's fairseq models are post-norm. The output projection
shares the target embedding's weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgenas.spaces.transformer import HATSpace

PAD, BOS, EOS, UNK = 0, 1, 2, 3


@dataclass(frozen=True)
class TransformerShape:
    """The allocated sizes of an :class:`ElasticTransformer` (the largest it can run)."""

    src_vocab: int
    tgt_vocab: int
    enc_embed: int
    dec_embed: int
    enc_ffn: tuple[int, ...]
    dec_ffn: tuple[int, ...]
    qkv_dim: int

    @classmethod
    def largest(cls, space: HATSpace, src_vocab: int, tgt_vocab: int) -> TransformerShape:
        cfg = space.hat
        return cls(src_vocab, tgt_vocab, max(cfg.embed), max(cfg.embed), (max(cfg.ffn),) * cfg.encoder_layers,
                   (max(cfg.ffn),) * cfg.max_decoder_layers, cfg.qkv_dim)

    @classmethod
    def of_arch(cls, space: HATSpace, arch: Mapping[str, Any], src_vocab: int, tgt_vocab: int) -> TransformerShape:
        a = space.validate(arch)
        return cls(src_vocab, tgt_vocab, int(a["encoder_embed_dim"]), int(a["decoder_embed_dim"]),
                   tuple(int(a[f"enc{i}.ffn"]) for i in range(1, space.hat.encoder_layers + 1)),
                   tuple(int(a[f"dec{j}.ffn"]) for j in range(1, int(a["decoder_layer_num"]) + 1)),
                   space.hat.qkv_dim)

    def to_dict(self) -> dict[str, Any]:
        return {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab, "enc_embed": self.enc_embed,
                "dec_embed": self.dec_embed, "enc_ffn": list(self.enc_ffn), "dec_ffn": list(self.dec_ffn),
                "qkv_dim": self.qkv_dim}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformerShape:
        return cls(int(d["src_vocab"]), int(d["tgt_vocab"]), int(d["enc_embed"]), int(d["dec_embed"]),
                   tuple(int(x) for x in d["enc_ffn"]), tuple(int(x) for x in d["dec_ffn"]), int(d["qkv_dim"]))


class ElasticLinear(nn.Linear):
    """A linear layer that may run on the front ``out x in`` block of its weight."""

    def forward(self, x: Tensor, out_features: int | None = None) -> Tensor:  # type: ignore[override]
        o, i = out_features or self.out_features, x.shape[-1]
        if (o, i) == (self.out_features, self.in_features):
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight[:o, :i], None if self.bias is None else self.bias[:o])


class ElasticLayerNorm(nn.LayerNorm):
    """A layer norm over the first ``x.shape[-1]`` features."""

    def forward(self, x: Tensor) -> Tensor:
        e = x.shape[-1]
        if e == self.normalized_shape[0]:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(x, (e,), self.weight[:e], self.bias[:e], self.eps)


class ElasticAttention(nn.Module):
    """Multi-head attention with a fixed query/key/value width that ``heads`` splits (HAT)."""

    def __init__(self, q_in: int, kv_in: int, qkv_dim: int) -> None:
        super().__init__()
        self.qkv_dim = qkv_dim
        self.q = ElasticLinear(q_in, qkv_dim)
        self.k, self.v = ElasticLinear(kv_in, qkv_dim), ElasticLinear(kv_in, qkv_dim)
        self.out = ElasticLinear(qkv_dim, q_in)

    def forward(self, x: Tensor, memory: Tensor, heads: int, blocked: Tensor) -> Tensor:
        """``x`` (B, T, e) attends to ``memory`` (B, S, e'); ``blocked`` (B or 1, 1 or T, S) is True where a
        query must not look."""
        B, T, e = x.shape
        S, hd = memory.shape[1], self.qkv_dim // heads
        q = self.q(x).view(B, T, heads, hd).transpose(1, 2)
        k = self.k(memory).view(B, S, heads, hd).transpose(1, 2)
        v = self.v(memory).view(B, S, heads, hd).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores.masked_fill(blocked.unsqueeze(1), -1e9)
        mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, self.qkv_dim)
        return self.out(mixed, out_features=e)


class FeedForward(nn.Module):
    def __init__(self, embed: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = ElasticLinear(embed, hidden), ElasticLinear(hidden, embed)

    def forward(self, x: Tensor, hidden: int) -> Tensor:
        return self.fc2(F.relu(self.fc1(x, out_features=hidden)), out_features=x.shape[-1])


class EncoderLayer(nn.Module):
    def __init__(self, embed: int, ffn: int, qkv_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = ElasticLayerNorm(embed), ElasticLayerNorm(embed)
        self.attn, self.ffn = ElasticAttention(embed, embed, qkv_dim), FeedForward(embed, ffn)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, blocked: Tensor, heads: int, ffn: int) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, heads, blocked))
        return x + self.drop(self.ffn(self.norm2(x), ffn))


class DecoderLayer(nn.Module):
    def __init__(self, embed: int, enc_embed: int, ffn: int, qkv_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (ElasticLayerNorm(embed) for _ in range(3))
        self.self_attn = ElasticAttention(embed, embed, qkv_dim)
        self.ende_attn = ElasticAttention(embed, enc_embed, qkv_dim)
        self.ffn = FeedForward(embed, ffn)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, self_blocked: Tensor, mem_blocked: Tensor,
                heads: int, ende_heads: int, ffn: int) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, heads, self_blocked))
        x = x + self.drop(self.ende_attn(self.norm2(x), memory, ende_heads, mem_blocked))
        return x + self.drop(self.ffn(self.norm3(x), ffn))


def sinusoids(length: int, dim: int, device: torch.device) -> Tensor:
    """The fixed sinusoidal position encodings of Vaswani et al. (2017), ``(length, dim)``."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * rate)
    out[:, 1::2] = torch.cos(pos * rate)
    return out


class ElasticTransformer(nn.Module):
    """The SuperTransformer (built with :meth:`TransformerShape.largest`) or one SubTransformer (built by
    :meth:`extract`); see the module docstring. ``forward(src, tgt_in)`` returns next-token logits
    ``(B, T, tgt_vocab)`` of the active architecture; token 0 is padding."""

    def __init__(self, space: HATSpace, shape: TransformerShape, dropout: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.space, self.shape = space, shape
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.src_embed = nn.Embedding(shape.src_vocab, shape.enc_embed, padding_idx=PAD)
            self.tgt_embed = nn.Embedding(shape.tgt_vocab, shape.dec_embed, padding_idx=PAD)
            self.encoder = nn.ModuleList(EncoderLayer(shape.enc_embed, f, shape.qkv_dim, dropout)
                                         for f in shape.enc_ffn)
            self.decoder = nn.ModuleList(DecoderLayer(shape.dec_embed, shape.enc_embed, f, shape.qkv_dim, dropout)
                                         for f in shape.dec_ffn)
            self.enc_norm, self.dec_norm = ElasticLayerNorm(shape.enc_embed), ElasticLayerNorm(shape.dec_embed)
            self.drop = nn.Dropout(dropout)
            for name, p in self.named_parameters():
                if p.dim() == 2 and "embed" in name:
                    nn.init.normal_(p, 0.0, shape.dec_embed ** -0.5 if "tgt" in name else shape.enc_embed ** -0.5)
                    with torch.no_grad():
                        p[PAD].zero_()
                elif p.dim() == 2:
                    nn.init.xavier_uniform_(p)
                elif name.endswith("bias") and "norm" not in name:
                    nn.init.zeros_(p)
        finally:
            torch.random.set_rng_state(gen_state)
        self.arch: dict[str, Any] = {}  # set_active() before the first forward

    # ------------------------------------------------------------------ the supernet contract
    def set_active(self, arch: Mapping[str, Any]) -> None:
        """Run ``arch`` from now on (it must fit the allocated sizes)."""
        a = self.space.validate(arch)
        d = int(a["decoder_layer_num"])
        if (d > len(self.decoder) or int(a["encoder_embed_dim"]) > self.shape.enc_embed
                or int(a["decoder_embed_dim"]) > self.shape.dec_embed
                or any(int(a[f"enc{i}.ffn"]) > f for i, f in enumerate(self.shape.enc_ffn, start=1))
                or any(int(a[f"dec{j}.ffn"]) > f for j, f in enumerate(self.shape.dec_ffn[:d], start=1))):
            raise ValueError("the architecture does not fit this network's allocated sizes")
        self.arch = a

    def extract(self, arch: Mapping[str, Any]) -> ElasticTransformer:
        """A standalone SubTransformer of ``arch`` with copies of this network's weights."""
        a = self.space.validate(arch)
        sub = ElasticTransformer(self.space, TransformerShape.of_arch(self.space, a, self.shape.src_vocab,
                                                                      self.shape.tgt_vocab),
                                 dropout=self.drop.p)
        mine = self.state_dict()
        with torch.no_grad():
            for name, p in sub.state_dict().items():
                p.copy_(mine[name][tuple(slice(0, n) for n in p.shape)])
        sub.set_active(a)
        return sub.train(self.training)

    # ------------------------------------------------------------------ running
    def encode(self, src: Tensor) -> tuple[list[Tensor], Tensor]:
        """Every encoder layer's output (through the final encoder norm) and the padding mask ``(B, 1, S)``."""
        a, e = self.arch, int(self.arch["encoder_embed_dim"])
        pad = (src == PAD).unsqueeze(1)
        x = self.src_embed(src)[..., :e] * math.sqrt(e) + sinusoids(src.shape[1], e, src.device)
        x = self.drop(x)
        outs = []
        for i, layer in enumerate(self.encoder, start=1):
            x = layer(x, pad, int(a[f"enc{i}.heads"]), int(a[f"enc{i}.ffn"]))
            outs.append(self.enc_norm(x))
        return outs, pad

    def decode(self, tgt_in: Tensor, enc_outs: Sequence[Tensor], src_pad: Tensor) -> Tensor:
        a, e, d = self.arch, int(self.arch["decoder_embed_dim"]), int(self.arch["decoder_layer_num"])
        T = tgt_in.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt_in.device).triu(1).unsqueeze(0)
        self_blocked = causal | (tgt_in == PAD).unsqueeze(1)
        x = self.drop(self.tgt_embed(tgt_in)[..., :e] * math.sqrt(e) + sinusoids(T, e, tgt_in.device))
        for j in range(1, d + 1):
            k = int(a[f"dec{j}.ende_layers"])
            memory = torch.cat(list(enc_outs[-k:]), dim=1)
            x = self.decoder[j - 1](x, memory, self_blocked, src_pad.repeat(1, 1, k), int(a[f"dec{j}.heads"]),
                                    int(a[f"dec{j}.ende_heads"]), int(a[f"dec{j}.ffn"]))
        return F.linear(self.dec_norm(x), self.tgt_embed.weight[:, :e])

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        enc_outs, pad = self.encode(src)
        return self.decode(tgt_in, enc_outs, pad)

    @torch.no_grad()
    def translate(self, src: Tensor, max_len: int) -> Tensor:
        """Greedy decoding: ``(B, <= max_len)`` target tokens after BOS, padded after each sentence's EOS."""
        enc_outs, pad = self.encode(src)
        out = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(out, enc_outs, pad)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return out[:, 1:]


def build_supertransformer(space: HATSpace, src_vocab: int, tgt_vocab: int, dropout: float = 0.1,
                           seed: int = 0) -> ElasticTransformer:
    """The SuperTransformer of ``space`` for the given vocabularies."""
    net = ElasticTransformer(space, TransformerShape.largest(space, src_vocab, tgt_vocab), dropout, seed)
    net.set_active(space.extreme(smallest=False))
    return net


def build_subtransformer(space: HATSpace, arch: Mapping[str, Any], src_vocab: int, tgt_vocab: int,
                         dropout: float = 0.1, seed: int = 0) -> ElasticTransformer:
    """A freshly initialised SubTransformer of ``arch`` (for training from scratch)."""
    net = ElasticTransformer(space, TransformerShape.of_arch(space, arch, src_vocab, tgt_vocab), dropout, seed)
    net.set_active(arch)
    return net
