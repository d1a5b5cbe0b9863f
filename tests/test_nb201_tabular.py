"""Tabular NB201 evaluators: accuracy per data set and latency per device, and their input checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgenas.benchmarks.nb201_table import load_nb201
from edgenas.errors import EdgenasError
from edgenas.evaluators import ESTIMATOR_PREFIXES, TARGET_PREFIXES, EvalContext, make_estimator, make_target
from edgenas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
ARCH1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
DEVICES = ["pixel3", "raspi4", "eyeriss", "fpga", "gold_6226", "titan_rtx_1", "1080ti_1"]


def data_root() -> Path:
    base = Path(os.environ.get("EDGENAS_DATA") or ROOT.parent / "shared" / "data")
    if not (base / "nb201" / "nb201_accuracy.csv").is_file():
        pytest.skip(f"NB201 reference data not found under {base} (set EDGENAS_DATA)")
    return base


@pytest.fixture(scope="module")
def ctx() -> EvalContext:
    return EvalContext(space=get_space("nb201"), bench_data=str(data_root()))


def test_registered() -> None:
    assert "tabular" in ESTIMATOR_PREFIXES and "nb201" in TARGET_PREFIXES


def test_accuracy_look_ups(ctx: EvalContext) -> None:
    arch = ctx.space.from_string(ARCH1)  # row 1 of the table
    assert make_estimator("tabular:nb201", ctx)(arch) == pytest.approx(93.66)
    assert make_estimator("tabular:nb201:cifar10", ctx)(arch) == pytest.approx(93.66)
    assert make_estimator("tabular:nb201:cifar100", ctx)(arch) == pytest.approx(70.2933)
    est = make_estimator("tabular:nb201:imagenet16_120", ctx)
    assert est(arch) == pytest.approx(44.0333)
    assert est.name == "accuracy" and est.direction == "maximize" and est.instant and not est.cheap


def test_known_optima(ctx: EvalContext) -> None:
    table = load_nb201(ctx.shared_data_dir())
    assert table.accuracy_of("cifar10").max() == pytest.approx(94.3733)
    assert table.accuracy_of("cifar100").max() == pytest.approx(73.5133, abs=1e-3)
    assert table.accuracy_of("imagenet16_120").max() == pytest.approx(47.3111, abs=1e-3)
    assert table.row_index[ctx.space.code(ctx.space.from_string(ARCH1))] == 1


def test_latency_look_ups_every_device(ctx: EvalContext) -> None:
    arch = ctx.space.from_string(ARCH1)
    expected = [17.238, 54.777, 7.5778, 5.3154, 15.179, 6.7083, 12.9]
    for device, value in zip(DEVICES, expected, strict=True):
        target = make_target(f"nb201:{device}", ctx)
        assert target(arch) == pytest.approx(value)
        assert target.name == "latency" and target.unit == "ms" and target.instant


def test_vectorised_paths_agree(ctx: EvalContext) -> None:
    est = make_estimator("tabular:nb201", ctx)
    archs = [ctx.space.sample(np.random.default_rng(i)) for i in range(50)]
    codes = ctx.space.codes(archs)
    assert est.evaluate_batch(archs) == [est(a) for a in archs]
    assert np.array_equal(est.evaluate_codes(codes), np.array([est(a) for a in archs]))


def test_unknown_device_lists_valid_ones(ctx: EvalContext) -> None:
    with pytest.raises(EdgenasError) as err:
        make_target("nb201:rasp4", ctx)
    msg = str(err.value)
    assert all(d in msg for d in DEVICES) and "did you mean 'raspi4'" in msg


def test_unknown_dataset_and_benchmark(ctx: EvalContext) -> None:
    with pytest.raises(EdgenasError, match="valid: cifar10, cifar100, imagenet16_120"):
        make_estimator("tabular:nb201:svhn", ctx)
    with pytest.raises(EdgenasError, match="tabular benchmark"):
        make_estimator("tabular:nb301", ctx)


def test_needs_the_nb201_space(ctx: EvalContext) -> None:
    other = EvalContext(space=get_space("mbv3-tiny"), bench_data=ctx.bench_data)
    with pytest.raises(EdgenasError, match="use --space nb201"):
        make_estimator("tabular:nb201", other)


def test_missing_data_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGENAS_DATA", raising=False)
    space = get_space("nb201")
    with pytest.raises(EdgenasError, match="--bench-data PATH or set EDGENAS_DATA"):
        make_estimator("tabular:nb201", EvalContext(space=space))
    with pytest.raises(EdgenasError, match="NB201 data not found"):
        make_estimator("tabular:nb201", EvalContext(space=space, bench_data=str(tmp_path)))


def _copy(tmp_path: Path, edit_acc=None, edit_lat=None) -> Path:
    src = data_root() / "nb201"
    dst = tmp_path / "nb201"
    dst.mkdir()
    for name, edit in (("nb201_accuracy.csv", edit_acc), ("nb201_latency_ms.csv", edit_lat)):
        lines = (src / name).read_text().splitlines(keepends=True)
        (dst / name).write_text("".join(edit(lines) if edit else lines))
    return tmp_path


@pytest.mark.parametrize(
    ("edit_acc", "edit_lat", "fragment"),
    [
        (lambda ls: ls[:5] + ls[6:], None, "15,624 architectures, expected all 15,625"),
        (lambda ls: ls + [ls[3]], None, "line 15627: duplicate row index 2 (also on line 4)"),
        (lambda ls: ls + ["99999" + ls[3][ls[3].index(","):]], None, "duplicate architecture"),
        (lambda ls: ls[:3] + [ls[3].replace("~0|", "~5|", 1)] + ls[4:], None, "line 4: NB201 string"),
        (lambda ls: ls[:3] + [ls[3].rsplit(",", 1)[0] + ",n/a\n"] + ls[4:], None, "not a number"),
        (None, lambda ls: ls[:-1], "15,624 rows, expected 15,625"),
        (None, lambda ls: ls + [ls[1]], "duplicate row index 0 (also on line 2)"),
        (None, lambda ls: ls[:2] + ["20000" + ls[2][ls[2].index(","):]] + ls[3:], "20000 is not in"),
    ],
)
def test_bad_data_files(tmp_path: Path, edit_acc, edit_lat, fragment: str) -> None:
    root = _copy(tmp_path, edit_acc, edit_lat)
    with pytest.raises(EdgenasError) as err:
        load_nb201(root)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_cache_reloads_a_changed_file(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    first = load_nb201(root)
    assert load_nb201(root) is first
    path = root / "nb201" / "nb201_latency_ms.csv"
    path.write_text(path.read_text().replace("index,pixel3", "index,pixel3x"))
    assert "pixel3x" in load_nb201(root).devices
