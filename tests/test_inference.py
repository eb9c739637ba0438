"""csra.inference: the one batch loop behind csra.predict, training.evaluate and
training.evaluate_imagenet; the CLIs depend on the library, never the reverse."""
import ast
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import csra
from csra.inference import ImageFiles, collate, score_map_batches

from .images import blob_image

ROOT = Path(__file__).resolve().parents[1]


def test_batches_give_the_models_own_logits_and_report_unreadable_files(tmp_path):
    torch.manual_seed(0)
    model = csra.build_model("resnet18", num_classes=5, num_heads=2, image_size=64).eval()
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        blob_image(i).save(files[-1])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    files.insert(1, tmp_path / "bad.png")
    files.append(tmp_path / "bad.png")  # alone in the last batch: no image to run
    loader = DataLoader(ImageFiles(files, model.preprocessing), batch_size=2, collate_fn=collate)
    batches = list(score_map_batches(model, loader, "cpu"))
    assert [b.extra[0][0] for b in batches] == [[0], [2, 3], []]
    assert [[i for i, _ in b.extra[0][1]] for b in batches] == [[1], [], [4]]
    assert "bad.png" in batches[0].extra[0][1][0][1] and batches[2].maps is None
    x = torch.stack([model.preprocessing(csra.load_image(str(files[i]))) for i in (0, 2, 3)])
    with torch.no_grad():
        expected = model(x)
        expected_lam = model.head.logits_from_maps(model.head.score_maps(model.forward_features(x)), lam=0.7)
    got = torch.cat([batches[0].logits(), batches[1].logits()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got = torch.cat([batches[0].logits(lam=0.7), batches[1].logits(lam=0.7)])
    torch.testing.assert_close(got, expected_lam, rtol=1e-5, atol=1e-5)
    assert batches[1].class_maps().shape == (2, 5, 2, 2)


def imports_of(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in (ROOT / "training").glob("*.py")))
def test_training_does_not_import_the_predict_cli(path):
    assert not {n for n in imports_of(ROOT / path) if n.startswith("csra.predict")}, path


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in (ROOT / "csra").glob("*.py")
                                         if p.name != "predict.py"))
def test_the_library_imports_no_cli(path):
    bad = {n for n in imports_of(ROOT / path)
           if n.split(".")[0] in ("training", "app") or n in (".predict", "csra.predict")
           or n.startswith((".predict.", "csra.predict."))}
    assert not bad, (path, bad)
