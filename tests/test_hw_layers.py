"""The MBV3 layer index: enumeration covers every layer of random archs, and its costs equal the built net's."""

from __future__ import annotations

import numpy as np
import pytest

from edgenas.errors import InvalidArchitecture
from edgenas.hardware.features import Features
from edgenas.hardware.layers import MBV3Layers, make_divisible
from edgenas.spaces import get_space


def test_make_divisible_matches_the_builders():
    from edgenas.models.blocks import make_divisible as builder_rule

    for v in [3, 7.5, 12, 19.2, 28.8, 134.4, 1152, 0.5]:
        for d in (4, 8):
            assert make_divisible(v, d) == builder_rule(v, d)


def _built_units(model):
    """(op, cin, cout, kernel, stride, hidden, residual, se) of every layer of a built MBV3 network."""
    stem = model.stem[0]
    units = [("conv", stem.in_channels, stem.out_channels, stem.kernel_size[0], stem.stride[0], 0, False, False)]
    for b in model.blocks:
        units.append(("mbconv", b.cin, b.cout, b.kernel, b.stride, b.hidden, b.residual, b.se is not None))
    fe = model.head.final_expand[0]
    units.append(("conv", fe.in_channels, fe.out_channels, 1, 1, 0, False, False))
    mix = model.head.mix[0]
    units.append(("pool_mix", mix.in_channels, mix.out_channels, 1, 1, 0, False, False))
    fc = model.classifier[1]
    units.append(("linear", fc.in_features, fc.out_features, 1, 1, 0, False, False))
    return units


@pytest.mark.parametrize("name,classes,n", [("mbv3-tiny", 10, 25), ("tests.micro_space:micro_space", 10, 25)])
def test_enumeration_covers_every_layer_of_random_archs(name, classes, n, rng):
    space = get_space(name)
    layers = MBV3Layers(space, classes)
    keys = set(layers.position)
    assert len(keys) == len(layers.layers)  # distinct
    for _ in range(n):
        arch = space.sample(rng)
        mine = layers.arch_layers(arch)
        assert {lay.key for lay in mine} <= keys
        built = _built_units(space.build(arch, classes))
        assert [(u.op, u.cin, u.cout, u.kernel, u.stride, u.hidden, u.residual, u.se) for u in mine] == built


@pytest.mark.parametrize("name,classes", [("mbv3-tiny", 10), ("mbv3", 1000)])
def test_analytic_macs_and_params_equal_the_built_network(name, classes, rng):
    from edgenas.hardware.flops import count_macs, count_params

    space = get_space(name)
    layers = MBV3Layers(space, classes)
    archs = [space.sample(rng) for _ in range(2 if name == "mbv3-tiny" else 1)]
    ids = layers.batch_layer_ids(archs)
    macs, params = layers.sum(layers.layer_macs, ids), layers.sum(layers.layer_params, ids)
    for a, m, p in zip(archs, macs, params, strict=True):
        model = space.build(a, classes)
        assert m == count_macs(model, space.resolution(a))
        assert p == count_params(model)


def test_batch_ids_agree_with_single_and_inactive_values_are_ignored(rng):
    space = get_space("mbv3-tiny")
    layers = MBV3Layers(space, 10)
    archs = [space.sample(rng) for _ in range(40)]
    ids = layers.batch_layer_ids(archs)
    for a, row in zip(archs, ids, strict=True):
        assert [layers.layers[i].key for i in row if i >= 0] == [lay.key for lay in layers.arch_layers(a)]
    # An inactive block may hold anything (or be missing): it does not change the layers.
    a = dict(archs[0])
    a["s1.depth"] = 2
    b = {**a, "s1.b4.kernel": 99}
    del b["s1.b3.expand"]
    assert (layers.batch_layer_ids([a]) == layers.batch_layer_ids([b])).all()


def test_invalid_active_choice_names_the_architecture(rng):
    space = get_space("mbv3-tiny")
    layers = MBV3Layers(space, 10)
    archs = [space.sample(rng) for _ in range(5)]
    archs[3] = {**archs[3], "s2.b1.kernel": 4}
    with pytest.raises(InvalidArchitecture, match="stage 2 block 1 kernel 4 not in"):
        layers.batch_codes(archs)


def test_features_onehot_equals_the_space_encoding(rng):
    for name in ("mbv3-tiny", "mbv3"):
        space = get_space(name)
        archs = [space.sample(rng) for _ in range(30)]
        X = Features(space, 10).transform(archs)
        assert np.array_equal(X[:, : space.encoding_size], space.encode_batch(archs))
