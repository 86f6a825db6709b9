"""Data sources: folders with corrupt/RGBA/grayscale files, prepare -> pyramid -> train, sample order."""

import json

import numpy as np
import pytest
from PIL import Image

from progan_ext.data import BatchStream, FolderImages, ProceduralImages, PyramidImages, box_downsample, open_source
from progan_ext.prepare import main as prepare_main
from progan_ext.train import main as train_main
from progan_ext.training import checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(root / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "sub" / "b.webp")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(root / "sub" / "gray.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128  # half-transparent red
    Image.fromarray(rgba, "RGBA").save(root / "sub" / "deeper" / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(root / "c.BMP")
    (root / "corrupt.png").write_bytes(b"\x89PNG not really a png")
    (root / "readme.txt").write_text("ignored")
    return root


def test_folder_source_converts_and_skips(folder):
    src = FolderImages(folder, 16)
    assert len(src) == 5 and src.skipped == 1
    for i in range(len(src)):
        for r in (4, 8, 16):
            img = src.get(i, r)
            assert img.shape == (3, r, r) and img.dtype == np.uint8
    names = [p.name for p in src.files]
    gray = src.get(names.index("gray.png"), 16)
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[1], gray[2])
    rgba = src.get(names.index("rgba.png"), 16)
    assert abs(int(rgba[0].mean()) - 100) <= 1 and rgba[1].max() == 0  # premultiplied by alpha 128/255


def test_decode_failure_after_header_check_is_replaced_not_fatal(folder):
    src = FolderImages(folder, 8)
    # Truncate a file after the scan: decoding now fails, the source substitutes the next image.
    victim = src.files[0]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        img = src.get(0, 8)
    assert np.array_equal(img, src.get(1, 8))


def test_prepare_pyramid_and_train_on_it(folder, tmp_path):
    out = tmp_path / "prepared"
    assert prepare_main([str(folder), str(out), "--resolution", "8", "--workers", "0"]) == 0
    meta = json.loads((out / "progan_pyramid.json").read_text())
    assert meta["num_images"] == 5 and meta["skipped"] == 1
    pyr = open_source(str(out), 8)
    assert isinstance(pyr, PyramidImages) and len(pyr) == 5
    top = pyr.level(8)
    for r in (4, 8):
        assert pyr.level(r).shape == (5, 3, r, r)
        assert np.array_equal(pyr.level(r), box_downsample(np.asarray(top), r))
    assert np.array_equal(top[0], FolderImages(folder, 8).get(0, 8))
    run = tmp_path / "run"
    rc = train_main(["--data", str(out), "--fmap-max", "8", "--latent-size", "16", "--batch", "4",
                     "--kimg-stable", "0.012", "--kimg-fade", "0.012", "--snapshot-kimg", "1",
                     "--run-dir", str(run), "--no-progress", "--workers", "1"])
    assert rc == 0
    state = checkpoint.load(run)
    assert state["config"]["resolution"] == 8 and state["nimg"] >= 36  # resolution taken from the data
    start = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert start["skipped_files"] == 1


def test_train_on_folder_directly(folder, tmp_path):
    rc = train_main(["--data", str(folder), "--resolution", "8", "--fmap-max", "8", "--latent-size", "16",
                     "--batch", "4", "--kimg-stable", "0.008", "--kimg-fade", "0.008", "--mirror",
                     "--run-dir", str(tmp_path / "run"), "--no-progress", "--workers", "0"])
    assert rc == 0
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["skipped_files"] == 1


def test_prepare_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare_main([str(tmp_path), str(tmp_path / "o"), "--resolution", "100"])
    assert "power of two" in capsys.readouterr().err
    assert prepare_main([str(tmp_path / "missing"), str(tmp_path / "o"), "--resolution", "8"]) == 2
    (tmp_path / "e").mkdir()
    assert prepare_main([str(tmp_path / "e"), str(tmp_path / "o"), "--resolution", "8"]) == 2
    assert "no images" in capsys.readouterr().err


def test_procedural_is_deterministic_and_varied():
    a, b = ProceduralImages(16, 16, seed=3), ProceduralImages(16, 16, seed=3)
    assert np.array_equal(a.level(16), b.level(16))
    assert not np.array_equal(a.level(16), ProceduralImages(16, 16, seed=4).level(16))
    assert a.level(16).std(axis=0).mean() > 20  # images differ from each other
    assert np.array_equal(a.level(8), box_downsample(a.level(16), 8))


def test_batch_stream_resumable_and_rank_disjoint():
    s = BatchStream(10, seed=1)
    whole = s.indices(0, 30)
    assert sorted(whole[:10]) == list(range(10)) and sorted(whole[10:20]) == list(range(10))
    assert whole[:10] != whole[10:20]
    assert BatchStream(10, seed=1).indices(7, 9) == whole[7:16]  # any position, any count
    r0, r1 = BatchStream(10, 1).batches(0, 2, 0, 2), BatchStream(10, 1).batches(0, 2, 1, 2)
    got0, got1 = [next(r0) for _ in range(2)], [next(r1) for _ in range(2)]
    assert got0[0] + got1[0] + got0[1] + got1[1] == whole[:8]
