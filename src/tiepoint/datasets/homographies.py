"""Synthetic training pairs: any folder of photographs, each warped twice by a random homography.

Every item is one image seen through two random views (`homography_sampler`) with independent
photometric augmentation, plus the exact `H_0to1` between the views. This is the first stage of
LightGlue training: no labels are needed, only images. `revisitop1m` (1M Flickr photos of Oxford
and Paris) is the standard source; `download_revisitop1m` fetches it, but any folder works.

Split: the image list (sorted, then shuffled with `shuffle_seed`) gives `val_size` held-out images
for validation and the rest for training. An epoch has `train_size` pairs; when the folder has fewer
images they are reused with fresh homographies. Validation pairs are fixed (same views every time).
Unreadable images are skipped with a warning, once each.
"""

from __future__ import annotations

import logging
import tarfile
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..errors import ConfigError, DatasetError, ImageError
from ..images import read_image
from .augmentations import Photometric
from .base import BaseDataset, item_rng
from .homography_sampler import HomographyConf, sample_homography, warp_image

logger = logging.getLogger("tiepoint")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
REVISITOP1M_URL = "http://ptak.felk.cvut.cz/revisitop/revisitop1m/"
REVISITOP1M_NUM_TARS = 100


def list_images(root: Path, image_list: str | None = None, exclude=()) -> list[str]:
    """Relative paths of the images under `root` (recursively), or those named in `image_list`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    if image_list:
        lp = Path(image_list)
        lp = lp if lp.is_absolute() else root / lp
        if not lp.exists():
            raise DatasetError(f"image list {lp} does not exist")
        names = [
            ln.strip()
            for ln in lp.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
    else:
        names = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
    excl = [str(e) for e in exclude]
    names = [n for n in names if not any(e and e in n for e in excl)]
    if not names:
        raise DatasetError(
            f"image folder {root} contains no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return names


def download_revisitop1m(dest: Path, num_tars: int = REVISITOP1M_NUM_TARS) -> Path:
    """Download and unpack revisitop1m (~450 GB, 100 tarballs) into `dest/jpg`, resumably.

    Each tarball is downloaded to a temporary name, unpacked, then marked done, so an interrupted
    download restarts at the first unfinished tarball.
    """
    dest = Path(dest)
    (dest / "jpg").mkdir(parents=True, exist_ok=True)
    listing = dest / "revisitop1m.txt"
    if not listing.exists():
        tmp = listing.with_suffix(".txt.part")
        urllib.request.urlretrieve(REVISITOP1M_URL + "revisitop1m.txt", tmp)
        tmp.replace(listing)
    for i in tqdm(range(1, num_tars + 1), desc="revisitop1m", unit="tar"):
        name = f"revisitop1m.{i}.tar.gz"
        done = dest / "jpg" / f".{name}.done"
        if done.exists():
            continue
        part = dest / f"{name}.part"
        urllib.request.urlretrieve(f"{REVISITOP1M_URL}jpg/{name}", part)
        with tarfile.open(part) as tar:
            tar.extractall(dest / "jpg", filter="data")
        part.unlink()
        done.touch()
    return dest


class _HomographyPairs(Dataset):
    def __init__(self, owner: Homographies, names: list[str], size: int, split: str):
        self.owner, self.names, self.size, self.split = owner, names, size, split
        self.conf = owner.conf
        self.epoch = 0
        hc = self.conf.homography
        self.hconf = HomographyConf(
            difficulty=hc.difficulty,
            translation=hc.translation,
            max_angle=hc.max_angle,
            min_convexity=hc.min_convexity,
            patch_shape=tuple(hc.patch_shape),
        )
        self.bad: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def _load(self, idx: int) -> tuple[str, np.ndarray]:
        n = len(self.names)
        for k in range(n):
            name = self.names[(idx + k) % n]
            if name in self.bad:
                continue
            try:
                img, _ = read_image(self.owner.root / name, max_size=self.conf.load_size)
            except ImageError as e:
                self.bad.add(name)
                logger.warning("skipping unreadable training image: %s", e)
                continue
            if self.conf.load_size and max(img.shape[:2]) > self.conf.load_size:
                s = self.conf.load_size / max(img.shape[:2])
                img = cv2.resize(
                    img,
                    (round(img.shape[1] * s), round(img.shape[0] * s)),
                    interpolation=cv2.INTER_AREA,
                )
                img = img[..., None] if img.ndim == 2 else img
            if self.conf.grayscale and img.shape[2] == 3:
                img = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            elif not self.conf.grayscale and img.shape[2] == 1:
                img = np.repeat(img, 3, axis=2)
            return name, img
        raise DatasetError(
            f"no readable image left in {self.owner.root} ({len(self.bad)} unreadable)"
        )

    def __getitem__(self, idx: int) -> dict:
        # Validation items never change; training items get new views each epoch if `reseed`.
        epoch = self.epoch if (self.split == "train" and self.conf.reseed) else 0
        seed = self.conf.seed + (0 if self.split == "train" else 1_000_003)
        rng = item_rng(seed, epoch, idx)
        name, img = self._load(idx)
        h, w = img.shape[:2]
        views = {}
        Hs = []
        for v in range(2):
            if v == 0 and self.conf.right_only:
                # view 0 is the whole image resized to the patch (no perspective)
                H, _ = sample_homography(
                    (w, h), HomographyConf(0, 0, 0, patch_shape=self.hconf.patch_shape), rng
                )
            else:
                H, _ = sample_homography((w, h), self.hconf, rng)
            Hs.append(H)
            warped = warp_image(img, H, self.hconf.patch_shape)
            t = torch.from_numpy(np.ascontiguousarray(warped)).permute(2, 0, 1)[None].float()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**31)))
                t = self.owner.photometric(t)[0]
            views[f"view{v}"] = {
                "image": t,
                "image_size": torch.tensor(self.hconf.patch_shape, dtype=torch.float32),
            }
        H01 = Hs[1] @ np.linalg.inv(Hs[0])
        H01 = H01 / H01[2, 2]
        return {
            "name": f"{name}#{epoch}.{idx}",
            "idx": idx,
            **views,
            "H_0to1": torch.from_numpy(H01).float(),
        }


class Homographies(BaseDataset):
    default_conf = {
        "data_dir": None,  # a folder of images (searched recursively)
        "image_list": None,  # optional text file of paths relative to data_dir
        "exclude": [],  # substrings of paths to leave out (e.g. an evaluation image)
        "download": None,  # "revisitop1m" to fetch the standard pre-training set into data_dir
        "shuffle_seed": 0,
        "train_size": 10000,  # pairs per training epoch (images reused if fewer)
        "val_size": 100,  # images held out for validation
        "val_pairs": None,  # pairs per validation run (default: val_size)
        "load_size": 1024,  # images are decoded at most this large (long side) before warping
        "grayscale": False,
        "right_only": False,  # view 0 is the unwarped image
        "reseed": True,  # new training views every epoch
        "homography": {
            "difficulty": 0.7,
            "translation": 1.0,
            "max_angle": 45.0,
            "min_convexity": 0.05,
            "patch_shape": [640, 480],
        },
        "photometric": {"name": "lg", "p": 0.95},
    }
    splits = ("train", "val")

    def _init(self, conf) -> None:
        if conf.data_dir is None:
            raise ConfigError("data.data_dir: set it to a folder of images")
        self.root = Path(conf.data_dir).expanduser()
        if conf.download == "revisitop1m" and not (self.root / "jpg").exists():
            download_revisitop1m(self.root)
        elif conf.download not in (None, "revisitop1m"):
            raise ConfigError(
                f"data.download: unknown dataset '{conf.download}' (valid: revisitop1m)"
            )
        if conf.download == "revisitop1m":
            self.root = self.root / "jpg"
        names = list_images(self.root, conf.image_list, conf.exclude)
        rng = np.random.default_rng(conf.shuffle_seed)
        names = [names[i] for i in rng.permutation(len(names))]
        if len(names) <= conf.val_size:
            raise DatasetError(
                f"image folder {self.root} has {len(names)} images; "
                f"need more than data.val_size={conf.val_size}"
            )
        self.names = {"val": names[: conf.val_size], "train": names[conf.val_size :]}
        self.photometric = Photometric(
            conf.photometric.name, conf.photometric.p, rgb=not conf.grayscale
        )
        logger.info(
            "homographies: %d training / %d validation images in %s",
            len(self.names["train"]),
            len(self.names["val"]),
            self.root,
        )

    def get_dataset(self, split: str) -> Dataset:
        if split not in self.splits:
            raise ConfigError(
                f"homographies has no split '{split}' (valid: {', '.join(self.splits)})"
            )
        size = (
            self.conf.train_size
            if split == "train"
            else (self.conf.val_pairs or self.conf.val_size)
        )
        return _HomographyPairs(self, self.names[split], size, split)
