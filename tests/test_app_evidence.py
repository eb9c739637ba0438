"""'Check this map' (app/evidence.py): the network is taken one batch at a time, a check
stops when the page moves on, the curves drawn are check_map's, and in the browser the
button gives three curves per chart with their AUCs."""
import threading

import numpy as np
import pytest
import torch

import csra
from app import evidence
from app.live import FairGate
from app.network import NetworkTurns
from app.inference import analyse
from tests.conftest import CAT
from tests.test_app_browser import open_page, upload


@pytest.fixture(scope="module")
def analysis(one_thread):
    torch.manual_seed(0)
    model = csra.build_model("resnet18", num_classes=20, image_size=64,
                             class_names=csra.VOC_CLASSES).eval()
    return analyse(model, csra.load_image(CAT), name="cat.jpg")


def test_the_network_is_held_one_batch_at_a_time_and_given_back(analysis):
    lock = threading.Semaphore(1)
    held_during_batches = []               # every forward pass of the check holds the lock
    hook = analysis.model.backbone.register_forward_hook(
        lambda *_: held_during_batches.append(lock._value == 0))
    try:
        check = evidence.run_check(analysis, 3, 0.2, lock, cancelled=lambda: False, steps=10)
    finally:
        hook.remove()
    assert held_during_batches and all(held_during_batches)
    assert lock._value == 1                                    # given back at the end
    assert set(check.methods) == {"csra", "gradcam", "random"}
    assert len(check.fractions) == 11 and check.class_name == csra.VOC_CLASSES[3]


def test_a_check_stops_at_the_next_batch_once_cancelled(analysis):
    lock = threading.Semaphore(1)
    polls = []

    def cancelled():
        polls.append(1)
        return len(polls) > 2              # the page moves on during the check
    with pytest.raises(evidence.Cancelled):
        evidence.run_check(analysis, 0, 0.1, lock, cancelled)
    assert len(polls) == 3 and lock._value == 1


def test_an_upload_waits_at_most_one_batch(analysis):
    """While a check runs, an upload that waits for the network gets it before the check's
    next batch (the app's lock hands it over in order of arrival)."""
    lock = FairGate(1)
    order = []
    turns = NetworkTurns(lock, cancelled=lambda: False)
    assert turns() is False                                     # batch 1 holds the lock
    upload_thread = threading.Thread(target=lambda: (lock.acquire(), order.append("upload"),
                                                     lock.release()))
    upload_thread.start()
    for _ in range(6000):                                       # until the upload waits in line
        if lock._waiters:
            break
        threading.Event().wait(0.01)
    assert turns() is False                                     # batch 2: the upload went first
    order.append("batch 2")
    turns.release()
    upload_thread.join(timeout=600)
    assert order == ["upload", "batch 2"]


def test_the_charts_draw_check_maps_curves(analysis):
    check = evidence.run_check(analysis, 3, 0.2, threading.Semaphore(1), lambda: False, steps=10)
    page = evidence.evidence_html(check, "cat <1>.jpg")
    assert page.count("<polyline") == 6 and "cat &lt;1&gt;.jpg" in page
    for m, r in check.methods.items():
        assert f"{r.deletion_auc:.3f}" in page and f"{r.insertion_auc:.3f}" in page
    svg = evidence.curves_svg(check, "deletion")
    for line in svg.split('<polyline points="')[1:]:        # each curve drawn point by point:
        method = line.split('data-key="')[1].split('"')[0]
        points = np.array([p.split(",") for p in line.split('"')[0].split()], dtype=float)
        values = check.methods[method].deletion
        assert len(points) == 11                                # one point per step
        assert np.allclose(np.diff(points[:, 0]), np.diff(points[:, 0])[0])   # even x steps
        slope, offset = np.polyfit(values, points[:, 1], 1)     # y is linear in p, upside down
        assert slope < 0 and np.allclose(points[:, 1], offset + slope * values, atol=0.1)


@pytest.mark.slow
def test_the_button_shows_three_curves_and_the_aucs(app, browser):
    page = open_page(browser, app)
    upload(page)
    page.locator("#csra-closeup img").first.wait_for(timeout=60_000)
    page.locator("#csra-check").click()
    page.locator("#csra-evidence table.csra-auc").wait_for(timeout=120_000)
    for chart in ("deletion", "insertion"):
        svg = page.locator(f"#csra-evidence svg[aria-label='{chart} curves']")
        assert svg.locator("polyline").count() == 3
    rows = page.locator("#csra-evidence table.csra-auc tbody tr")
    assert rows.count() == 3
    assert "Grad-CAM" in rows.nth(1).inner_text()
    assert "lower" in page.locator("#csra-evidence").inner_text()
    # another class: the old curves go
    tile = page.locator("#csra-heatmaps .csra-tile").nth(1)
    tile.click()
    page.wait_for_function("() => !document.querySelector('#csra-evidence table')", timeout=60_000)
    assert not page.errors, page.errors
    page.close()
