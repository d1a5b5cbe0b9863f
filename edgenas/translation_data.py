"""Parallel sentence data for the HAT Transformers: a built-in synthetic task, or the user's own sentence pairs.

* ``reverse`` (built in, nothing downloaded): each source sentence is 3-12 words of a 24-word vocabulary;
  its translation is the sentence backwards, every word replaced by its own target-language word. Every
  output word depends on a source word at another position, so a network has to learn attention to solve it.
  Easy: every SubTransformer of ``hat-tiny`` learns it almost perfectly.
* ``bigram`` (built in, harder): source sentences of 4-13 words of a 12-word vocabulary; the translation,
  backwards again, has one word per pair of adjacent source words, looked up in a fixed random table of the
  12 x 12 word pairs onto 12 target words. A network has to attend to two positions at once and memorise a
  144-entry table, so capacity shows: after 3,000 SuperTransformer steps the largest ``hat-tiny``
  SubTransformer reaches validation loss 0.09 / test BLEU 98.0 with shared weights, the smallest 0.34 /
  93.9 (on ``reverse`` both are near 99-100). With 24 words (a 576-entry table) 3,000 steps barely start
  learning it (BLEU 1-4).
* ``tsv:PATH``: a UTF-8 text file of ``source<TAB>target`` lines, words separated by spaces (tokenize or
  BPE-encode beforehand); split 80/10/10 with a seed, vocabularies from the training part.

Token ids 0-3 are padding, begin, end and unknown (see :mod:`edgenas.models.transformer`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edgenas.errors import EdgenasError

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


@dataclass
class Split:
    """Padded token ids: ``src`` (N, S) and ``tgt`` (N, T) with begin and end tokens."""

    src: torch.Tensor
    tgt: torch.Tensor

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def batches(self, size: int, rng: np.random.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in order (or shuffled by ``rng``), each trimmed to its longest sentences."""
        order = np.arange(len(self)) if rng is None else rng.permutation(len(self))
        out = []
        for i in range(0, len(order), size):
            idx = torch.as_tensor(order[i:i + size])
            s, t = self.src[idx], self.tgt[idx]
            s = s[:, : int((s != 0).sum(1).max())]
            t = t[:, : int((t != 0).sum(1).max())]
            out.append((s, t))
        return out


@dataclass
class ParallelData:
    """Vocabularies and train / validation / test splits of one translation task."""

    name: str
    src_words: list[str]
    tgt_words: list[str]
    train: Split
    val: Split
    test: Split

    @property
    def src_vocab(self) -> int:
        return len(self.src_words)

    @property
    def tgt_vocab(self) -> int:
        return len(self.tgt_words)

    def subset(self, max_train: int | None = None, max_val: int | None = None) -> ParallelData:
        """The first ``max_train`` training and ``max_val`` validation pairs (the test split unchanged)."""

        def cut(s: Split, n: int | None) -> Split:
            return s if not n else Split(s.src[:n], s.tgt[:n])

        return ParallelData(self.name, self.src_words, self.tgt_words, cut(self.train, max_train),
                            cut(self.val, max_val), self.test)

    def decode(self, ids: Sequence[int]) -> str:
        """Target ids -> words, up to the first end token."""
        words = []
        for i in ids:
            if int(i) == 2:
                break
            if int(i) > 3:
                words.append(self.tgt_words[int(i)])
        return " ".join(words)


def _pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def _splits(src: list[list[int]], tgt: list[list[int]], n_val: int, n_test: int) -> tuple[Split, Split, Split]:
    tgt = [[1, *t, 2] for t in tgt]
    n_train = len(src) - n_val - n_test
    parts = ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, len(src)))
    return tuple(Split(_pad(src[a:b]), _pad(tgt[a:b])) for a, b in parts)  # type: ignore[return-value]


