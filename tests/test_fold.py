"""Inference copies (medbalance.engine.fold): BatchNorm folded, convolutions packed, same outputs."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from medbalance.config import ConfigError, parse_config
from medbalance.engine import sliding_window_inference
from medbalance.engine.engine import infer_logits
from medbalance.engine.fold import PackedConv2d, fold_batchnorm, foldable_pairs, inference_copy, packable_convolutions
from medbalance.nets import CLASSIFICATION_NETS, NETS

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their (identity) initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _cases() -> list[tuple[str, int]]:
    cases = []
    for name, cls in NETS.items():
        cases.append((name, 2))
        if "spatial_dims" in inspect.signature(cls).parameters:
            cases.append((name, 3))
    return cases


def _build(name: str, dims: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name in CLASSIFICATION_NETS:
        return NETS[name](num_classes=3), torch.randn(2, 3, 32, 32)
    kwargs = {"base_channels": 4} | ({"spatial_dims": dims} if dims == 3 else {})
    if "depth" in inspect.signature(NETS[name]).parameters:
        kwargs["depth"] = 2
    side = 16 if dims == 3 else 64
    return NETS[name](1, 3, **kwargs), torch.randn(2, 1, *(side,) * dims)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("name", "dims"), _cases())
def test_every_network_family_folds_to_the_same_outputs_and_the_caller_keeps_its_model(name, dims):
    model, x = _build(name, dims)
    model = _randomise_norms(model).eval()
    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert norms > 0
    before = _state(model)
    folded = fold_batchnorm(model)
    assert folded is not model
    # every BatchNorm of the families sits right after a convolution in a Sequential
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    got = got[0] if isinstance(got, (tuple, list)) else got
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)
    # the caller's model: same state, same flag, its norms still there
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == norms
    assert all(not p.requires_grad for p in folded.parameters())
    # the whole inference copy (folded, then 2D convolutions packed) computes the same outputs
    fast = inference_copy(model)
    assert any(isinstance(m, PackedConv2d) for m in fast.modules()) == (
        dims == 2 and bool(packable_convolutions(folded))
    )
    with torch.inference_mode():
        got = fast(x)
    got = got[0] if isinstance(got, (tuple, list)) else got
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training


def test_one_pair_matches_a_numpy_rederivation_of_conv_then_norm():
    torch.manual_seed(1)
    conv, norm = nn.Conv2d(2, 3, 1, bias=True), nn.BatchNorm2d(3, eps=1e-3)
    model = _randomise_norms(nn.Sequential(conv, norm)).eval()
    x = torch.randn(1, 2, 4, 5)
    w, b = conv.weight.detach().numpy()[:, :, 0, 0], conv.bias.detach().numpy()
    mean, var = norm.running_mean.numpy(), norm.running_var.numpy()
    gamma, beta = norm.weight.detach().numpy(), norm.bias.detach().numpy()
    z = np.einsum("oi,nihw->nohw", w.astype(np.float64), x.numpy().astype(np.float64)) + b[:, None, None]
    per_channel = (slice(None), None, None)
    expected = (z - mean[per_channel]) / np.sqrt(var[per_channel] + 1e-3) * gamma[per_channel] + beta[per_channel]
    with torch.no_grad():
        got = fold_batchnorm(model)(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_and_grouped_convolutions_fold(groups):
    torch.manual_seed(2)
    for conv in (
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=groups),
        nn.Conv3d(4, 6, 3, padding=1, groups=groups, bias=False),
    ):
        norm = nn.BatchNorm2d(6) if conv.weight.ndim == 4 else nn.BatchNorm3d(6)
        model = _randomise_norms(nn.Sequential(conv, norm, nn.ReLU())).eval()
        x = torch.randn(2, 4, *(5,) * (conv.weight.ndim - 2))
        with torch.no_grad():
            torch.testing.assert_close(fold_batchnorm(model)(x), model(x), rtol=0, atol=1e-5)


def test_channels_last_weights_keep_their_layout():
    model = _randomise_norms(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))).eval()
    model.to(memory_format=torch.channels_last)
    folded = fold_batchnorm(model)
    assert folded[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_training_mode_models_without_norms_and_folded_copies_come_back_as_they_are():
    model, _ = _build("unet", 2)
    assert fold_batchnorm(model.train()) is model  # training normalises by the batch: nothing to fold
    assert model.training
    plain = NETS["unet"](1, 2, base_channels=4, depth=2, norm="instance").eval()
    assert foldable_pairs(plain) == [] and fold_batchnorm(plain) is plain
    folded = fold_batchnorm(model.eval())
    assert fold_batchnorm(folded) is folded
    with pytest.raises(ValueError, match="model must be an nn.Module, got function"):
        fold_batchnorm(lambda x: x)


def test_a_norm_in_training_mode_or_without_running_statistics_is_left_alone():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)
    )
    model = _randomise_norms(model).eval()
    model[1].train()  # e.g. a method refreshing the statistics of one norm
    assert foldable_pairs(model) == []
    assert fold_batchnorm(model) is model


def _bn_calls(model: nn.Module) -> list[int]:
    calls = [0]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_sliding_window_runs_an_inference_copy_by_default_with_the_same_logits():
    model = _randomise_norms(NETS["unet"](1, 2, base_channels=4, depth=2)).eval()
    calls = _bn_calls(model)
    image = torch.randn(1, 1, 50, 70)
    folded = sliding_window_inference(image, model, patch_size=32, batch_size=2)
    assert calls[0] == 0  # the caller's norms never ran: the folded copy did
    plain = sliding_window_inference(image, model, patch_size=32, batch_size=2, inference_copy=False)
    assert calls[0] > 0
    torch.testing.assert_close(folded, plain, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="inference_copy must be True or False, got 'yes'"):
        sliding_window_inference(image, model, patch_size=32, inference_copy="yes")


def test_infer_logits_prepares_the_sliding_window_only_and_obeys_the_switch():
    model = _randomise_norms(NETS["unet"](1, 2, base_channels=4, depth=2)).eval()
    calls = _bn_calls(model)
    image = torch.randn(1, 1, 40, 48)
    seen = []

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # a method's hook: gets the module to run
        seen.append(m)
        return m(x)

    windowed = parse_config({"patch_size": 32})
    folded = infer_logits(model, image, windowed, forward=forward)
    assert calls[0] == 0 and seen[-1] is not model
    off = parse_config({"patch_size": 32, "evaluation": {"inference_copy": False}})
    plain = infer_logits(model, image, off, forward=forward)
    assert calls[0] > 0 and seen[-1] is model
    torch.testing.assert_close(folded, plain, rtol=0, atol=1e-5)
    calls[0] = 0
    infer_logits(model, image, parse_config({"patch_size": None}))  # whole images: the model as given
    assert calls[0] > 0


def test_the_config_switch_is_validated():
    assert parse_config({}).evaluation.inference_copy is True
    with pytest.raises(
        ConfigError, match=r"unknown key 'inference_cpy' under 'evaluation'.*did you mean 'inference_copy'"
    ):
        parse_config({"evaluation": {"inference_cpy": False}})
    with pytest.raises(ConfigError, match="inference_copy"):
        parse_config({"evaluation": {"inference_copy": "sometimes"}})


def test_a_trained_runs_predict_and_evaluate_are_the_same_with_or_without_the_inference_copy(tmp_path):
    from PIL import Image

    from medbalance.data.folder import read_folder
    from medbalance.engine.run import evaluate_run, load_run, predict_image, train
    from tests.test_native import _folder

    data = _folder(tmp_path / "data")
    cfg = {
        "epochs": 1,
        "batch_size": 2,
        "steps_per_epoch": 2,
        "progress": False,
        "patch_size": [32, 32],
        "data": {"kind": "folder", "path": str(data), "val_fraction": 0.34},
        "model": {"name": "unet", "base_channels": 4, "depth": 2},
        "loss": ["dice", "ce"],
    }
    run = load_run(train(parse_config(cfg), out=tmp_path / "runs").run_dir)
    norms = [m for m in run.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not torch.equal(norms[0].running_var, torch.ones_like(norms[0].running_var))  # trained stats
    off = dataclasses.replace(
        run,
        cfg=run.cfg.model_copy(update={"evaluation": run.cfg.evaluation.model_copy(update={"inference_copy": False})}),
    )
    before = _state(run.model)
    image = np.asarray(Image.open(data / "images" / "case2.png"))[None]
    (p_on, l_on), (p_off, l_off) = predict_image(run, image), predict_image(off, image)
    np.testing.assert_allclose(p_on, p_off, rtol=0, atol=1e-5)
    assert (l_on == l_off).mean() > 0.999  # a label may flip only where the two classes tie
    folder = read_folder(data, task="segmentation")
    on, off_scores = evaluate_run(run, folder), evaluate_run(off, folder)
    assert on.keys() == off_scores.keys()
    for key, value in on.items():
        if isinstance(value, float):
            assert value == pytest.approx(off_scores[key], abs=1e-4), key
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not run.model.training


needs_onednn = pytest.mark.skipif(not packable_convolutions(nn.Sequential(nn.Conv2d(1, 1, 1))), reason="no oneDNN ops")


@needs_onednn
@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": 1, "bias": False},
        {"kernel_size": 3, "stride": 2, "padding": 1, "groups": 2},
        {"kernel_size": 3, "padding": 2, "dilation": 2},
    ],
)
def test_a_packed_convolution_is_the_convolution_then_relu_for_any_input(options):
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, **options).eval()
    for relu in (True, False):
        packed = PackedConv2d(conv, relu=relu)
        for shape, layout in [((2, 4, 16, 16), torch.contiguous_format), ((3, 4, 37, 53), torch.channels_last)]:
            x = torch.randn(shape).contiguous(memory_format=layout)
            with torch.inference_mode():
                expected = torch.relu(conv(x)) if relu else conv(x)
                torch.testing.assert_close(packed(x), expected, rtol=0, atol=1e-6)


@needs_onednn
def test_a_packed_convolution_falls_back_to_the_module_with_autograd_or_autocast():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    packed = PackedConv2d(conv, relu=True)
    x = torch.randn(1, 2, 8, 8)
    out = packed(x)  # grad enabled: the original module, so gradients reach its weight
    out.sum().backward()
    assert conv.weight.grad is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(packed(x), torch.relu(conv(x)), rtol=0, atol=0)


@needs_onednn
def test_an_inference_copy_of_a_net_without_norms_is_a_packed_copy_and_the_caller_keeps_its_layers():
    plain = NETS["unet"](1, 2, base_channels=4, depth=2, norm="instance").eval()
    types = [type(m) for m in plain.modules()]
    fast = inference_copy(plain)
    assert fast is not plain and any(isinstance(m, PackedConv2d) for m in fast.modules())
    assert [type(m) for m in plain.modules()] == types
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-5)
    assert inference_copy(fast) is fast and inference_copy(plain.train()) is plain
    volume = NETS["unet"](1, 2, base_channels=4, depth=2, norm="instance", spatial_dims=3).eval()
    assert inference_copy(volume) is volume  # 3D: nothing to fold or pack
