"""VOC parsing, clear data errors, and the VOC07 download/prepare path (file:// URLs, no network)."""
import functools
import hashlib
import http.server
import io
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from csra import VOC_CLASSES, DownloadError, Preprocessing
from torchvision.datasets.utils import check_integrity

from training import download_voc
from training.augment import EvalTransform
from training.make_synthetic import make_synthetic
from training.voc import (DataError, VOCDataset, VOCObject, find_voc_root, labels_from_objects, load_split,
                          parse_annotation, read_classes)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def synth(tmp_path):
    return make_synthetic(tmp_path / "synth", seed=1, num_train=16, num_test=6, size=64)


XML = """<annotation><size><width>50</width><height>40</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
<object><name>cat</name><difficult>1</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
<object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>
<object><name>person</name><difficult>0</difficult><bndbox><xmin>30.0</xmin><ymin>2</ymin><xmax>48</xmax><ymax>39</ymax></bndbox></object>
</annotation>"""


def test_voc_xml_gives_boxes_difficult_flags_and_ternary_labels(tmp_path):
    (tmp_path / "a.xml").write_text(XML)
    index = {n: i for i, n in enumerate(VOC_CLASSES)}
    ann = parse_annotation(tmp_path / "a.xml", index)
    assert (ann.width, ann.height) == (50, 40)
    assert ann.objects[0] == VOCObject(index["dog"], False, (2, 3, 20, 30))
    assert ann.boxes_of(index["person"]) == [(1, 1, 4, 4), (30, 2, 48, 39)]
    labels = labels_from_objects(ann.objects, 20)
    expected = np.zeros(20, dtype=np.int8)
    expected[[index["dog"], index["person"]]] = 1  # person: one difficult, one not -> present
    expected[index["cat"]] = -1  # only difficult -> ignored
    np.testing.assert_array_equal(labels, expected)


def test_data_root_may_be_the_parent_the_devkit_or_the_voc2007_folder(tmp_path, synth):
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2007"
    shutil.copytree(synth, voc)
    for root in (tmp_path / "data", tmp_path / "data" / "VOCdevkit", voc):
        assert find_voc_root(root) == voc
    (voc / "classes.txt").unlink()
    assert read_classes(voc) == VOC_CLASSES  # no classes.txt: VOC's 20


def test_missing_data_root_and_missing_folder(tmp_path, synth):
    with pytest.raises(DataError, match="does not exist"):
        find_voc_root(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no VOC dataset in .*empty.*download_voc"):
        find_voc_root(tmp_path / "empty")
    shutil.rmtree(synth / "Annotations")
    with pytest.raises(DataError, match="missing the folder\\(s\\) Annotations"):
        load_split(synth, "trainval")


def test_missing_split_file_lists_the_splits_there(synth):
    with pytest.raises(DataError, match=r"nosuch\.txt: no such split file \(tried nosuch; splits here: test, "
                                        r"trainval\)"):
        load_split(synth, "nosuch")


def test_problems_are_collected_named_and_counted(synth):
    ids = (synth / "ImageSets/Main/trainval.txt").read_text().split()
    (synth / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    (synth / "Annotations" / f"{ids[1]}.xml").write_text("<annotation><size>")
    (synth / "JPEGImages" / f"{ids[2]}.jpg").write_bytes(b"this is no jpeg")
    for k in range(3, 10):
        (synth / "JPEGImages" / f"{ids[k]}.jpg").unlink()
    with pytest.raises(DataError) as info:
        load_split(synth, "trainval")
    msg = str(info.value)
    assert "\n" not in msg and "10 problem(s)" in msg and "and 5 more" in msg and "nothing was trained" in msg
    assert f"missing image {synth / 'JPEGImages' / ids[0]}.jpg" in msg
    assert f"{ids[1]}.xml: unreadable XML" in msg
    assert f"{ids[2]}.jpg is not a JPEG" in msg


def test_unknown_class_and_bad_box_are_named(synth):
    ids = (synth / "ImageSets/Main/test.txt").read_text().split()
    xml = synth / "Annotations" / f"{ids[0]}.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>x", 1))
    with pytest.raises(DataError, match=f"{ids[0]}.xml: unknown class 'x"):
        load_split(synth, "test")
    xml.write_text(XML.replace("<xmin>2</xmin>", "<xmin>two</xmin>").replace("dog", "red_circle")
                   .replace("cat", "red_circle").replace("person", "red_circle"))
    with pytest.raises(DataError, match=f"{ids[0]}.xml: not a VOC annotation"):
        load_split(synth, "test")


def test_truncated_jpeg_fails_when_read_naming_the_file(synth):
    split = load_split(synth, "test")
    path = split.image_paths[2]
    path.write_bytes(path.read_bytes()[:60])  # a JPEG header, then nothing
    ds = VOCDataset(split, EvalTransform(Preprocessing(64)))
    image, labels, index = ds[0]
    assert image.shape == (3, 64, 64) and index == 0
    assert torch.equal(labels, torch.from_numpy(split.labels[0]).float())
    with pytest.raises(DataError, match=f"unreadable image in split 'test': {path}"):
        ds[2]