def reverse_task(n: int = 10_000, words: int = 24, min_len: int = 3, max_len: int = 12, seed: int = 0) -> ParallelData:
    """The built-in ``reverse`` task (module docstring); 80/10/10 split."""
    rng = np.random.default_rng(seed)
    src_words = [*SPECIALS, *(f"w{i}" for i in range(words))]
    tgt_words = [*SPECIALS, *(f"W{i}" for i in range(words))]
    mapping = 4 + rng.permutation(words)
    src, tgt = [], []
    for _ in range(n):
        s = (4 + rng.integers(0, words, int(rng.integers(min_len, max_len + 1)))).tolist()
        src.append(s)
        tgt.append([int(mapping[w - 4]) for w in reversed(s)])
    return ParallelData("reverse", src_words, tgt_words, *_splits(src, tgt, n // 10, n // 10))


def bigram_task(n: int = 10_000, words: int = 12, min_len: int = 4, max_len: int = 13,
                seed: int = 0) -> ParallelData:
    """The built-in ``bigram`` task (module docstring); 80/10/10 split."""
    rng = np.random.default_rng(seed)
    src_words = [*SPECIALS, *(f"w{i}" for i in range(words))]
    tgt_words = [*SPECIALS, *(f"W{i}" for i in range(words))]
    table = 4 + rng.integers(0, words, (words, words))
    src, tgt = [], []
    for _ in range(n):
        s = (4 + rng.integers(0, words, int(rng.integers(min_len, max_len + 1)))).tolist()
        src.append(s)
        tgt.append([int(table[a - 4, b - 4]) for a, b in reversed(list(zip(s[:-1], s[1:], strict=True)))])
    return ParallelData("bigram", src_words, tgt_words, *_splits(src, tgt, n // 10, n // 10))


def read_tsv(path: str, max_words: int = 64, vocab_size: int = 8000, seed: int = 0) -> ParallelData:
    """``source<TAB>target`` lines (module docstring); sentences longer than ``max_words`` are cut."""
    if not os.path.isfile(path):
        raise EdgenasError(f"parallel data '{path}' not found: give a text file of 'source<TAB>target' lines")
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].split() or not parts[1].split():
                raise EdgenasError(f"{path}:{lineno}: expected 'source<TAB>target' with words on both sides")
            pairs.append((parts[0].split()[:max_words], parts[1].split()[:max_words]))
    if len(pairs) < 20:
        raise EdgenasError(f"{path} has {len(pairs)} sentence pairs; at least 20 are needed (80/10/10 split)")
    order = np.random.default_rng(seed).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    n_val = n_test = max(1, len(pairs) // 10)
    train = pairs[: len(pairs) - n_val - n_test]

    def vocab(side: int) -> list[str]:
        counts = Counter(w for p in train for w in p[side])
        return [*SPECIALS, *(w for w, _ in counts.most_common(vocab_size))]

    src_words, tgt_words = vocab(0), vocab(1)
    s_ids, t_ids = {w: i for i, w in enumerate(src_words)}, {w: i for i, w in enumerate(tgt_words)}
    src = [[s_ids.get(w, 3) for w in p[0]] for p in pairs]
    tgt = [[t_ids.get(w, 3) for w in p[1]] for p in pairs]
    return ParallelData(os.path.basename(path), src_words, tgt_words, *_splits(src, tgt, n_val, n_test))


def load_parallel(spec: str) -> ParallelData:
    """``reverse``, ``bigram`` or ``tsv:PATH`` (module docstring)."""
    if spec == "reverse":
        return reverse_task()
    if spec == "bigram":
        return bigram_task()
    if spec.startswith("tsv:"):
        return read_tsv(spec[4:])
    raise EdgenasError(f"unknown translation data '{spec}': use reverse or bigram (built in) or tsv:PATH "
                       "(a file of 'source<TAB>target' lines)")


def corpus_bleu(hypotheses: Sequence[Sequence[int]], references: Sequence[Sequence[int]], n: int = 4) -> float:
    """Corpus BLEU-4 (Papineni et al., ACL 2002) in %, on token ids: clipped n-gram precisions pooled over
    the corpus, their geometric mean, times the brevity penalty. 0 when some order has no match."""
    matches, totals = np.zeros(n), np.zeros(n)
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        hyp, ref = list(hyp), list(ref)
        hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
        for k in range(1, n + 1):
            h = Counter(tuple(hyp[i:i + k]) for i in range(len(hyp) - k + 1))
            r = Counter(tuple(ref[i:i + k]) for i in range(len(ref) - k + 1))
            matches[k - 1] += sum(min(c, r[g]) for g, c in h.items())
            totals[k - 1] += max(len(hyp) - k + 1, 0)
    if hyp_len == 0 or (matches == 0).any():
        return 0.0
    log_precision = float(np.mean(np.log(matches / totals)))
    brevity = min(0.0, 1.0 - ref_len / hyp_len)
    return 100.0 * float(np.exp(log_precision + brevity))
