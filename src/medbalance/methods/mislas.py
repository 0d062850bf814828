"""MiSLAS (Zhong et al., CVPR 2021), a two-stage baseline of seed 001 (SPEC section 10).

Stage 1 (``"mixup"``) trains the whole network with mixup (``alpha = 1``) on instance-balanced
batches. Stage 2 (``"classifier"``) freezes the backbone and re-trains the classifier with a
class-balanced sampler, a learnable per-class weight scale (:class:`WeightScaledNet`) and
label-aware smoothing (:class:`~medbalance.losses.smoothing.LabelAwareSmoothingLoss`); with
shift learning the frozen backbone's BatchNorm layers keep updating their running statistics
on the re-balanced batches while their affine parameters stay fixed. Both stages are data
(``method: {name: mislas}``; :func:`mislas_stages` in Python) run by the one engine with the
hooks of :class:`MiSLASMethod`.

Reference:
    Z. Zhong, J. Cui, S. Liu, J. Jia, "Improving Calibration for Long-Tailed Recognition",
    CVPR 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from medbalance.data.samplers import class_balanced, uniform
from medbalance.engine.engine import Engine, Stage
from medbalance.engine.hooks import Method, MethodOptions
from medbalance.losses import CrossEntropyLoss
from medbalance.losses.smoothing import LabelAwareSmoothingLoss

__all__ = [
    "CLASSIFIER_STAGE",
    "MIXUP_STAGE",
    "MiSLASMethod",
    "MiSLASOptions",
    "WeightScaledNet",
    "mislas_stages",
    "mixup_loss",
]

#: Stage names :class:`MiSLASMethod` acts on.
MIXUP_STAGE, CLASSIFIER_STAGE = "mixup", "classifier"


class WeightScaledNet(nn.Module):
    """A classifier network whose logits are multiplied by a learnable per-class scale.

    MiSLAS's "learnable weight scaling" (from the decoupling study of Kang et al., ICLR 2020):
    ``z_c = s_c (W f)_c``, ``s`` initialised to 1 and trained in stage 2 only.

    Args:
        net: a classification network with ``num_classes`` and a ``classifier`` head
            (:class:`~medbalance.nets.ResNet32`).

    Example:
        >>> from medbalance.nets import ResNet32
        >>> net = WeightScaledNet(ResNet32(1, 3, widths=(4, 8), blocks_per_stage=1))
        >>> net(torch.randn(2, 1, 8, 8)).shape, net.scale.shape
        (torch.Size([2, 3]), torch.Size([3]))
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not hasattr(net, "classifier") or not hasattr(net, "num_classes"):
            raise ValueError(f"net must have 'classifier' and 'num_classes' attributes, got {type(net).__name__}")
        self.net = net
        self.num_classes = net.num_classes
        self.scale = nn.Parameter(torch.ones(net.num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) * self.scale


def mixup_loss(loss: nn.Module, logits: Tensor, target: Tensor, permutation: Tensor, lam: float) -> Tensor:
    """Mixup's loss ``lam * loss(z, y) + (1 - lam) * loss(z, y[permutation])`` (Zhang et al., ICLR 2018).

    Example:
        >>> ce = nn.CrossEntropyLoss()
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> bool(torch.isclose(mixup_loss(ce, z, y, torch.arange(4), 0.3), ce(z, y)))
        True
    """
    return lam * loss(logits, target) + (1.0 - lam) * loss(logits, target[permutation])


class MiSLASOptions(MethodOptions):
    """``method:`` keys of MiSLAS: ``mixup_alpha`` (Beta's alpha, MiSLAS: 1.0), ``shift_bn``
    (update the frozen backbone's BatchNorm statistics in the classifier stage), and the
    default stages' ``classifier_epochs`` (MiSLAS: 10), ``head_eps`` / ``tail_eps`` (label-aware
    smoothing of the largest / smallest class, MiSLAS: 0.3 / 0.0)."""

    mixup_alpha: float = Field(1.0, gt=0.0)
    shift_bn: bool = True
    classifier_epochs: int = Field(10, ge=1)
    head_eps: float = Field(0.3, ge=0.0, lt=1.0)
    tail_eps: float = Field(0.0, ge=0.0, lt=1.0)


class MiSLASMethod(Method):
    """MiSLAS (``method: {name: mislas}``): mixup in the ``"mixup"`` stage, BatchNorm shift
    learning in the ``"classifier"`` stage, the network inside a :class:`WeightScaledNet`.

    Mixup draws ``lam ~ Beta(alpha, alpha)`` and a permutation from torch's global generator,
    whose state every checkpoint stores, so a resumed run mixes the same pairs.
    """

    name = "mislas"
    Options = MiSLASOptions

    def default_stages(self, cfg) -> list[dict]:
        o = self.options
        return [
            {"name": MIXUP_STAGE, "epochs": cfg.epochs, "frozen": ["scale"], "batches": "shuffle"},
            {
                "name": CLASSIFIER_STAGE,
                "epochs": o.classifier_epochs,
                "loss": {"name": "label_aware_smoothing", "head_eps": o.head_eps, "tail_eps": o.tail_eps},
                "trainable": ["net.classifier", "scale"],
                "batches": "class_balanced",
            },
        ]

    def build_model(self, build, *, in_channels: int, num_classes: int) -> nn.Module:
        return WeightScaledNet(build())

    def train_mode(self, engine: Engine) -> None:
        if self.options.shift_bn and engine.stage is not None and engine.stage.name == CLASSIFIER_STAGE:
            for module in engine.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train()  # running statistics follow the class-balanced batches; affine stays frozen

    def forward(self, engine: Engine, module: nn.Module, batch: dict) -> Tensor:
        x = batch["image"]
        if module.training and engine.stage is not None and engine.stage.name == MIXUP_STAGE:
            alpha = torch.tensor(self.options.mixup_alpha)
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            permutation = torch.randperm(len(x)).to(x.device)
            batch["mixup"] = (permutation, lam)
            x = lam * x + (1.0 - lam) * x[permutation]
        return module(x)

    def compute_loss(self, engine: Engine, stage: Stage, outputs: Tensor, batch: dict) -> Tensor:
        if "mixup" in batch:
            permutation, lam = batch["mixup"]
            return mixup_loss(stage.loss, outputs, batch["target"], permutation, lam)
        return super().compute_loss(engine, stage, outputs, batch)


def mislas_stages(
    class_counts: Sequence[float],
    epochs: int,
    classifier_epochs: int = 10,
    *,
    head_eps: float = 0.3,
    tail_eps: float = 0.0,
    classifier_lr: float | None = None,
) -> list[Stage]:
    """The two MiSLAS stages for a :class:`WeightScaledNet` around a network with ``classifier``.

    Args:
        class_counts: ``(C,)`` training samples per class (label-aware smoothing).
        epochs: epochs of stage 1 (mixup, everything but the weight scale trains).
        classifier_epochs: epochs of stage 2 (MiSLAS: 10).
        head_eps: label-aware smoothing of the largest class (MiSLAS: 0.3).
        tail_eps: label-aware smoothing of the smallest class (MiSLAS: 0.0).
        classifier_lr: learning rate of stage 2 (``None``: the config's).

    Example:
        >>> [(s.name, s.epochs, s.frozen, s.trainable) for s in mislas_stages([100, 10], 200)]
        [('mixup', 200, ('scale',), None), ('classifier', 10, (), ('net.classifier', 'scale'))]
    """
    return [
        Stage(MIXUP_STAGE, epochs, CrossEntropyLoss(), frozen=("scale",), sampler=uniform),
        Stage(
            CLASSIFIER_STAGE,
            classifier_epochs,
            LabelAwareSmoothingLoss(class_counts, head_eps=head_eps, tail_eps=tail_eps),
            trainable=("net.classifier", "scale"),
            lr=classifier_lr,
            sampler=class_balanced,
        ),
    ]
