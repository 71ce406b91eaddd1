import pytest
import torch

from autodistill import parse_config
from autodistill.students import build_student, get_family, list_families
from autodistill.students._common import make_divisible, stage_strides

FAMILIES = list_families()
CONV = [f for f in FAMILIES if "widths" in get_family(f).dims.model_fields]


def spec(family, image_size, in_channels=3, **dims):
    return {"family": family, "dims": dims, "in_channels": in_channels, "num_classes": 7, "image_size": image_size}


def test_registry_lists_the_families():
    assert {"cnn", "resnet", "mobilenet", "vit"} <= set(FAMILIES) and set(CONV) == {"cnn", "resnet", "mobilenet"}
    with pytest.raises(ValueError, match="unknown student family 'vgg'; valid: cnn"):
        get_family("vgg")


@pytest.mark.parametrize("family", CONV)
@pytest.mark.parametrize("image_size, channels", [(8, 1), (32, 3), (224, 3)])
def test_every_family_runs_forward_and_backward_at_every_size(family, image_size, channels):
    model = build_student(spec(family, image_size, channels, widths=[8, 16], depths=[1, 2], width_mult=0.5))
    x = torch.randn(2, channels, image_size, image_size)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    feats = model.forward_features(x)
    assert len(feats) == 2 and feats[-1].shape[1] == 8  # 16 * 0.5


def test_the_registry_builds_the_families_the_config_knows():
    # a study file is read without torch (autodistill.config._students): both lists must agree
    from autodistill.config._students import FAMILY_DIMS, MOBILENET_ACTIVATIONS
    from autodistill.students.mobilenet import _ACTIVATIONS

    assert {name: get_family(name).dims for name in FAMILIES} == FAMILY_DIMS
    assert sorted(_ACTIVATIONS) == MOBILENET_ACTIVATIONS


@pytest.mark.parametrize("family", CONV)
def test_dims_change_the_size(family):
    small = build_student(spec(family, 32, widths=[16, 32], depths=[1, 1], width_mult=0.5))
    big = build_student(spec(family, 32, widths=[16, 32], depths=[2, 2], width_mult=1.0))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(big) > 2 * n(small)


def test_spec_round_trip_gives_identical_outputs():
    s = spec("mobilenet", 32, widths=[8, 16], depths=[1, 1], expand_ratio=3, se=True, activation="hardswish")
    a = build_student(s).eval()
    b = build_student(s).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(a(x), b(x))


def test_strides_never_shrink_below_two_pixels():
    assert stage_strides(8, 3) == [1, 2, 2]  # 8 -> 4 -> 2
    assert stage_strides(8, 4) == [1, 2, 2, 1]  # stays at 2
    assert stage_strides(224, 3) == [1, 2, 2]  # after a stride-4 stem: 56 -> 28 -> 14


def test_make_divisible():
    assert make_divisible(16 * 0.25) == 4
    assert make_divisible(1) == 4
    assert make_divisible(30) == 32
    assert make_divisible(64 * 0.375) == 24


def test_torchvision_teacher_adapts_channels():
    from autodistill.students import build_student

    model = build_student({"family": "torchvision:resnet18", "dims": {}, "in_channels": 1, "num_classes": 10, "image_size": 32})
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_config_dims_feed_the_builder():
    cfg = parse_config({"student": {"family": "resnet", "resnet": {"widths": [8, 8], "depths": [1, 1]}}})
    model = build_student({"family": "resnet", "dims": cfg.student.resnet.model_dump(), "in_channels": 1, "num_classes": 10, "image_size": 8})
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone():
    spec = {"family": "resnet", "dims": {}, "in_channels": 1, "num_classes": 10, "image_size": 8}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = build_student(spec, seed=3), build_student(spec, seed=3), build_student(spec, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    for (_, wa), (_, wb), (_, _wc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(wa, wb)
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)


@pytest.mark.parametrize("image_size, channels, patch", [(8, 1, 2), (32, 3, 4), (224, 3, 16)])
def test_vit_runs_forward_and_backward_at_every_size(image_size, channels, patch):
    model = build_student(spec("vit", image_size, channels, patch_size=patch, embed_dim=30, depth=3, heads=4))
    x = torch.randn(2, channels, image_size, image_size)
    logits, feats, attns = model.forward_distill(x, attention=True)
    grid = image_size // patch
    assert logits.shape == (2, 7) and len(feats) == 3 and feats[0].shape == (2, 32, grid, grid)  # 30 rounded up to 4 heads
    assert len(attns) == 3 and attns[0].shape == (2, 4, grid * grid, grid * grid)
    assert torch.allclose(attns[0].sum(dim=-1), torch.ones(2, 4, grid * grid), atol=1e-5)
    assert torch.allclose(model(x), logits, atol=1e-5)  # the fused attention kernel gives the same logits
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    bigger = build_student(spec("vit", image_size, channels, patch_size=patch, embed_dim=64, depth=6, heads=4))
    assert sum(p.numel() for p in bigger.parameters()) > 2 * sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="patch_size 64 is larger than the 8 px images"):
        build_student(spec("vit", 8, 1, patch_size=64))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_class_activation_map_decomposes_the_logits(family):
    dims = {"patch_size": 2, "embed_dim": 16, "depth": 2, "heads": 2} if family == "vit" else {"widths": [8, 16], "depths": [1, 1]}
    model = build_student(spec(family, 8, 1, **dims)).eval()
    logits, feats, _ = model.forward_distill(torch.randn(3, 1, 8, 8))
    pooled = feats[-1].mean(dim=(2, 3))  # (B, C)
    bias = logits - pooled @ model.cam_weight().T
    assert torch.allclose(bias, bias[:1].expand_as(bias), atol=1e-5)  # the same bias for every sample


def test_a_compressed_spec_is_built_by_build_network_only():
    from autodistill.compress import build_network
    from autodistill.compress.quantize import is_quantized

    plain = {"family": "cnn", "dims": {"widths": [8, 16], "depths": [1, 1]}, "in_channels": 1, "num_classes": 10, "image_size": 8}
    int8 = {**plain, "compress": {"quantize": {"method": "ptq", "engine": "x86", "flow": "pt2e"}}}
    with pytest.raises(ValueError, match="compress entry.*build_network"):
        build_student(int8)
    assert is_quantized(build_network(int8)) and not is_quantized(build_network(plain))


def test_an_int8_spec_of_fx_graph_mode_is_refused_in_one_line():
    """Students quantized by torch.ao's FX graph mode (before PT2E) have another state dict:
    rebuilding one says so instead of failing on load_state_dict."""
    from autodistill._errors import CheckpointError
    from autodistill.compress import build_network

    fx = {"family": "cnn", "dims": {"widths": [8, 16], "depths": [1, 1]}, "in_channels": 1, "num_classes": 10, "image_size": 8}
    fx["compress"] = {"quantize": {"method": "ptq", "engine": "fbgemm"}}
    with pytest.raises(CheckpointError, match="FX graph mode.*engine fbgemm.*PT2E") as err:
        build_network(fx)
    assert "\n" not in str(err.value)
