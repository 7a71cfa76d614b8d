"""Figures of the reliability suites, for the table ``make reliability`` prints: each test that
measures something records one line (scenario, what was checked, the figure) in the JSON-lines file
named by MINHOS_RELIABILITY_REPORT, when that is set (``make test`` leaves it unset)."""

from __future__ import annotations

import json
import os

from clients.reliability import REPORT_ENV


def record(scenario: str, checked: str, figure: str) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    with open(path, "a") as out:
        out.write(json.dumps({"scenario": scenario, "checked": checked, "figure": figure}) + "\n")
