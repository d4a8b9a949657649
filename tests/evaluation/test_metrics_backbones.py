"""Our backbones must have the published checkpoint layouts, key for key and shape for shape."""

from __future__ import annotations

import pytest
import torch

from latentcodec.errors import WeightsError
from latentcodec.evaluation.metrics.backbones import (
    AlexNetFeatures,
    FidInceptionV3,
    L2Pooling,
    VGG16Features,
    load_state_exactly,
    load_torchvision_features,
    resize_bilinear_tf1,
)

torch.set_num_threads(1)

# torchvision.models.alexnet: (features index, out, in, kernel) of each conv, then the classifier.
ALEXNET_CONVS = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]
ALEXNET_CLASSIFIER = {"classifier.1": (4096, 9216), "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)}
# torchvision.models.vgg16 (configuration D): 13 3x3 convs between 5 max pools.
VGG16_CONVS = [
    (0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256), (14, 256, 256),
    (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512),
]


def torchvision_layout(convs: list[tuple[int, ...]], default_kernel: int = 3) -> dict[str, tuple[int, ...]]:
    layout: dict[str, tuple[int, ...]] = {}
    for index, out_channels, in_channels, *kernel in convs:
        k = kernel[0] if kernel else default_kernel
        layout[f"features.{index}.weight"] = (out_channels, in_channels, k, k)
        layout[f"features.{index}.bias"] = (out_channels,)
    return layout


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def test_alexnet_features_match_torchvision_layout() -> None:
    ours = shapes(AlexNetFeatures())
    assert ours == torchvision_layout(ALEXNET_CONVS)
    assert list(ours) == list(torchvision_layout(ALEXNET_CONVS))  # same order as the checkpoint
    # torchvision's AlexNet has 61,100,840 parameters, 58,631,144 of them in the classifier.
    classifier = sum(o * i + o for o, i in ALEXNET_CLASSIFIER.values())
    assert sum(v.numel() for v in AlexNetFeatures().parameters()) + classifier == 61_100_840


def test_vgg16_features_match_torchvision_layout() -> None:
    ours = shapes(VGG16Features())
    assert ours == torchvision_layout(VGG16_CONVS)
    # VGG16 without its classifier head has 14,714,688 parameters (Simonyan & Zisserman, config D).
    assert sum(v.numel() for v in VGG16Features().parameters()) == 14_714_688


def test_full_torchvision_checkpoint_loads_and_ignores_the_classifier(tmp_path) -> None:
    source = AlexNetFeatures()
    state = dict(source.state_dict())
    # Stand-ins for the classifier entries (their content is irrelevant: they must be skipped).
    state.update({f"{name}.bias": torch.zeros(shape[0]) for name, shape in ALEXNET_CLASSIFIER.items()})
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    target = AlexNetFeatures()
    load_torchvision_features(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_wrong_layout_is_a_weights_error_naming_the_file(tmp_path) -> None:
    state = dict(VGG16Features().state_dict())
    path = tmp_path / "vgg16-397923af.pth"
    torch.save({k: v for k, v in state.items() if k != "features.28.bias"}, path)
    with pytest.raises(WeightsError, match="vgg16-397923af.pth.*features.28.bias"):
        load_torchvision_features(VGG16Features(), path)
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"features.0.weight has shape \(64, 3, 5, 5\)"):
        load_torchvision_features(VGG16Features(), path)


# The FID InceptionV3 (TF graph 2015-12-05), block by block: conv name -> (out, in, kh, kw).
def _inception_a(cin: int, pool: int) -> dict[str, tuple[int, int, int, int]]:
    return {"branch1x1": (64, cin, 1, 1), "branch5x5_1": (48, cin, 1, 1), "branch5x5_2": (64, 48, 5, 5),
            "branch3x3dbl_1": (64, cin, 1, 1), "branch3x3dbl_2": (96, 64, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3),
            "branch_pool": (pool, cin, 1, 1)}


def _inception_c(c7: int) -> dict[str, tuple[int, int, int, int]]:
    return {"branch1x1": (192, 768, 1, 1), "branch7x7_1": (c7, 768, 1, 1), "branch7x7_2": (c7, c7, 1, 7),
            "branch7x7_3": (192, c7, 7, 1), "branch7x7dbl_1": (c7, 768, 1, 1), "branch7x7dbl_2": (c7, c7, 7, 1),
            "branch7x7dbl_3": (c7, c7, 1, 7), "branch7x7dbl_4": (c7, c7, 7, 1), "branch7x7dbl_5": (192, c7, 1, 7),
            "branch_pool": (192, 768, 1, 1)}


def _inception_e(cin: int) -> dict[str, tuple[int, int, int, int]]:
    return {"branch1x1": (320, cin, 1, 1), "branch3x3_1": (384, cin, 1, 1), "branch3x3_2a": (384, 384, 1, 3),
            "branch3x3_2b": (384, 384, 3, 1), "branch3x3dbl_1": (448, cin, 1, 1), "branch3x3dbl_2": (384, 448, 3, 3),
            "branch3x3dbl_3a": (384, 384, 1, 3), "branch3x3dbl_3b": (384, 384, 3, 1), "branch_pool": (192, cin, 1, 1)}


PT_INCEPTION_CONVS: dict[str, tuple[int, int, int, int]] = {
    "Conv2d_1a_3x3": (32, 3, 3, 3), "Conv2d_2a_3x3": (32, 32, 3, 3), "Conv2d_2b_3x3": (64, 32, 3, 3),
    "Conv2d_3b_1x1": (80, 64, 1, 1), "Conv2d_4a_3x3": (192, 80, 3, 3),
    **{f"Mixed_5b.{k}": v for k, v in _inception_a(192, 32).items()},
    **{f"Mixed_5c.{k}": v for k, v in _inception_a(256, 64).items()},
    **{f"Mixed_5d.{k}": v for k, v in _inception_a(288, 64).items()},
    **{f"Mixed_6a.{k}": v for k, v in {"branch3x3": (384, 288, 3, 3), "branch3x3dbl_1": (64, 288, 1, 1),
                                       "branch3x3dbl_2": (96, 64, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3)}.items()},
    **{f"Mixed_6{b}.{k}": v for b, c7 in zip("bcde", (128, 160, 160, 192)) for k, v in _inception_c(c7).items()},
    **{f"Mixed_7a.{k}": v for k, v in {"branch3x3_1": (192, 768, 1, 1), "branch3x3_2": (320, 192, 3, 3),
                                       "branch7x7x3_1": (192, 768, 1, 1), "branch7x7x3_2": (192, 192, 1, 7),
                                       "branch7x7x3_3": (192, 192, 7, 1), "branch7x7x3_4": (192, 192, 3, 3)}.items()},
    **{f"Mixed_7b.{k}": v for k, v in _inception_e(1280).items()},
    **{f"Mixed_7c.{k}": v for k, v in _inception_e(2048).items()},
}


def test_fid_inception_matches_pt_inception_layout() -> None:
    expected: dict[str, tuple[int, ...]] = {}
    for name, shape in PT_INCEPTION_CONVS.items():
        expected[f"{name}.conv.weight"] = shape
        for entry in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{name}.bn.{entry}"] = (shape[0],)
    expected["fc.weight"] = (1008, 2048)
    expected["fc.bias"] = (1008,)
    assert shapes(FidInceptionV3()) == expected
    # Keras' InceptionV3 (same graph; BN without scale) has 23,851,784 parameters of which 34,432 are
    # moving statistics and 2,049,000 the 1000-class head: 21,751,136 conv weights over 17,216 BN channels.
    conv_weights = sum(o * i * h * w for o, i, h, w in PT_INCEPTION_CONVS.values())
    assert conv_weights == 21_751_136
    assert sum(shape[0] for shape in PT_INCEPTION_CONVS.values()) == 17_216


def test_inception_loads_checkpoints_with_batchnorm_step_counters(tmp_path) -> None:
    source = FidInceptionV3()
    with torch.no_grad():
        source.Mixed_7c.branch_pool.bn.running_var.fill_(2.5)
    state = dict(source.state_dict())
    state["Mixed_7c.branch_pool.bn.num_batches_tracked"] = torch.tensor(0)
    target = FidInceptionV3()
    load_state_exactly(target, state, "pt_inception")
    assert torch.all(target.Mixed_7c.branch_pool.bn.running_var == 2.5)


def test_inception_features_shape_and_determinism() -> None:
    network = FidInceptionV3().eval()
    images = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    with torch.inference_mode():
        first, again = network(images), network(images.clone())
    assert first.shape == (2, 2048)
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="uint8"):
        network(images.float())


