"""Self-contained HTML reports: a page per dataset and a leaderboard over all of them."""

from .html import dataset_report, leaderboard

__all__ = ["dataset_report", "leaderboard"]
