"""Report pages rendered by a real browser (headless Debian chromium): they load without console
errors and every figure decodes. Skipped where chromium is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from test_evaluate import make_expression, make_sequence, make_timecourse
from test_report import build_dataset, build_mixed_dataset

from omicsgen.report import dataset_report, leaderboard

CHROMIUM = next((path for path in map(shutil.which, ("chromium", "chromium-browser")) if path), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
]  # fmt: skip

# Injected into a copy of the page (the report itself has no scripts): records errors (script
# errors and resources failing to load, caught in the capture phase), console.error/warn calls,
# and on load how many images decoded, written into the DOM that --dump-dom prints.
CHECK = """<script>
var omicsgenErrors = [];
window.addEventListener("error", function (e) {
  omicsgenErrors.push(e.message || ("failed to load " + ((e.target && (e.target.src || e.target.tagName)) || e.type)).slice(0, 80));
}, true);
["error", "warn"].forEach(function (level) {
  var original = console[level];
  console[level] = function () { omicsgenErrors.push(level + ": " + Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
});
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (img) { return img.complete && img.naturalWidth > 100 && img.naturalHeight > 100; });
  var out = document.createElement("pre");
  out.id = "omicsgen-check";
  out.textContent = JSON.stringify({images: images.length, decoded: decoded.length, errors: omicsgenErrors,
                                     tables: document.querySelectorAll("table").length});
  document.body.appendChild(out);
});
</script>"""


def render(page_path, tmp_path) -> tuple[dict, str]:
    """Load a copy of the page with the check injected; return the check's result and chromium's log."""
    checked = tmp_path / f"checked_{page_path.name}"
    checked.write_text(page_path.read_text().replace("<head>", "<head>" + CHECK, 1))
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", checked.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'<pre id="omicsgen-check">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"chromium printed no check result (exit {result.returncode}):\n{result.stderr[-2000:]}"
    return json.loads(found.group(1)), result.stderr


def console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


@pytest.mark.parametrize("make", [make_expression, make_timecourse, make_sequence])
def test_dataset_report_renders_without_errors_and_every_figure_decodes(tmp_path, make):
    model_dirs, baselines_path = build_dataset(tmp_path / "toy", make)
    out = tmp_path / "toy" / "report.html"
    dataset_report("toy", tmp_path / "toy" / "masked.h5ad", model_dirs, baselines_path, out)
    check, log = render(out, tmp_path)
    assert check["errors"] == [] and console_lines(log) == []
    assert check["images"] == out.read_text().count("<img") >= (2 if make is make_sequence else 4)
    assert check["decoded"] == check["images"]
    assert check["tables"] >= 4  # winners, imputation, generation, provenance


def test_leaderboard_renders_without_errors(tmp_path):
    model_dirs, baselines_path = build_dataset(tmp_path / "toy_expression", make_expression)
    out = tmp_path / "leaderboard.html"
    leaderboard([d / "scores.json" for d in model_dirs.values()], [baselines_path], out)
    check, log = render(out, tmp_path)
    assert check["errors"] == [] and console_lines(log) == [] and check["tables"] >= 2


def test_calibration_umap_and_missing_sections_render(tmp_path):
    model_dirs, baselines_path = build_mixed_dataset(tmp_path / "toy")
    out = tmp_path / "toy" / "report.html"
    dataset_report("toy", tmp_path / "toy" / "masked.h5ad", model_dirs, baselines_path, out)
    check, log = render(out, tmp_path)
    assert check["errors"] == [] and console_lines(log) == []
    assert check["images"] == out.read_text().count("<img") >= 5  # PCA, UMAP, gene statistics, imputed, calibration
    assert check["decoded"] == check["images"]
    board = tmp_path / "leaderboard.html"
    leaderboard([d / "scores.json" for d in model_dirs.values()], [baselines_path], board)
    check, log = render(board, tmp_path)
    assert check["errors"] == [] and console_lines(log) == []


def test_the_check_catches_a_broken_figure(tmp_path):
    """The harness itself: a figure that cannot decode is reported, not silently passed."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><img src="data:image/png;base64,AAAA"></body></html>')
    check, _ = render(page, tmp_path)
    assert check["images"] == 1 and check["decoded"] == 0 and check["errors"]
