"""``terratim quickstart --fast`` runs the real entry point end to end on the bundled model and bundled chips."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

import terratim.samples as samples
from terratim.cli import main
from terratim.data.geotiff import read_geotiff
from terratim.modalities import LULC_COLORS

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_fast_runs_every_step_on_the_packaged_chips(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an empty working directory: nothing is found relative to it
    assert main(["quickstart", "--fast", "--output", "out", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "plain" in out and "TiM" in out and "oracle" in out and "mIoU" in out and "skipping" not in out
    assert re.search(r"TiM − plain: [+-]\d+\.\d pp mIoU, one seed, no interval", out) and "Why:" in out
    assert "2 torch threads" in out  # the table depends on the thread count, so it says which
    figure = tmp_path / "out" / "quickstart.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    chip = samples.SEN1FLOODS11_CHIPS[0]
    imagined = sorted((tmp_path / "out" / "sen1floods11").glob("*_imagined_LULC.tif"))
    assert [p.name for p in imagined] == [f"{chip}_imagined_LULC.tif"]
    png = tmp_path / "out" / "sen1floods11" / f"{chip}.png"
    assert png.is_file() and png.stat().st_size > 10_000
    lulc = read_geotiff(imagined[0])
    label = read_geotiff(imagined[0].with_name(imagined[0].name.replace("imagined_LULC", "LabelHand")))
    packaged = read_geotiff(samples.sen1floods11_files()[0].label)
    assert lulc.data.shape == label.data.shape == (1, 128, 128)  # the packaged crop, not the 512 px original
    np.testing.assert_array_equal(np.nan_to_num(label.data, nan=-1), np.nan_to_num(packaged.data, nan=-1))
    assert set(np.unique(lulc.data).tolist()) <= set(range(10))
    assert lulc.profile["crs"] == label.profile["crs"] and lulc.profile["transform"] == label.profile["transform"]
    with rasterio.open(imagined[0]) as src:  # the LULC colour table of the modality record
        table = src.colormap(1)
    for cls, color in enumerate(LULC_COLORS):
        assert table[cls][:3] == tuple(int(color[i : i + 2], 16) for i in (1, 3, 5)), cls


def test_oracle_feeds_the_tokens_of_the_true_land_cover_to_the_tim_backbone() -> None:
    """The oracle variant: the TiM backbone given the tokenizer's ids of the true map, which it does not imagine."""
    import torch

    from terratim.commands import quickstart

    chips = quickstart.task_data(quickstart.TEST_WORLD_SEED, 2, 64)
    task = quickstart.build_task("oracle", quickstart.FAST)
    inputs = quickstart.model_inputs("oracle", task.model, chips, seed=0)
    with torch.no_grad():
        expected = quickstart.lulc_tokenizer().encode(chips.lulc)[1]
    assert torch.equal(inputs["LULC"], expected) and inputs["LULC"].shape == (2, 4, 4)
    calls = []
    task.model.backbone.imagine = lambda *a, **k: calls.append(a)  # must not be called for a given TiM modality
    with torch.no_grad():
        task(inputs)
    assert calls == []
    del task.model.backbone.imagine  # the class's method again
    imagined = quickstart.model_inputs("tim", task.model, chips, seed=0)["LULC"]
    assert imagined.shape == expected.shape and set(imagined.unique().tolist()) <= set(range(4375))


def test_paired_interval_is_the_student_t_interval_of_the_differences() -> None:
    from terratim.commands import quickstart

    runs = {"plain": [{"test/mIoU": v} for v in (0.50, 0.52, 0.55)],
            "tim": [{"test/mIoU": v} for v in (0.53, 0.53, 0.59)]}
    diffs = quickstart.paired_differences(runs)
    assert diffs["tim"] == pytest.approx([3.0, 1.0, 4.0])
    mean, half = quickstart.mean_interval(diffs["tim"])
    sd = np.std([3.0, 1.0, 4.0], ddof=1)
    assert mean == pytest.approx(8 / 3) and half == pytest.approx(4.303 * sd / np.sqrt(3), rel=1e-6)
    assert quickstart.mean_interval([1.0]) == (1.0, 0.0)


def test_the_reason_follows_the_oracle() -> None:
    """No gain with a weak oracle blames the tokens; a strong oracle with a weak TiM blames the generator."""
    from terratim.commands import quickstart

    ceiling = quickstart.TokenCeiling(label_iou=0.6, imagined_iou=0.47, flooded_iou=0.07)
    weak = quickstart.why({"tim": [1.0, -1.0, 2.0, 0.0, 1.0], "oracle": [2.0, -2.0, 3.0, 1.0, 2.0]}, ceiling)
    assert "4 x 4 LULC tokens" in weak and "IoU 0.60" in weak and "0.47" in weak and "re-pretraining" in weak
    strong = quickstart.why({"tim": [1.0, -1.0, 2.0, 0.0, 1.0], "oracle": [6.0, 7.0, 5.0, 6.5, 6.0]})
    assert "the gap is the generator" in strong
    assert "at least 2 pp" in quickstart.why({"tim": [4.0, 5.0, 4.5, 5.5, 4.0]})
    assert "no interval" in quickstart.why({"tim": [4.0], "oracle": [5.0]})


