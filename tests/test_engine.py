"""The training engine: exact resume, stages with frozen parts, checkpoints, NaN handling."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from medbalance.config import parse_config
from medbalance.data.datasets import ArrayDataset
from medbalance.engine import Engine, SegmentationTask, Stage, TrainingError, load_checkpoint
from medbalance.losses import build_loss
from medbalance.nets import UNet


def _data(n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 16, 16), dtype=np.float32)
    target = (images[:, 0] > 0.6).astype(np.int64)  # learnable: bright pixels are foreground
    return ArrayDataset(images, target, num_classes=2)


def _cfg(**kw):
    return parse_config({"epochs": 3, "batch_size": 4, "lr": 1e-2, "progress": False, "seed": 7, **kw})


def _engine(run_dir, cfg, model=None):
    torch.manual_seed(123)
    model = model or UNet(1, 1, base_channels=4, depth=2)
    return Engine(model, SegmentationTask(2), cfg, run_dir=run_dir)


class _Interrupt(Exception):
    pass


def _interrupting_loss(loss, calls_before_interrupt):
    count = {"n": 0}

    def fn(outputs, target):
        count["n"] += 1
        if count["n"] > calls_before_interrupt:
            raise _Interrupt
        return loss(outputs, target)

    return fn


AUGMENT_ALL = {"flip": True, "rot90": True, "rotate": 30, "scale": 0.2, "affine_p": 0.5, "brightness": 0.1}
AUGMENT_ALL |= {"contrast": 0.2, "gamma": 0.3, "noise": 0.05, "intensity_p": 0.5}


@pytest.mark.parametrize("augment", [{}, AUGMENT_ALL], ids=["plain", "augmented"])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, augment):
    cfg = _cfg(augment=augment)
    train, val = _data(20, 0), _data(8, 1)
    loss = build_loss("dice_ce")
    (tmp_path / "a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    full = _engine(tmp_path / "a", cfg)
    full.fit([Stage("train", 3, loss)], train, val)

    # Interrupt run b in the middle of epoch 2 (5 train batches + 2 val batches per epoch).
    interrupted = _engine(tmp_path / "b", cfg)
    with pytest.raises(_Interrupt):
        interrupted.fit([Stage("train", 3, _interrupting_loss(loss, 7 + 3))], train, val)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 1

    torch.manual_seed(999)  # a fresh process would start from other weights and RNG state
    resumed = Engine(UNet(1, 1, base_channels=4, depth=2), SegmentationTask(2), cfg, run_dir=tmp_path / "b")
    rows = resumed.fit([Stage("train", 3, loss)], train, val, resume=True)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    a = full.model.state_dict()
    b = resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "a" / "history.csv") as fa, open(tmp_path / "b" / "history.csv") as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(ra) == strip(rb)


class _TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.b = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.b(self.a(x))


def test_stages_freeze_parameters_and_batchnorm_statistics(tmp_path):
    cfg = _cfg()
    train, val = _data(12, 0), _data(4, 1)
    (tmp_path / "checkpoints").mkdir()
    engine = _engine(tmp_path, cfg, model=_TwoPart())
    loss = build_loss("ce")
    engine.fit([Stage("a_only", 1, loss, trainable=("a",))], train, val)
    a_after_1 = {k: v.clone() for k, v in engine.model.a.state_dict().items()}
    b_after_1 = engine.model.b.weight.detach().clone()
    engine.fit(
        [Stage("a_only", 1, loss, trainable=("a",)), Stage("b_only", 2, loss, frozen=("a",))], train, val, resume=True
    )
    for key, value in engine.model.a.state_dict().items():  # weights and running stats alike
        assert torch.equal(value, a_after_1[key]), key
    assert not torch.equal(engine.model.b.weight, b_after_1)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["stage_name"] == "b_only" and state["epoch"] == 3
    with pytest.raises(ValueError, match="trains no parameter"):
        engine.fit([Stage("nothing", 1, loss, trainable=("c",))], train, val)


def test_checkpoint_contents_and_best_selection(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    engine = _engine(tmp_path, _cfg())
    rows = engine.fit([Stage("train", 3, build_loss("dice_ce"))], _data(12, 0), _data(4, 1))
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert {"model", "optimizer", "scheduler", "rng", "epoch", "best"} <= set(last)
    dice = [float(r["val_mean_dice_fg"]) for r in rows]
    assert best["epoch"] == int(np.argmax(dice)) + 1 == last["best"]["epoch"]
    assert not list(tmp_path.glob("checkpoints/.*tmp*"))  # no temporary file left behind


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    engine = _engine(tmp_path, _cfg())
    loss = build_loss("ce")
    calls = {"n": 0}

    def nan_in_epoch_2(outputs, target):
        calls["n"] += 1
        value = loss(outputs, target)
        return value * float("nan") if calls["n"] > 4 else value  # 3 train + 1 val batch per epoch

    with pytest.raises(TrainingError, match=r"stage 'train' epoch 2"):
        engine.fit([Stage("train", 3, nan_in_epoch_2)], _data(12, 0), _data(4, 1))
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )


def test_cosine_schedule_matches_the_formula(tmp_path):
    cfg = _cfg(lr=0.01, lr_min=0.001, epochs=2)
    engine = _engine(None, cfg)
    lrs = []
    loss = build_loss("ce")

    def spy(outputs, target):
        if torch.is_grad_enabled():
            lrs.append(engine_opt_lr())
        return loss(outputs, target)

    holder = {}
    orig = engine._optimizer

    def capture(params, lr):
        holder["opt"] = orig(params, lr)
        return holder["opt"]

    engine._optimizer = capture
    engine_opt_lr = lambda: holder["opt"].param_groups[0]["lr"]  # noqa: E731
    engine.fit([Stage("train", 2, spy)], _data(12, 0), _data(4, 1))
    total = 6  # 3 steps x 2 epochs
    expected = [0.001 + (0.01 - 0.001) * (1 + np.cos(np.pi * t / total)) / 2 for t in range(total)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    engine = _engine(None, _cfg(precision="bf16-mixed", epochs=1))
    rows = engine.fit([Stage("train", 1, build_loss("dice_ce"))], _data(8, 0), _data(4, 1))
    assert np.isfinite(float(rows[0]["train_loss"]))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_load_with_weights_only_so_a_crafted_pickle_cannot_run_code(tmp_path):
    import pickle

    from medbalance.errors import CheckpointError

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Exploit()}))
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    truncated = tmp_path / "truncated.pt"
    torch.save({"model": {"w": torch.ones(3)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_stage_loss_can_read_several_batch_entries(tmp_path):
    ps_images = np.random.default_rng(0).random((8, 1, 16, 16), dtype=np.float32)
    target = (ps_images[:, 0] > 0.5).astype(np.int64)
    soft = np.clip(ps_images[:, 0] * 1.2, 0, 1).astype(np.float32)
    data = ArrayDataset(ps_images, target, num_classes=2, extras={"soft": soft})
    bce = build_loss("ce")
    seen = []

    def two_targets(outputs, batch):  # e.g. L1 on soft maps + L2 on the ground truth
        seen.append(sorted(batch))
        return bce(outputs, batch["soft"][:, None]) + bce(outputs, batch["target"])

    engine = _engine(None, _cfg(epochs=1))
    engine.fit([Stage("both", 1, two_targets, target_key=None)], data, data)
    assert seen and seen[0] == ["image", "index", "soft", "target"]


def test_a_stage_can_monitor_its_validation_loss_over_several_epochs():
    # the progress bar shows the running loss and the last validation score side by side
    engine = _engine(None, _cfg(progress=True))
    rows = engine.fit([Stage("s", 2, build_loss("dice_ce"), monitor="loss")], _data(8, 0), _data(4, 1))
    assert len(rows) == 2 and engine.monitor_of(Stage("s", 1, build_loss("dice"), monitor="loss")) == ("loss", False)


def test_channels_last_follows_the_config_and_the_network():
    from medbalance.engine import memory_format
    from medbalance.nets import CENet, ResNet32

    cpu = torch.device("cpu")
    unet = UNet(1, 2, base_channels=4, depth=2)
    assert memory_format("auto", unet, cpu) is torch.channels_last and memory_format(False, unet, cpu) is None
    assert memory_format("auto", unet, torch.device("cuda")) is None  # not measured there: left as is
    assert memory_format(True, UNet(1, 2, base_channels=4, depth=2, spatial_dims=3), cpu) is None
    assert memory_format("auto", ResNet32(1, 3), cpu) is None  # converts inside, where it pays
    assert memory_format("auto", CENet(1, 2), cpu) is torch.channels_last

    engine = _engine(None, _cfg(channels_last="auto"))
    conv = next(m for m in engine.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = _engine(None, _cfg(channels_last=False))
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        a = engine.forward(engine.model.eval(), {"image": x})
        b = plain.forward(plain.model.eval(), {"image": x})
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _flushing() -> bool:
    return (torch.tensor([1e-20]) * torch.tensor([1e-20])).item() == 0.0  # 1e-40 is subnormal


class _FlagSpy(nn.Module):
    """A U-Net noting, at each forward, whether it trains and whether subnormals are flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(1, 1, base_channels=4, depth=2)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((self.training, _flushing()))
        return self.net(x)