def test_train_cli_reports_bad_data_in_one_line_without_traceback(synth):
    ids = (synth / "ImageSets/Main/trainval.txt").read_text().split()
    (synth / "JPEGImages" / f"{ids[3]}.jpg").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "training.train", "--data-root", str(synth), "--pretrained", "none",
         "--backbone", "resnet18", "--img-size", "64", "--out", str(synth.parent / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: split 'trainval'")
    assert f"missing image {synth / 'JPEGImages' / ids[3]}.jpg" in result.stderr
    assert not (synth.parent / "run").exists()


# --- download / prepare -------------------------------------------------------------------------

def make_tar(path, files):
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1, as a mirror of the archives would be."""
    folder = tmp_path / "server"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def voc_like_archives(synth, folder, base_url):
    """Two tars laid out like VOC's: trainval and test halves of the synthetic set."""
    archives = []
    for split in ("trainval", "test"):
        ids = (synth / "ImageSets/Main" / f"{split}.txt").read_text().split()
        files = {f"VOCdevkit/VOC2007/ImageSets/Main/{split}.txt": "\n".join(ids).encode(),
                 "VOCdevkit/VOC2007/classes.txt": (synth / "classes.txt").read_bytes()}
        for i in ids:
            files[f"VOCdevkit/VOC2007/JPEGImages/{i}.jpg"] = (synth / "JPEGImages" / f"{i}.jpg").read_bytes()
            files[f"VOCdevkit/VOC2007/Annotations/{i}.xml"] = (synth / "Annotations" / f"{i}.xml").read_bytes()
        tar = folder / f"{split}.tar"
        md5 = make_tar(tar, files)
        archives.append(download_voc.Archive(tar.name, md5, (base_url + tar.name,), split, len(ids)))
    return archives


def test_prepare_downloads_checks_md5_and_unpacks(tmp_path, synth, http_folder):
    served, base_url = http_folder
    archives = voc_like_archives(synth, served, base_url)
    out = tmp_path / "data"
    root = download_voc.prepare_voc2007(out, archives, offline=False)
    assert root == out / "VOCdevkit" / "VOC2007"
    assert len(load_split(out, "trainval")) == 16 and len(load_split(out, "test")) == 6
    assert (out / "trainval.tar").is_file() and not list(out.glob("*.part"))
    # a second run finds everything in place and needs no download, even offline
    (served / "trainval.tar").unlink()
    assert download_voc.prepare_voc2007(out, archives, offline=True) == root


def test_mirror_fallback_and_md5_mismatch(tmp_path, synth, http_folder):
    served, base_url = http_folder
    good = voc_like_archives(synth, served, base_url)
    bad_urls = (base_url + "missing.tar",) + good[0].urls
    fallback = download_voc.Archive(good[0].filename, good[0].md5, bad_urls, "trainval", 16)
    (tmp_path / "a").mkdir()
    path = download_voc.fetch_archive(fallback, tmp_path / "a")
    assert check_integrity(path, good[0].md5)
    wrong = download_voc.Archive(good[0].filename, "0" * 32, good[0].urls, "trainval", 16)
    (tmp_path / "b").mkdir()
    with pytest.raises(DownloadError, match="MD5 is not 0{32}"):
        download_voc.fetch_archive(wrong, tmp_path / "b")
    assert not list((tmp_path / "b").iterdir())  # the bad download was removed


def test_archive_with_path_escape_is_refused(tmp_path):
    tar = tmp_path / "evil.tar"
    make_tar(tar, {"../outside.txt": b"x"})
    with pytest.raises(DownloadError, match="refusing to unpack '../outside.txt'"):
        download_voc.safe_extract(tar, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()


def test_offline_error_says_what_to_put_where(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    assert download_voc.main(["--out", str(tmp_path / "voc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: VOCtrainval_06-Nov-2007.tar is not in")
    assert "downloads are off" in err and "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/" in err
    assert f"put it at {tmp_path / 'voc' / 'VOCtrainval_06-Nov-2007.tar'}" in err


def test_official_archive_table():
    trainval, test = download_voc.voc2007_archives()
    assert (trainval.md5, test.md5) == ("c52e279531787c972589f7e41ab4ae64", "b6e924de25625d8de591ea690078ad9f")
    assert (trainval.images, test.images) == (5011, 4952)
    assert trainval.urls[0] == "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar"
    assert len(trainval.urls) >= 2  # mirrors to fall back on


def test_image_that_breaks_during_training_stops_the_run_naming_it(synth, capsys):
    from training import train
    split = load_split(synth, "trainval")
    broken = split.image_paths[5]
    broken.write_bytes(broken.read_bytes()[:80])  # passes the up-front check, fails to decode
    code = train.main(["--data-root", str(synth), "--pretrained", "none", "--backbone", "resnet18",
                       "--img-size", "64", "--batch-size", "4", "--workers", "1", "--no-progress",
                       "--out", str(synth.parent / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith(f"error: unreadable image in split 'trainval': {broken}: cannot decode image")
    assert not (synth.parent / "run" / "last.pth").exists()  # no epoch finished, nothing half-written
