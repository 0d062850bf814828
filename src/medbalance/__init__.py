"""medbalance: class-imbalanced medical image analysis for PyTorch."""

__version__ = "0.2.0"
