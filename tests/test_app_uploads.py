"""The page opens only the examples and the session's own uploads (app/uploads.py): a raw API
call cannot make the server read any other file, and the answer never tells whether a file
exists. Unit tests of the guard, then the running app through raw queue/join requests."""
import os
import shutil
import uuid
from pathlib import Path

import pytest
from PIL import Image

import csra
from app.uploads import UploadGuard
from tests.app_api import (file_value, raw_analyse, raw_analyse_file, raw_upload, scores_of,
                           status_of)
from tests.conftest import CAT, ROOT

COFFEE = ROOT / "assets" / "coffee.jpg"


@pytest.fixture
def cache(tmp_path):
    """A Gradio-like upload folder with one received file, and a photo outside it."""
    folder = tmp_path / "gradio"
    (folder / "abc").mkdir(parents=True)
    received = folder / "abc" / "photo.jpg"
    shutil.copy(COFFEE, received)
    outside = tmp_path / "secret" / "private.png"
    outside.parent.mkdir()
    shutil.copy(COFFEE, outside)
    guard = UploadGuard([CAT], folder, received=lambda: {str(received)})
    return guard, folder, received, outside


def refused(guard, path, session="s1", name="x.png"):
    with pytest.raises(csra.ImageError) as err:
        guard.path_for(path, session, name)
    return str(err.value)


def test_examples_and_own_uploads_are_opened(cache):
    guard, _, received, _ = cache
    assert guard.path_for(str(CAT), "anyone", "cat.jpg") == os.path.realpath(CAT)
    assert guard.path_for(str(received), "s1", "photo.jpg") == str(received)
    assert guard.path_for(str(received), "s1", "photo.jpg") == str(received)   # again: still its own


def test_a_cached_copy_of_an_example_is_open_to_everyone(cache):
    guard, folder, _, _ = cache
    copy = folder / "abc" / "cat-copy.jpg"     # how Gradio caches an example it shows
    shutil.copy(CAT, copy)
    assert guard.path_for(str(copy), "anyone", "cat.jpg") == str(copy)
    assert guard.path_for(str(copy), "someone else", "cat.jpg") == str(copy)


def test_other_paths_get_the_missing_file_message(cache):
    guard, folder, received, outside = cache
    missing = refused(guard, str(outside.parent / "nothing.png"), name="x.png")
    assert missing == "x.png: no such file"
    assert refused(guard, str(outside), name="x.png") == missing          # exists, outside
    assert refused(guard, "/etc/passwd", name="x.png") == missing          # exists, not an image
    dotdot = f"{folder}/abc/../../secret/private.png"
    assert refused(guard, dotdot, name="x.png") == missing
    stray = folder / "abc" / "stray.jpg"                                   # in the cache, never
    shutil.copy(COFFEE, stray)                                             # received
    assert refused(guard, str(stray), name="x.png") == missing
    link = folder / "abc" / "link.png"                                     # symlink out of it
    link.symlink_to(outside)
    assert refused(guard, str(link), name="x.png") == missing


def test_a_received_symlink_out_of_the_cache_is_refused(tmp_path):
    folder = tmp_path / "gradio"
    folder.mkdir()
    outside = tmp_path / "private.png"
    shutil.copy(COFFEE, outside)
    link = folder / "link.png"
    link.symlink_to(outside)
    guard = UploadGuard([], folder, received=lambda: {str(link)})
    assert refused(guard, str(link)) == "x.png: no such file"


def test_another_sessions_upload_is_refused_until_uploaded_again(cache):
    guard, _, received, _ = cache
    guard.path_for(str(received), "owner", "photo.jpg")
    assert refused(guard, str(received), session="intruder") == "x.png: no such file"
    # the same photo uploaded by the second session: Gradio writes a new file at the same path
    fresh = received.with_suffix(".tmp")
    shutil.copy(COFFEE, fresh)
    os.replace(fresh, received)
    assert guard.path_for(str(received), "intruder", "photo.jpg") == str(received)
    assert refused(guard, str(received), session="owner") == "x.png: no such file"


# --- the running app, through raw Gradio API requests ---------------------------------------