def test_quickstart_fits_the_package_task_and_scores_with_its_metrics() -> None:
    """The table's numbers are the segmentation task's torchmetrics, i.e. IoU over all held-out pixels."""
    import torch

    from terratim.commands import quickstart
    from terratim.tasks import SemanticSegmentationTask

    settings = quickstart.FAST
    train = quickstart.task_data(100, settings.train_chips, settings.size)
    task = quickstart.fine_tune("plain", 0, train, settings, lambda: None)
    assert isinstance(task, SemanticSegmentationTask) and task.hparams["lr"] == settings.lr
    test = quickstart.task_data(quickstart.TEST_WORLD_SEED, 4, settings.size)
    metrics, pred = quickstart.evaluate("plain", task, test)
    with torch.no_grad():
        classes = task({"S1GRD": test.s1}).argmax(1)  # the same batch of 4 as the test loader's
    assert torch.equal(pred, classes[:3])
    ious = [((classes == k) & (test.label == k)).sum().double() / ((classes == k) | (test.label == k)).sum().double()
            for k in (0, 1)]
    assert metrics["test/IoU_water"] == pytest.approx(ious[1].item(), rel=1e-6)  # float32 ratio of pixel counts
    assert metrics["test/mIoU"] == pytest.approx(sum(ious).item() / 2, rel=1e-6)


def test_quickstart_missing_sample_is_an_error_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "sen1floods11"
    shutil.copytree(samples.SEN1FLOODS11_SAMPLE, broken)
    (broken / "LabelHand" / f"{samples.SEN1FLOODS11_CHIPS[0]}_LabelHand.tif").unlink()
    monkeypatch.setattr(samples, "SEN1FLOODS11_SAMPLE", broken)
    monkeypatch.setenv("TERRATIM_DEBUG", "1")  # the exception itself, not the CLI's one-line report of it
    with pytest.raises(FileNotFoundError, match=f"{samples.SEN1FLOODS11_CHIPS[0]}_LabelHand.tif"):
        main(["quickstart", "--fast", "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # failed before training or writing anything


def test_packaged_chips_are_the_windows_of_the_originals_named_in_provenance() -> None:
    provenance = (samples.SEN1FLOODS11_SAMPLE / "PROVENANCE.txt").read_text()
    assert (samples.SEN1FLOODS11_SAMPLE / "LICENSE.txt").is_file()
    pattern = re.compile(r"^  (\S+)\s+rows\s+(\d+)-\d+, cols\s+(\d+)-", re.M)
    windows = {name: (int(row), int(col)) for name, row, col in pattern.findall(provenance)}
    assert sorted(windows) == sorted(samples.SEN1FLOODS11_CHIPS)
    originals = REPO / "tests" / "data" / "sen1floods11"
    for chip in samples.sen1floods11_files():
        row, col = windows[chip.name]
        for kind, path in (("S1Hand", chip.s1), ("LabelHand", chip.label)):
            window = Window(col, row, 128, 128)
            with rasterio.open(originals / kind / f"{chip.name}_{kind}.tif") as src, rasterio.open(path) as crop:
                assert (crop.crs, crop.dtypes[0], repr(crop.nodata)) == (src.crs, src.dtypes[0], repr(src.nodata)), path
                assert crop.transform == src.window_transform(window), path
                np.testing.assert_array_equal(crop.read(), src.read(window=window))  # stored values, no arithmetic


def copy_source(target: Path) -> Path:
    """The files a wheel is built from, copied out of the checkout (so the build writes nothing into it)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "terratim", target / "terratim", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    return target


def build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of the checkout: offline with this environment's setuptools, else pip fetches setuptools."""
    source = copy_source(tmp_path / "src")
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "-q", "-w", str(tmp_path / "wheel"),
                    str(source)], check=True)
    (wheel,) = (tmp_path / "wheel").glob("terratim-*.whl")
    return wheel


def test_wheel_install_runs_the_quickstart_from_an_empty_folder(tmp_path: Path) -> None:
    """A non-editable install (wheel into a fresh venv) runs every quickstart step, Sen1Floods11 included."""
    wheel = build_wheel(tmp_path)
    files = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in samples.SEN1FLOODS11_SAMPLE.rglob("*") if p.is_file()}
    assert shipped and shipped <= files, sorted(shipped - files)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # torch & co. from the environment running the tests; a path line in a .pth comes after the venv's own
    # site-packages and runs no .pth of that environment (so not its editable terratim finder either)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "outer_environment.pth").write_text("\n".join(sorted(outer)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    where = subprocess.run([str(python), "-c", "import terratim.samples as s; print(s.SEN1FLOODS11_SAMPLE)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout
    run = subprocess.run([str(venv / "bin" / "terratim"), "quickstart", "--fast", "--output", "out"], cwd=empty,
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "skipping" not in run.stdout and "mIoU" in run.stdout
    assert (empty / "out" / "quickstart.png").is_file() and "TiM − plain" in run.stdout
    chip = samples.SEN1FLOODS11_CHIPS[0]
    assert (empty / "out" / "sen1floods11" / f"{chip}.png").is_file()
    for name in (f"{chip}_imagined_LULC.tif", f"{chip}_LabelHand.tif"):
        assert read_geotiff(empty / "out" / "sen1floods11" / name).data.shape == (1, 128, 128)


def test_one_seed_prints_no_interval():
    from terratim.commands import quickstart

    assert quickstart.paired_gap([6.1]) == "+6.1 pp (one seed)"
    assert quickstart.paired_gap([1.0, 3.0]).startswith("+2.0 ± 12.7")  # t(0.975, 1 df) = 12.706
