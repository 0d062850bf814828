"""The training engine: one loop on Lightning Fabric, stages as data, atomic checkpoints."""

from medbalance.engine.checkpoint import load_checkpoint, save_checkpoint
from medbalance.engine.engine import Engine, Stage, make_fabric, memory_format
from medbalance.engine.run import RunResult, evaluate_run, load_run, train
from medbalance.engine.rundir import create_run_dir
from medbalance.engine.sliding_window import gaussian_importance, sliding_window_inference, window_starts
from medbalance.engine.tasks import ClassificationTask, SegmentationTask, make_task
from medbalance.errors import CheckpointError, RunDirError, TrainingError

__all__ = [
    "Engine",
    "Stage",
    "TrainingError",
    "make_fabric",
    "memory_format",
    "train",
    "RunResult",
    "load_run",
    "evaluate_run",
    "SegmentationTask",
    "ClassificationTask",
    "make_task",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "RunDirError",
    "create_run_dir",
    "gaussian_importance",
    "sliding_window_inference",
    "window_starts",
]
