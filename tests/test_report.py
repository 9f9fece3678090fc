"""tamebias report: one self-contained HTML page, checked as text and in headless Chromium."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tamebias
from tamebias.cli import app
from tamebias.report.shift_figures import plot_samples
from tamebias.sweep import run_sweep

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def report_page(tmp_path_factory, domains) -> Path:
    """A report over a two-run sweep and one of its runs (with a t-SNE and a diagnosis)."""
    root = tmp_path_factory.mktemp("report")
    overrides = [f"data.source={domains['source']}", f"data.target={domains['target']}",
                 "data.size=16", "data.channels=1", "data.batch_size=16",
                 "data.source_val_fraction=0.2", "method.steps=4", "train.log_every=2",
                 "train.eval_every=2", "train.progress=false", "train.threads=1"]
    run_sweep("dann", ["method.domain_weight=0.1,1.0"], [0], root / "sweep",
              overrides=overrides)
    run = root / "sweep" / "01-domain_weight=1.0-seed0"  # one of the sweep's runs
    plot_samples({"stand-in t-SNE": torch.zeros(4, 1, 8, 8, dtype=torch.uint8)},
                 run / "tsne.png")  # `tamebias tsne` output (tested in test_tsne.py)
    tamebias.diagnose(run=run, output=run / "diagnose", samples=30, tsne=False)
    output = root / "report.html"
    result = CliRunner().invoke(app, ["report", str(run), str(root / "sweep"),
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    return output


EXPECTED_FIGURES = ["training metrics and evaluations", "unsupervised validators",
                    "target test accuracy per class", "confusion matrix", "t-SNE",
                    "diagnosis: samples.png", "diagnosis: proportions.png",
                    "validator score versus oracle target accuracy"]


def test_the_page_embeds_every_figure_and_references_nothing_outside(report_page):
    page = report_page.read_text()
    sources = re.findall(r'<img[^>]*src="([^"]*)"', page)
    assert len(sources) == len(EXPECTED_FIGURES)
    alts = re.findall(r'<img alt="([^"]*)"', page)
    for expected in EXPECTED_FIGURES:
        assert any(expected in alt for alt in alts), expected
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1])
        assert png.startswith(b"\x89PNG")
    assert not re.search(r"https?:", page)  # ':' is not a base64 character: no URL anywhere
    assert "<script" not in page and "<link" not in page
    for text in ("Protocol", "Confusion matrix", "proxy A-distance", "Sweep: dann", "snd"):
        assert text in page, text


def test_report_refuses_a_folder_it_cannot_read(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--output",
                                      str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "neither a finished run" in " ".join(result.output.split())


def _chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
         "--virtual-time-budget=5000", *arguments],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed at "
                    "/usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
def test_the_page_renders_in_headless_chromium_with_every_image_loaded(report_page,
                                                                       tmp_path):
    # a copy of the page with a probe script that records which images decoded
    probe = tmp_path / "probe.html"
    probe.write_text(report_page.read_text().replace("</body>", (
        "<script>window.addEventListener('load', () => {const images = [...document.images];"
        "document.body.setAttribute('data-loaded', images.filter(i => i.complete && "
        "i.naturalWidth > 0).length + '/' + images.length);});</script></body>")))
    dom = _chromium("--dump-dom", probe.as_uri(), profile=tmp_path / "profile-dom")
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, f"no probe result in Chromium's DOM; stderr: {dom.stderr[-2000:]}"
    assert loaded.group(1) == loaded.group(2) == str(len(EXPECTED_FIGURES))

    shot = tmp_path / "shot.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1200,2400",
                       report_page.as_uri(), profile=tmp_path / "profile-shot")
    assert shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    assert pixels.std() > 10  # not blank: text, tables and figures
    assert (pixels < 128).mean() > 0.01  # some dark ink (text, plot lines)


def test_report_can_compute_a_missing_tsne(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    tamebias.fit(None, [*tiny_overrides, "method.steps=2", "train.eval_every=2"], run_dir=run)
    result = CliRunner().invoke(app, ["report", str(run), "--tsne", "-o",
                                      str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (run / "tsne.png").exists()
    assert 't-SNE of source and target' in (tmp_path / "r.html").read_text()
