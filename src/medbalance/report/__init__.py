"""Human-readable outputs: run / experiment / comparison reports, dataset reports, figures."""

from medbalance.report.html import environment, write_comparison, write_experiment_report, write_report

__all__ = ["environment", "write_report", "write_experiment_report", "write_comparison"]
