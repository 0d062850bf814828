"""Human-readable run reports."""

from medbalance.report.html import preview_strip, write_report

__all__ = ["write_report", "preview_strip"]
