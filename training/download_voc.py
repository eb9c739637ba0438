"""Download and unpack PASCAL VOC 2007 (trainval + test): python -m training.download_voc --out data.

Fetches the two official archives (about 440 MB + 430 MB), checks their MD5
sums, unpacks them into OUT/VOCdevkit/VOC2007 and checks the result (5011
trainval + 4952 test images). Archives already in OUT (or in --archives DIR)
are used as they are, so on a machine without internet: download the two
files elsewhere, copy them into OUT and run with --offline. Downloads try the
official host first, then mirrors. CSRA_OFFLINE=1 also forbids downloads.
"""
import argparse
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import check_integrity, download_url
from tqdm import tqdm

from csra.download import DownloadError, is_offline
from csra.errors import one_line

from .voc import DataError, load_split

OFFICIAL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
MIRRORS = ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/", "https://pjreddie.com/media/files/")


@dataclass(frozen=True)
class Archive:
    filename: str
    md5: str
    urls: tuple
    split: str  # the split the archive brings
    images: int  # how many images that split has


def voc2007_archives(base_urls=(OFFICIAL, *MIRRORS)):
    """The official VOC2007 trainval and test archives (MD5s as torchvision lists them)."""
    def urls(name):
        return tuple(b.rstrip("/") + "/" + name for b in base_urls)
    return (
        Archive("VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64",
                urls("VOCtrainval_06-Nov-2007.tar"), "trainval", 5011),
        Archive("VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f",
                urls("VOCtest_06-Nov-2007.tar"), "test", 4952),
    )


def fetch_archive(archive, folder, offline=None, search=()):
    """Path of a checked copy of the archive in folder (or one of the search folders), downloading it."""
    for place in (folder, *search):
        path = Path(place) / archive.filename
        if check_integrity(path, archive.md5):
            return path
        if path.is_file() and place == folder:
            print(f"{path}: MD5 does not match the official archive; downloading it again", file=sys.stderr)
            path.unlink()
    dest = Path(folder) / archive.filename
    hint = f"download {archive.urls[0]} and put it at {dest}"
    if is_offline(offline):
        raise DownloadError(f"{archive.filename} is not in {folder} and downloads are off: {hint}, "
                            "then run this again")
    reasons = []
    for url in archive.urls:
        try:
            download_url(url, folder, archive.filename, archive.md5)  # checks the MD5 when done
            return dest
        except RuntimeError:  # torchvision's word for a finished download with another MD5
            reasons.append(f"{url}: the download's MD5 is not {archive.md5}")
        except (OSError, ValueError) as err:
            reasons.append(f"{url}: {one_line(err)}")
        dest.unlink(missing_ok=True)  # a partial or corrupt download
    raise DownloadError(f"could not download {archive.filename} ({'; '.join(reasons)}): {hint}")


def safe_extract(tar_path, dest):
    """Unpack a tar, refusing members that would land outside dest or are links/devices.

    (torchvision's extract_archive calls tarfile.extractall without a member filter on
    Python < 3.14, so a crafted archive could write outside dest.)"""
    dest = Path(dest).resolve()
    try:
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            for m in members:
                target = (dest / m.name).resolve()
                if not (target == dest or dest in target.parents) or not (m.isfile() or m.isdir()):
                    raise DownloadError(f"{tar_path}: refusing to unpack {m.name!r} (outside the folder or a link)")
            for m in tqdm(members, desc=f"unpacking {Path(tar_path).name}", unit="file", leave=False):
                if hasattr(tarfile, "data_filter"):
                    tar.extract(m, dest, filter="data")
                else:  # Python without extraction filters: members were checked above
                    tar.extract(m, dest)
    except (tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{tar_path}: broken archive ({err}); delete it and run again") from None


def prepare_voc2007(out, archives=None, offline=None, keep_archives=True, search=()):
    """Fetch (or find), check and unpack the archives into out; returns out/VOCdevkit/VOC2007."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    archives = archives or voc2007_archives()
    voc_root = out / "VOCdevkit" / "VOC2007"
    for archive in archives:
        try:
            if len(load_split(out, archive.split)) == archive.images:
                print(f"{archive.split}: {archive.images} images already in {voc_root}")
                continue
        except DataError:
            pass
        path = fetch_archive(archive, out, offline, search)
        safe_extract(path, out)
        if not keep_archives and path.parent == out:
            path.unlink()
    for archive in archives:
        n = len(load_split(out, archive.split))
        if n != archive.images:
            raise DataError(f"{voc_root}: split '{archive.split}' has {n} images, expected {archive.images}")
    return voc_root


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.download_voc", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data", help="folder to hold VOCdevkit/ (the --data-root of train/evaluate)")
    p.add_argument("--archives", default=None, help="a folder where the .tar files already are")
    p.add_argument("--base-url", action="append", default=None,
                   help="download from this base URL instead (repeat for fallbacks)")
    p.add_argument("--offline", action="store_true", help="never download (also: CSRA_OFFLINE=1)")
    p.add_argument("--delete-archives", action="store_true", help="delete the .tar files after unpacking")
    args = p.parse_args(argv)
    archives = voc2007_archives(tuple(args.base_url)) if args.base_url else None
    try:
        root = prepare_voc2007(args.out, archives, args.offline or None, not args.delete_archives,
                               search=(args.archives,) if args.archives else ())
    except (DownloadError, DataError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"VOC2007 is ready in {root}; train with: python -m training.train --data-root {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
