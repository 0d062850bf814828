"""Method hooks: what a recipe's ``method`` changes in the one training loop.

A method is data in a recipe (``method: {name: bilateral}``); its class, looked up by name in
:data:`medbalance.methods.METHODS`, overrides a few of these hooks. The :class:`Method` base is
plain training: every hook does what :class:`~medbalance.engine.Engine` does without a method.
A method never copies the loop; it changes how a batch goes through the network
(:meth:`Method.forward`), how the loss reads the outputs (:meth:`Method.compute_loss`), which
modules train (:meth:`Method.train_mode`), and what a recipe gets by default
(:meth:`Method.default_stages`, :meth:`Method.build_model`, :meth:`Method.stage_loss`), and what
it trains first (:meth:`Method.prepare`: dual-path's discriminator, a run of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from medbalance.errors import TrainingError
from medbalance.losses.deep_supervision import DeepSupervisionLoss

if TYPE_CHECKING:
    from medbalance.data.datasets import Splits
    from medbalance.engine.engine import Engine, Stage
    from medbalance.engine.run import Parts

__all__ = ["Method", "MethodOptions"]


class MethodOptions(BaseModel):
    """A method's options (the keys of ``method:`` besides ``name``); subclasses add fields."""

    model_config = ConfigDict(extra="forbid")


class Method:
    """Plain training: one forward pass per batch, the stage's loss on the stage's target.

    Args:
        options: the validated options of the recipe's ``method`` section.
    """

    name: ClassVar[str] = "plain"
    Options: ClassVar[type[MethodOptions]] = MethodOptions

    def __init__(self, options: MethodOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    # ----------------------------------------------------------------------------- recipe defaults
    def default_stages(self, cfg: Any) -> list[dict]:
        """The stages of a recipe that lists none: one stage of ``cfg.epochs`` with ``cfg.loss``."""
        return [{"name": "train", "epochs": cfg.epochs}]

    def build_model(self, build: Callable[..., nn.Module], *, in_channels: int, num_classes: int) -> nn.Module:
        """The trained model from ``build(**overrides)``, a new network of the recipe's ``model``
        (keyword arguments, ``name`` included, replace the recipe's; called once per network the
        method needs: MiSLAS wraps one in its weight scale, dual-path builds two paths);
        ``num_classes`` counts the classes, background included."""
        return build()

    def prepare(self, parts: Parts, cfg: Any, splits: Splits, model: nn.Module) -> Splits:
        """The splits the stages train on. A method may first train parts of its own (each a run
        folder under ``parts/``), add what they predict to the data (dual-path's weight maps) or
        load their weights into ``model`` (reuse-background's binary network)."""
        return splits

    def stage_loss(self, loss: Any, stage: dict) -> Any:
        """The loss a stage trains with, from the loss its spec builds (e.g. BBN's bilateral form)."""
        return loss

    def named_losses(self) -> dict[str, Any]:
        """Losses this method adds to :func:`medbalance.losses.build_loss`'s names (name -> class)."""
        return {}

    # ----------------------------------------------------------------------------- loop hooks
    def train_mode(self, engine: Engine) -> None:
        """Called after the engine put the model in training mode for ``engine.stage``."""

    def forward(self, engine: Engine, module: nn.Module, batch: dict) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Outputs of a batch (training and evaluation; ``module.training`` tells which)."""
        return engine.run_module(module, batch["image"])

    def compute_loss(self, engine: Engine, stage: Stage, outputs: Any, batch: dict) -> torch.Tensor:
        """The stage's loss of a batch's outputs."""
        target = batch if stage.target_key is None else batch[stage.target_key]
        if isinstance(outputs, (tuple, list)) and not isinstance(stage.loss, DeepSupervisionLoss):
            raise TrainingError(
                f"the network returned {len(outputs)} outputs (deep supervision) but the loss of stage '{stage.name}' "
                "takes one; wrap it in DeepSupervisionLoss (a recipe does so when model.deep_supervision is true)"
            )
        return stage.loss(outputs, target)
