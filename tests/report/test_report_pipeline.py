"""``promptprof report`` on the database the real pipeline filled, opened in headless Chromium.

The screenshot is saved under the test's tmp dir; with ``UPDATE_REPORT_SCREENSHOT=1`` it is also
copied to docs/report-screenshot.png (the README's picture).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import time
from pathlib import Path

import pytest
from dashboards.filled import FilledDatabase
from PIL import Image, ImageStat

from promptprof import load_settings
from promptprof_processor.report import report_command
from promptprof_processor.report.charts import CHARTS, PALETTE
from promptprof_processor.settings import ProcessorSettings
from report.browser import dump_dom, screenshot

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = ROOT / "docs" / "report-screenshot.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZE_PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) img.dataset.size = img.naturalWidth + "x" + img.naturalHeight;
});
</script>"""


@pytest.fixture(scope="module")
def written(filled: FilledDatabase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of everything the pipeline wrote, plus its PNG charts, in a tmp dir."""
    out = tmp_path_factory.mktemp("report")
    first = filled.rows("SELECT first(calls) FROM llm_window")[0]["time"]
    age_s = int(time.time() - int(first) / 1e9) + 60
    code = report_command(_settings(filled), f"{age_s}s", out / "report.html", out / "png")
    assert code == 0
    return out


def _settings(filled: FilledDatabase) -> ProcessorSettings:
    settings = load_settings(
        cls=ProcessorSettings,
        influx={"url": filled.influx.url, "api": "v1", "database": filled.database}
    )
    return settings


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_report_is_self_contained_and_complete(written: Path, filled: FilledDatabase) -> None:
    page = (written / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert page.count('src="data:image/png;base64,') == len(CHARTS)
    for prompt, version, model in filled.series:
        assert re.search(rf"<td[^>]*>{re.escape(prompt)}</td>\s*<td[^>]*>{version}</td>\s*"
                         rf"<td[^>]*>{re.escape(model)}</td>", page), (prompt, version, model)
    assert "p95 latency of" in page  # the alerts table


def test_png_charts_are_written_on_request(written: Path) -> None:
    files = sorted((written / "png").iterdir())
    assert [f.stem for f in files] == sorted(name for name, _, _ in CHARTS)
    for file in files:
        width, height = _png_size(file.read_bytes())
        assert width > 400 and height > 150, file.name


def test_charts_render_in_a_real_browser(written: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.html"
    page = (written / "report.html").read_text()
    probe.write_text(page.replace("</body>", SIZE_PROBE + "</body>"))
    dom = dump_dom(probe, tmp_path / "profile-dom")
    sizes = re.findall(r'<img id="chart-([\w-]+)"[^>]*data-size="(\d+)x(\d+)"', dom)
    assert sorted(name for name, _, _ in sizes) == sorted(name for name, _, _ in CHARTS), dom[:500]
    for name, width, height in sizes:
        assert int(width) > 400 and int(height) > 150, (name, width, height)


def test_screenshot_is_not_blank_and_shows_the_charts(written: Path, tmp_path: Path) -> None:
    shot = screenshot(written / "report.html", tmp_path / "report.png", tmp_path / "profile")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 3000)
    assert max(ImageStat.Stat(image.convert("L")).stddev) > 20  # not one flat colour
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20) or []}
    palette = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:4]}
    assert palette <= colours, "the chart lines' colours are not on the screen"
    if os.environ.get("UPDATE_REPORT_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