def test_tf1_resize_samples_from_the_top_left_corner() -> None:
    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    # Halving samples the even pixels exactly (TF1 has no half-pixel offset).
    assert torch.equal(resize_bilinear_tf1(image, 2), image[:, :, ::2, ::2])
    row = torch.tensor([[[[0.0, 8.0], [0.0, 8.0]]]])
    # Doubling: positions 0, 0.5, 1, 1.5 -> the last one clamps to the edge pixel.
    assert torch.equal(resize_bilinear_tf1(row, 4)[0, 0, 0], torch.tensor([0.0, 4.0, 8.0, 8.0]))
    constant = torch.full((1, 3, 7, 5), 3.0)
    assert torch.allclose(resize_bilinear_tf1(constant, 299), torch.full((1, 3, 299, 299), 3.0))


def test_l2_pooling_keeps_the_magnitude_of_flat_regions() -> None:
    pool = L2Pooling(2)
    flat = torch.full((1, 2, 8, 8), -3.0)
    pooled = pool(flat)
    assert pooled.shape == (1, 2, 4, 4)
    # Interior outputs see only real pixels: sqrt(mean of 9) = 3; the border sees zero padding.
    assert torch.allclose(pooled[..., 1:, 1:], torch.full_like(pooled[..., 1:, 1:], 3.0))
    assert torch.all(pooled[..., 0, 0] < 3.0)
    assert "window" not in pool.state_dict()