def test_raw_api_reads_only_the_sessions_own_uploads(app, tmp_path):
    outside = tmp_path / "private.jpg"
    shutil.copy(COFFEE, outside)
    mine = tmp_path / "mine.png"             # not an example (examples are open to everyone)
    Image.open(COFFEE).transpose(Image.Transpose.ROTATE_90).save(mine)
    before = app.calls["backbone"]
    refusals = {
        "outside": raw_analyse(app, file_value(outside, "x.jpg"), "attacker"),
        "missing": raw_analyse(app, file_value(tmp_path / "none.jpg", "x.jpg"), "attacker"),
        "passwd": raw_analyse(app, file_value("/etc/passwd", "x.jpg"), "attacker"),
    }
    # a bare path string: Gradio refuses it (not a file payload), naming no file
    assert "validation error" in raw_analyse(app, str(outside), "attacker")
    assert "validation error" in raw_analyse(app, "/etc/passwd", "attacker")
    uploaded = raw_upload(app, mine)
    assert app.demo.GRADIO_CACHE in uploaded
    refusals["dotdot"] = raw_analyse(
        app, file_value(f"{Path(uploaded).parent}/../../{outside}", "x.jpg"), "attacker")
    link = Path(uploaded).parent / f"link-{uuid.uuid4().hex}.jpg"
    link.symlink_to(outside)
    refusals["symlink"] = raw_analyse(app, file_value(link, "x.jpg"), "attacker")

    owner = raw_analyse(app, file_value(uploaded, "mine.png", marked=True), "owner")
    assert scores_of(owner) and "mine.png" in status_of(owner)
    refusals["other session"] = raw_analyse(app, file_value(uploaded, "x.jpg"), "attacker")

    for what, output in refusals.items():
        assert status_of(output) == "⚠️ x.jpg: no such file", what
        assert scores_of(output) is None, what
    assert app.calls["backbone"] == before + 1     # only the owner's image reached the network

    # the examples stay open to everyone
    example = raw_analyse(app, file_value(CAT), "attacker")
    assert scores_of(example) and "cat.jpg" in status_of(example)


def test_the_pages_own_upload_call_is_guarded_the_same_way(app, tmp_path):
    outside = tmp_path / "private.jpg"
    shutil.copy(COFFEE, outside)
    mine = tmp_path / "mine2.png"
    Image.open(COFFEE).transpose(Image.Transpose.ROTATE_270).save(mine)
    uploaded = raw_upload(app, mine)
    before = app.calls["backbone"]
    refused = [raw_analyse_file(app, {"path": str(outside), "name": "x.jpg"}, "attacker"),
               raw_analyse_file(app, {"path": "/etc/passwd", "name": "x.jpg"}, "attacker"),
               raw_analyse_file(app, {"example": "../../etc/passwd"}, "attacker"),
               raw_analyse_file(app, {"path": f"{Path(uploaded).parent}/../../{outside}",
                                      "name": "x.jpg"}, "attacker")]
    own = raw_analyse_file(app, {"path": uploaded, "name": "mine2.png"}, "owner")
    assert own["scores"]["name"] == "mine2.png" and own["heatmaps"]["tiles"] is not None
    assert own["handler_ms"] > 0 and "error" not in own
    refused.append(raw_analyse_file(app, {"path": uploaded, "name": "x.jpg"}, "attacker"))
    assert refused[0] == {"error": "x.jpg: no such file"}
    assert refused[2] == {"error": "../../etc/passwd: no such file"}
    assert all(r == refused[0] for r in refused[1:2] + refused[3:]), refused
    assert app.calls["backbone"] == before + 1
    example = raw_analyse_file(app, {"example": "cat.jpg"}, "attacker")
    assert example["scores"]["name"] == "cat.jpg"
    assert raw_analyse_file(app, {"example": "cat.jpg"}, "") == {
        "error": "the page is out of date: reload it"}


def test_a_pasted_image_is_analysed(app, tmp_path):
    """Gradio's image box sends a paste as a data URL, with no path (before: 'pasted image:
    no such file', the bytes were read as a path)."""
    import base64
    import io
    buffer = io.BytesIO()
    Image.open(COFFEE).resize((120, 80)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    before = app.calls["backbone"]
    output = raw_analyse(app, {"url": url, "meta": {"_type": "gradio.FileData"}}, "paster")
    assert status_of(output).startswith("pasted image — 120×80 px"), status_of(output)
    assert scores_of(output)["name"] == "pasted image"
    assert app.calls["backbone"] == before + 1
    broken = raw_analyse(app, {"url": "data:image/png;base64,AAAA"}, "paster")
    assert status_of(broken).startswith("⚠️ pasted image: ") and scores_of(broken) is None
