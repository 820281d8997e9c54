"""`pipeline report DIR`: a self-contained HTML report of a dataset folder (see page.py)."""

from pipeline.report.page import ReportConfig, render, write_report

__all__ = ["ReportConfig", "render", "write_report"]