def test_network_forwards_flush_denormals_scoring_does_not_and_the_setting_is_restored():
    # weight decay drives dead weights towards float32's subnormal range, where CPU convolutions run
    # 3-4x slower: training steps and inference forwards flush subnormals; scoring does not, since
    # scipy's KDTree in the surface metrics overflowed its stack under the flag (a per-thread CPU mode)
    for before in (False, True):
        torch.set_flush_denormal(before)
        model = _FlagSpy()
        engine = _engine(None, _cfg(epochs=1), model)
        engine.fit([Stage("train", 1, build_loss("dice_ce"))], _data(8, 0), _data(4, 1))
        assert _flushing() is before
        assert {training for training, _ in model.seen} == {True, False}  # training steps and validation
        assert {flushed for _, flushed in model.seen} == {True}
        scoring = []
        engine.evaluate(_data(4, 1), on_batch=lambda *_: scoring.append(_flushing()))  # where metrics are computed
        assert scoring and set(scoring) == {before}
    torch.set_flush_denormal(False)


def test_load_run_sets_subnormal_weights_to_zero(tmp_path):
    # a late checkpoint holds float32 subnormals (slow CPU path); inference loads them as 0
    from medbalance.engine.checkpoint import save_checkpoint
    from medbalance.engine.run import load_run, train

    rng = np.random.default_rng(0)
    pairs = [
        (rng.random((1, 16, 16), dtype=np.float32), (rng.random((16, 16)) > 0.5).astype(np.uint8)) for _ in range(4)
    ]
    cfg = parse_config(
        {
            "epochs": 1,
            "steps_per_epoch": 1,
            "batch_size": 2,
            "patch_size": [16, 16],
            "progress": False,
            "model": {"name": "unet", "base_channels": 4, "depth": 2},
            "loss": ["dice", "ce"],
        }
    )
    folder = train(cfg, out=tmp_path, data=(pairs[:3], pairs[3:])).run_dir
    path = folder / "checkpoints" / "best.pt"
    state = load_checkpoint(path)
    expected = {k: v.clone() for k, v in state["model"].items()}
    weights = [k for k, v in expected.items() if v.dtype == torch.float32 and v.numel() > 8]
    for k in weights:
        state["model"][k] = state["model"][k].contiguous()  # saved channels_last
        state["model"][k].view(-1)[:4] = torch.tensor([1e-40, -1e-39, 5e-45, 2e-38])  # 3 subnormals, 1 normal
        expected[k] = expected[k].contiguous()
        expected[k].view(-1)[:4] = torch.tensor([0.0, 0.0, 0.0, 2e-38])
    save_checkpoint(path, state)
    loaded = load_run(folder).model.state_dict()
    assert weights and [k for k in expected if not torch.equal(loaded[k], expected[k])] == []


def test_each_epoch_sets_subnormal_weights_to_zero(tmp_path):
    # the flush flag covers the training thread only; what other threads (or no gradient) leave is zeroed
    model = UNet(1, 1, base_channels=4, depth=2)
    model.idle = nn.Parameter(torch.tensor([1e-40, -1e-39, 2e-38, 1.0]))  # no gradient reaches it
    engine = _engine(None, _cfg(epochs=1), model)
    engine.fit([Stage("train", 1, build_loss("dice_ce"))], _data(8, 0), _data(4, 1))
    assert model.idle[:2].tolist() == [0.0, 0.0]
    assert model.idle[2:].tolist() == pytest.approx([2e-38, 1.0], rel=1e-6)  # normal numbers are kept
