"""Read the published per-layer latency tables of Once-for-All and ProxylessNAS.

OFA (Cai et al., ICLR 2020) published one YAML table per input resolution, measured on a Samsung Note10
(``note10_{160,176,192,208,224}_lookup_table.yaml``); ProxylessNAS (Cai et al., ICLR 2019) one for a
Google Pixel 1 at 224 px (``proxylessnas_pixel1_mobile_trim.yaml``). Their keys name a layer by its
role, input and output shapes and choices, e.g.
``expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0``
(OFA: ``expand`` is the hidden channel count; ProxylessNAS: the expand ratio, and no ``se``/``hs``).
Values are ``{count, mean, std}`` (OFA) or ``{count, mean, var}`` (ProxylessNAS), in ms.

:func:`load_published_lut` turns a file or a folder of them into a :class:`LatencyTable` whose
``keys_for`` maps our MBV3 layers to their keys at the network's resolution, so ``--target lut:PATH``
works for the full-size ``mbv3`` space. The OFA tables cover OFA's MobileNetV3 at width 1.2 and 1000
classes; the ProxylessNAS table covers ProxylessNAS's own mobile space (other channel counts), so our
``mbv3`` networks find no entry there and the error names the first missing key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from edgenas.errors import EdgenasError
from edgenas.hardware.layers import Layer
from edgenas.hardware.lut import Calibration, LatencyTable

_RES_IN_NAME = re.compile(r"_(\d{2,4})_lookup_table\.ya?ml$")
_STEM = re.compile(r"^Conv-input:(\d+)x\d+x(\d+)-output:\d+x\d+x(\d+)$")


def _shape(size: int, channels: int) -> str:
    return f"{size}x{size}x{channels}"


def published_keys(layer: Layer, resolution: int, style: str) -> list[str]:
    """The keys of OFA's (``style='ofa'``) or ProxylessNAS's (``'proxyless'``) tables for one of our layers,
    prefixed with the resolution of the table they live in."""
    s, o = layer.size, layer.out_size
    if layer.op == "conv" and layer.kernel == 1:
        keys = [f"Conv_1-input:{_shape(s, layer.cin)}-output:{_shape(o, layer.cout)}"]
    elif layer.op == "conv":
        keys = [f"Conv-input:{_shape(s, layer.cin)}-output:{_shape(o, layer.cout)}"]
    elif layer.op == "mbconv":
        expand = layer.hidden if style == "ofa" else layer.expand
        key = (
            f"expanded_conv-input:{_shape(s, layer.cin)}-output:{_shape(o, layer.cout)}-expand:{expand}"
            f"-kernel:{layer.kernel}-stride:{layer.stride}-idskip:{int(layer.residual)}"
        )
        if style == "ofa":
            key += f"-se:{int(layer.se)}-hs:{int(layer.act == 'hswish')}"
        keys = [key]
    elif layer.op == "pool_mix":
        keys = [
            f"AvgPool2D-input:{_shape(s, layer.cin)}-output:{_shape(1, layer.cin)}",
            f"Conv_2-input:{_shape(1, layer.cin)}-output:{_shape(1, layer.cout)}",
        ]
    else:  # linear
        keys = [f"Logits-input:{_shape(1, layer.cin)}-output:{layer.cout}"]
    return [f"r{resolution}/{k}" for k in keys]


def _read_yaml(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgenasError(f"latency table '{path}' is not valid YAML (corrupted or truncated?): {first}") from None
    if not isinstance(data, dict) or not data:
        raise EdgenasError(f"latency table '{path}' holds no 'key: {{mean, ...}}' entries")
    out: dict[str, dict[str, float]] = {}
    for key, value in data.items():
        if not isinstance(value, dict) or not isinstance(value.get("mean"), int | float):
            raise EdgenasError(f"latency table '{path}': entry '{key}' has no numeric 'mean' (truncated file?)")
        std = value.get("std")
        if std is None and isinstance(value.get("var"), int | float):
            std = float(value["var"]) ** 0.5
        out[str(key)] = {"mean": float(value["mean"]), "std": float(std or 0.0), "count": int(value.get("count", 0))}
    return out


def _resolution(path: Path, entries: dict[str, Any]) -> int:
    m = _RES_IN_NAME.search(path.name)
    if m:
        return int(m.group(1))
    for key in entries:
        stem = _STEM.match(key)
        if stem:
            return int(stem.group(1))
    raise EdgenasError(f"cannot tell the input resolution of latency table '{path}' (no stem 'Conv-input:' key)")


def load_published_lut(path: str | Path) -> LatencyTable:
    """An OFA / ProxylessNAS YAML table (a file, or a folder of OFA's per-resolution files) as a LatencyTable."""
    path = Path(path)
    if path.is_dir():  # a folder: OFA's per-resolution tables, named *_RES_lookup_table.yaml
        files = sorted(f for f in path.iterdir() if _RES_IN_NAME.search(f.name))
        if not files:
            raise EdgenasError(
                f"no per-resolution tables (*_RES_lookup_table.yaml) in folder '{path}'; "
                f"point lut: at one .yaml file instead"
            )
    else:
        files = [path]
    entries: dict[str, dict[str, float]] = {}
    resolutions, styles, stems = [], set(), set()
    for f in files:
        table = _read_yaml(f)
        res = _resolution(f, table)
        resolutions.append(res)
        styles.add("ofa" if any("-se:" in k for k in table) else "proxyless")
        for k in table:
            stem = _STEM.match(k)
            if stem:
                stems.add(f"{stem.group(2)}->{stem.group(3)}")
        entries.update({f"r{res}/{k}": v for k, v in table.items()})
    if len(styles) > 1:
        raise EdgenasError(f"folder '{path}' mixes OFA and ProxylessNAS tables; point at one of them")
    style = styles.pop()
    who = "OFA (Note10)" if style == "ofa" else "ProxylessNAS (Pixel 1)"
    space = "OFA MobileNetV3 at width 1.2, 1000 classes" if style == "ofa" else "ProxylessNAS's mobile space"
    built_for = (
        f"{who}'s published table{'s' if len(files) > 1 else ''} at resolution(s) {sorted(resolutions)}: "
        f"{space}, stem conv {', '.join(sorted(stems)) or '?'} channels"
    )
    meta = {"built_for": built_for, "published": style, "resolutions": sorted(resolutions),
            "files": [str(f) for f in files], "unit": "ms", "stat": "mean"}
    return LatencyTable(
        entries, meta, Calibration(),
        keys_for=lambda layer, res, style=style: published_keys(layer, res, style),
        stat="mean", source=str(path),
    )
