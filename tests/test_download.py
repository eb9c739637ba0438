"""fetch(): torch.hub cache, hash check, offline switch, clear failures (file:// URLs, no network)."""
import hashlib

import pytest

from csra.download import DownloadError, cache_path, fetch


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CSRA_OFFLINE", raising=False)
    return tmp_path


def served(hub, name, data):
    src = hub / "server" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    return src.as_uri()


def test_downloads_once_into_torch_hub_cache(hub):
    data = b"weights" * 100
    digest = hashlib.sha256(data).hexdigest()[:8]
    url = served(hub, f"model-{digest}.pth", data)
    path = fetch(url, progress=False)
    assert path == hub / "torch" / "hub" / "checkpoints" / f"model-{digest}.pth"
    assert path.read_bytes() == data
    (hub / "server" / f"model-{digest}.pth").unlink()  # second call must not need the server
    assert fetch(url, offline=True) == path


def test_hash_mismatch_is_refused_and_leaves_nothing(hub):
    url = served(hub, "model-deadbeef.pth", b"not the promised bytes")
    with pytest.raises(DownloadError, match="could not download"):
        fetch(url, progress=False)
    assert not cache_path(url).exists()
    assert list(cache_path(url).parent.iterdir()) == []


def test_offline_names_the_url_and_the_place(hub, monkeypatch):
    monkeypatch.setenv("CSRA_OFFLINE", "1")
    url = "https://example.org/files/big-0123abcd.pth"
    with pytest.raises(DownloadError) as err:
        fetch(url, what="the big model")
    msg = str(err.value)
    assert "the big model is not cached" in msg and url in msg and str(cache_path(url)) in msg


def test_unreachable_url_is_a_one_line_error(hub):
    url = (hub / "server" / "missing.pth").as_uri()
    with pytest.raises(DownloadError) as err:
        fetch(url, progress=False)
    assert "could not download" in str(err.value) and "\n" not in str(err.value)
