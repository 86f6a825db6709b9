"""generate and metrics CLIs on a checkpoint from a tiny training run."""

import pytest
from PIL import Image

from progan_ext.generate import main as generate_main
from progan_ext.metrics import main as metrics_main
from progan_ext.train import main as train_main

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("gen") / "run"
    rc = train_main(["--resolution", "16", "--fmap-max", "8", "--latent-size", "16", "--batch", "8",
                     "--procedural-images", "64", "--kimg-stable", "0.016", "--kimg-fade", "0.016",
                     "--run-dir", str(run), "--no-progress", "--workers", "0"])
    assert rc == 0
    return run


def test_generate_grid_and_interpolation(run_dir, tmp_path):
    out = tmp_path / "grid.png"
    assert generate_main([str(run_dir), "--grid", str(out), "--num", "9", "--seed", "3", "--device", "cpu"]) == 0
    with Image.open(out) as im:
        assert im.size[0] >= 3 * 16 and im.size[0] == im.size[1]
        first = im.convert("RGB").tobytes()
    assert generate_main([str(run_dir), "--grid", str(out), "--num", "9", "--seed", "3", "--device", "cpu"]) == 0
    with Image.open(out) as im:
        assert im.convert("RGB").tobytes() == first  # same seed, same images
    frames = tmp_path / "walk"
    assert generate_main([str(run_dir), "--interpolate", "6", "--keyframes", "2", "--outdir", str(frames),
                          "--device", "cpu"]) == 0
    assert len(list(frames.glob("frame-*.png"))) == 6
    with Image.open(frames / "walk.gif") as gif:
        assert gif.n_frames == 6


def test_generate_errors(tmp_path, capsys):
    assert generate_main([str(tmp_path / "nope"), "--grid", str(tmp_path / "g.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_main([str(tmp_path)])
    assert "nothing to do" in capsys.readouterr().err


def test_metrics_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "swd.json"
    assert metrics_main([str(run_dir), "--num", "64", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SWD" in text and "avg" in text and out.exists()
