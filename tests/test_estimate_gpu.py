"""``python -m benchmarks estimate-gpu``: FLOP counting on the meta device against hand counts, the
time model, and the work each experiment's ``--scale paper`` preset implies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks import estimate_gpu as est
from medbalance.experiments import seed000


def _conv_flops(c_in: int, c_out: int, k: int, h: int, w: int, n: int = 1) -> int:
    """Multiply-adds of a convolution, 2 FLOPs each: ``2 * Cin * Cout * k * k * H * W`` per image."""
    return 2 * c_in * c_out * k * k * h * w * n


def test_conv_layer_flops_match_the_hand_count():
    conv = lambda: nn.Conv2d(3, 8, 3, padding=1, bias=False)  # noqa: E731
    forward = est.count_step("conv3-8", conv, (3, 20, 24), batch=2, train=False)
    assert forward.flops == _conv_flops(3, 8, 3, 20, 24, n=2) == 2 * 3 * 8 * 9 * 20 * 24 * 2
    # training: the weight gradient costs the forward again; the input needs no gradient
    step = est.count_step("conv3-8", conv, (3, 20, 24), batch=2)
    assert step.flops == 2 * _conv_flops(3, 8, 3, 20, 24, n=2)


def test_two_layers_backward_and_frozen_parts_by_hand():
    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 5, 1, bias=False))

    first, second = _conv_flops(2, 4, 3, 16, 16), _conv_flops(4, 5, 1, 16, 16)
    # the second layer also passes the gradient to its input: forward + weight + input gradient
    assert est.count_step("two", net, (2, 16, 16), batch=1).flops == 2 * first + 3 * second
    # only the second layer trains: the first runs forward only and gets no gradient
    frozen = est.count_step("two", net, (2, 16, 16), batch=1, trainable=("2.",))
    assert frozen.flops == first + 2 * second


def test_per_kernel_counts_agree_with_flopcountermode_on_real_networks():
    key, factory = est._net("unet", 1, 2, base_channels=8, depth=3, deep_supervision=True)
    step = est.count_step(key, factory, (1, 64, 64), batch=2)
    assert step.flops > 0 and math.isclose(step.kernel_flops.sum(), step.flops, rel_tol=1e-9)
    key, factory = est._net("bbn", 3, 4, widths=(4, 8), blocks_per_stage=1)
    pair = est.count_step(key, factory, (3, 16, 16), batch=3, pair=True)
    assert pair.values == 2 * 3 * 3 * 16 * 16  # both branches' batches are loaded
    assert math.isclose(pair.kernel_flops.sum(), pair.flops, rel_tol=1e-9)


def test_time_model_takes_the_binding_limit():
    gpu = est.Gpu("test", tf32=100.0, bf16=200.0, bandwidth=10.0)
    eff = est.Efficiency("e", compute=0.5, memory=0.5, launch=1.0, per_value=0.0)
    # kernel 1 compute-bound: 100 / 50 = 2 s; kernel 2 memory-bound: 50 / 5 = 10 s; 2 launches = 2 s
    cost = est.StepCost(100.0, np.array([100.0, 0.0]), np.array([1.0, 50.0]), values=0)
    assert cost.seconds(gpu, eff) == pytest.approx(12.0)
    assert cost.seconds(gpu, eff, bf16=True) == pytest.approx(1.0 + 5.0)  # twice the peak, half the bytes
    launch_bound = est.Efficiency("e", compute=0.5, memory=0.5, launch=100.0, per_value=0.5)
    assert cost.seconds(gpu, launch_bound) == pytest.approx(200.0)
    loading = est.StepCost(0.0, np.zeros(1), np.zeros(1), values=8)
    assert loading.seconds(gpu, launch_bound) == pytest.approx(100.0 + 4.0)


def test_work_multiplies_steps_runs_and_inference():
    conv = lambda: nn.Conv2d(1, 4, 3, padding=1, bias=False)  # noqa: E731
    work = est.Work("p", "conv1-4", conv, (1, 8, 8), batch=4, steps=10, runs=3, infer=6)
    step, infer = 2 * _conv_flops(1, 4, 3, 8, 8, n=4), _conv_flops(1, 4, 3, 8, 8)  # step: forward + weight grad
    assert work.flops() == 3 * (10 * step + 6 * infer)
    gpu, eff = est.H100, est.FAST
    expected = 3 * (10 * work.train_cost().seconds(gpu, eff) + 2 * work.infer_cost().seconds(gpu, eff))
    assert work.seconds(gpu, eff) == pytest.approx(expected)


def test_dualpath_plan_follows_the_paper_preset():
    p, work = seed000.SCALES["paper"], est.dualpath_work()
    seeds, models = 3, 1 + len(seed000.ALPHAS)
    dual = [w for w in work if w.key.startswith("dualpath")]
    steps_per_model = (2 * p["epochs"] + p["epochs"] // 4) * p["steps"]  # 200 + 200 + 50 epochs
    assert sum(w.steps * w.runs for w in dual) == seeds * models * steps_per_model
    assert {w.shape for w in work} == {(1, p["patch_size"], p["patch_size"])}
    # step 2 trains the fusion only: its backward is far cheaper than step 1's
    step1, step2 = (w.train_cost().flops for w in dual[:2])
    assert step2 < 0.6 * step1
    baselines = [w for w in work if w.part.startswith("baseline")]
    assert len(baselines) == 4 and all(w.steps == p["epochs"] * p["steps"] and w.runs == seeds for w in baselines)


def test_longtail_plan_trains_every_row_once():
    runs = lambda work: sum(w.runs for w in work if w.steps and not w.later_stage)  # noqa: E731
    # tables 2 / 3: five rows at three ratios, three seeds (MiSLAS's classifier stage is a later stage)
    assert runs(est.longtail_work("chestxray")) == 5 * 3 * 3
    # BreaKHis adds table 4 (four backbones at IR 10) and table 5 (ResNet-32: 3 losses x 3 IRs; improved: 8, its
    # CE at IR 10 being table 4's row): 36 runs per seed
    assert runs(est.longtail_work("breakhis")) == (15 + 4 + 9 + 8) * 3


def test_baselines_and_rare_class_plans_follow_the_recipes():
    from medbalance.config import read_yaml
    from medbalance.configs import config_path
    from medbalance.experiments import rare_class

    work = {w.part: w for w in est.baselines_work()}
    assert list(work) == ["drive", "hc18", "isbi", "consep", "pneumoniamnist", "breastmnist"]
    drive, breast = read_yaml(config_path("drive")), read_yaml(config_path("breastmnist"))
    assert work["drive"].steps == 4 * drive["epochs"] * drive["steps_per_epoch"] and work["drive"].runs == 3
    assert work["drive"].shape == (3, 64, 64)
    # DRIVE's 584 x 565 frames: 18 x 17 windows of 64 at overlap 0.5 (stride 32, the last flush with the
    # border); 4 validation images per epoch, 20 test
    assert work["drive"].infer == (4 * drive["epochs"] * 4 + 20) * 18 * 17
    assert work["hc18"].shape == (1, 128, 192)  # its patch at spacing 4, inferred at overlap 0.25
    assert work["breastmnist"].steps == 4 * breast["epochs"] * (546 // breast["batch_size"])
    assert work["breastmnist"].infer == 4 * breast["epochs"] * 78 + 156
    plan = est.rare_class_work()
    runs = {w.part: w.runs for w in plan}
    multi = len(rare_class.CANDIDATES)
    binary = sum(not c.multiclass for c in rare_class.CANDIDATES.values())
    assert runs["consep: default"] == 3 and runs[f"consep: {multi} candidates"] == multi + 2
    assert runs[f"drive: {binary} candidates"] == binary + 2
    default = next(w for w in plan if w.part == "drive: default")
    assert "deep_supervision=True" in default.key


def test_estimate_sums_parts_into_a_range(monkeypatch):
    conv = lambda: nn.Conv2d(1, 4, 3, padding=1, bias=False)  # noqa: E731
    plan = [
        est.Work("a", "conv1-4", conv, (1, 8, 8), batch=4, steps=10, runs=3, infer=6),
        est.Work("a", "conv1-4", conv, (1, 8, 8), batch=4, steps=5, runs=3, later_stage=True),
        est.Work("b", "conv1-4", conv, (1, 8, 8), batch=4, steps=0, runs=2, infer=8),
    ]
    monkeypatch.setitem(est.PLANS, "tiny", lambda: plan)
    result = est.estimate("tiny")
    assert (result["parts"]["a"]["runs"], result["parts"]["b"]["runs"], result["total"]["runs"]) == (3, 0, 3)
    assert result["total"]["steps"] == 45 and result["total"]["pflop"] == pytest.approx(
        sum(w.flops() for w in plan) / 1e15
    )
    assert 0 < result["total"]["hours_fast"] < result["total"]["hours_slow"]
    assert est.estimate("tiny", bf16=True)["precision"] == "bf16"
    assert torch.get_default_device() == torch.device("cpu")  # the meta device stayed inside the counts
