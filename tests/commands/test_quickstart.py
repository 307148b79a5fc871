"""``terratim quickstart --fast`` runs the real entry point end to end on the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terratim.cli import main
from terratim.data.geotiff import read_geotiff


def test_quickstart_fast_writes_table_figure_and_imagined_lulc(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["quickstart", "--fast", "--output", str(tmp_path), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "plain" in out and "tim" in out and "mIoU" in out
    figure = tmp_path / "quickstart.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    imagined = sorted((tmp_path / "sen1floods11").glob("*_imagined_LULC.tif"))
    assert len(imagined) == 1
    lulc = read_geotiff(imagined[0])
    label = read_geotiff(imagined[0].with_name(imagined[0].name.replace("imagined_LULC", "LabelHand")))
    assert lulc.data.shape == label.data.shape == (1, 512, 512)
    assert set(np.unique(lulc.data).tolist()) <= set(range(10))
    assert lulc.profile["crs"] == label.profile["crs"] and lulc.profile["transform"] == label.profile["transform"]
