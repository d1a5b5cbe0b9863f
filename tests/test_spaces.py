from __future__ import annotations

import json

import numpy as np
import pytest

from edgenas.errors import EdgenasError, InvalidArchitecture
from edgenas.spaces import Dimension, SearchSpace, get_space


@pytest.mark.parametrize("name", ["mbv3", "mbv3-tiny"])
def test_sample_mutate_crossover_stay_valid(name, rng):
    space = get_space(name)
    for _ in range(50):
        a, b = space.sample(rng), space.sample(rng)
        assert space.validate(a) == a
        child = space.mutate(a, rng)
        assert space.validate(child) == child
        assert space.key(child) != space.key(a)  # mutation always changes the network
        mix = space.crossover(a, b, rng)
        assert space.validate(mix) == mix
        for dim in space.active_names(mix):
            assert mix[dim] in (a[dim], b[dim]) or dim.endswith((".kernel", ".expand"))


def test_inactive_blocks_are_canonical_and_ignored_by_key(rng):
    space = get_space("mbv3-tiny")
    arch = space.sample(rng)
    arch["s1.depth"] = 2
    arch = space.validate(arch)
    other = dict(arch)
    other["s1.b4.kernel"] = 7  # inactive: stage 1 has depth 2
    assert space.key(other) == space.key(arch)
    assert space.validate(other)["s1.b4.kernel"] == 3


def test_encode_decode_round_trip(rng):
    space = get_space("mbv3")
    archs = [space.sample(rng) for _ in range(20)]
    enc = space.encode_batch(archs)
    assert enc.shape == (20, space.encoding_size)
    for a, row in zip(archs, enc, strict=True):
        assert space.decode(row) == a
        # one 1 per active dimension, zeros for inactive blocks
        assert row.sum() == len(space.active_names(a))


def test_ofa_dict_round_trip(rng):
    space = get_space("mbv3")
    for _ in range(20):
        a = space.sample(rng)
        ofa = space.to_ofa(a)
        assert len(ofa["ks"]) == len(ofa["e"]) == 20 and len(ofa["d"]) == 5
        assert space.from_ofa(ofa) == a


def test_ofa_shared_dataset_rows_convert(shared_data):
    space = get_space("mbv3")
    with open(shared_data / "ofa_mbv3" / "ofa_mbv3_gpu_latency_ms.jsonl") as f:
        rows = [json.loads(next(f)) for _ in range(50)]
    for row in rows:
        arch = space.from_ofa(row)
        back = space.to_ofa(arch)
        assert back["d"] == row["d"] and back["r"] == (row["r"][0] if isinstance(row["r"], list) else row["r"])
        for i, d in enumerate(row["d"]):  # active slots survive exactly
            for j in range(d):
                assert back["ks"][4 * i + j] == row["ks"][4 * i + j]
                assert back["e"][4 * i + j] == row["e"][4 * i + j]


def test_validate_explains_errors():
    space = get_space("mbv3-tiny")
    arch = space.extreme()
    with pytest.raises(InvalidArchitecture, match=r"stage 3 depth 5 not in \{2, 3, 4\}"):
        space.validate({**arch, "s3.depth": 5})
    with pytest.raises(InvalidArchitecture, match="unknown dimension 'foo'"):
        space.validate({**arch, "foo": 1})
    missing = dict(arch)
    del missing["s2.b1.kernel"]
    with pytest.raises(InvalidArchitecture, match="stage 2 block 1 kernel is missing"):
        space.validate(missing)
    with pytest.raises(InvalidArchitecture, match="JSON object"):
        space.validate([1, 2])


def test_size_matches_enumeration(micro):
    archs = list(micro.enumerate())
    assert len(archs) == micro.size() == len({micro.key(a) for a in archs})
    # per stage: depth 1 -> 4 blocks, depth 2 -> 16; two stages; two resolutions
    assert micro.size() == (4 + 16) ** 2 * 2


def test_full_space_size_is_ofa_size():
    # OFA: ((3*3)^2 + (3*3)^3 + (3*3)^4)^5 subnets per resolution and width, about 2e19
    assert get_space("mbv3").size() == (81 + 729 + 6561) ** 5 * 25 * 2


def test_neighbours_differ_in_one_dimension(micro, rng):
    a = micro.sample(rng)
    for n in micro.neighbours(a):
        diff = [d for d in micro.active_names(n) if n[d] != a[d]]
        assert len(diff) == 1 or diff[0].endswith(".depth")


def test_user_defined_space_by_module_path():
    space = get_space("tests.micro_space:micro_space")
    assert space.name == "micro" and space.ref == "tests.micro_space:micro_space"
    with pytest.raises(EdgenasError, match="cannot load space"):
        get_space("tests.micro_space:nothing_here")


def test_unknown_space_suggests_closest():
    with pytest.raises(EdgenasError, match="did you mean 'mbv3-tiny'"):
        get_space("mbv3-tin")


def test_generic_space_without_activity_rule(rng):
    space = SearchSpace("toy", [Dimension("a", (1, 2, 3)), Dimension("op", ("x", "y"))])
    assert space.size() == 6 == len(list(space.enumerate()))
    assert space.validate(space.sample(rng))["op"] in ("x", "y")
    with pytest.raises(InvalidArchitecture, match=r"op 'z' not in \{x, y\}"):
        space.validate({"a": 1, "op": "z"})


def test_sampling_is_seeded():
    space = get_space("mbv3-tiny")
    assert space.sample(np.random.default_rng(3)) == space.sample(np.random.default_rng(3))
