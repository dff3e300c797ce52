"""``report.html``: one page to look at results, beside the files of the command that wrote it. No torch.

``oanet evaluate``, ``oanet demo``, ``oanet merge`` and ``oanet check-data`` write it: a summary, tables
that sort on a click, an image browser (ground truth and each order side by side, a toggle to flip
between them, the segment under the mouse named with its id, area and scores, the pixels where two orders
disagree), and for check-data the problems by kind with their files and overlays. Inline CSS and JS, no
framework, nothing fetched: the pictures are small JPEGs in ``report_files/`` beside the page.
``report.html?selftest=1`` checks the page in the browser (``tests/test_report.py`` runs it in headless
Chromium).
"""

from oanet.report.check import write_check_report
from oanet.report.predictions import (DEFAULT_IMAGES, REPORT_NAME, PredictionsReport, evaluation_report,
                                      write_evaluation_report, write_merge_report)

__all__ = ["write_evaluation_report", "write_merge_report", "write_check_report", "evaluation_report",
           "PredictionsReport", "REPORT_NAME", "DEFAULT_IMAGES"]
