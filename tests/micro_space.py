"""A micro MobileNetV3-style space for fast tests, loaded the way users load their own spaces
(``--space tests.micro_space:micro_space``)."""

from edgenas.spaces.mbv3 import MBV3Config, MBV3Space

MICRO_CONFIG = MBV3Config(
    stage_channels=(8, 16),
    stage_strides=(2, 2),
    stage_activations=("relu", "hswish"),
    stage_se=(False, True),
    depths=(1, 2),
    kernels=(3, 5),
    expands=(2, 3),
    resolutions=(8, 12),
    widths=(1.0,),
    stem_channels=8,
    first_block_channels=8,
    final_expand_channels=32,
    feature_channels=32,
    num_classes=10,
    channel_divisor=4,
)


def micro_space() -> MBV3Space:
    return MBV3Space.from_config("micro", MICRO_CONFIG, "test-only micro space")
