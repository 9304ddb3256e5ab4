"""Tiny on-disk fixtures that mimic each dataset's official layout file for file.

Every fixture returns ``(root, expected)`` where ``expected`` holds the true class names and split sizes the
loader must report. Images are 6x5 pixels; the metadata files have the official names, columns and .mat
variables (written with scipy.io.savemat).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, seed: int = 0, size=(6, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def write_lines(path: Path, lines: List[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ CUB

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def make_cub(root: Path, n_train: int = 6, n_test: int = 3) -> Dict:
    rows = []  # (image_id, relpath, class_id, is_train)
    iid = 1
    for cid, cname in enumerate(CUB_CLASSES, 1):
        for k in range(n_train + n_test):
            rel = f"{cname}/{cname.split('.')[1]}_{k:04d}_{iid}.jpg"
            write_image(root / "images" / rel, seed=iid)
            rows.append((iid, rel, cid, 1 if k < n_train else 0))
            iid += 1
    write_lines(root / "classes.txt", [f"{i} {c}" for i, c in enumerate(CUB_CLASSES, 1)])
    write_lines(root / "images.txt", [f"{i} {rel}" for i, rel, _, _ in rows])
    # the other two tables in a different line order: the loader must join by image id
    write_lines(root / "image_class_labels.txt", [f"{i} {c}" for i, _, c, _ in reversed(rows)])
    write_lines(root / "train_test_split.txt", [f"{i} {t}" for i, _, _, t in rows[::2] + rows[1::2]])
    return {"classes": ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"],
            "train": n_train * 3, "test": n_test * 3, "rows": rows}


@pytest.fixture
def cub_root(tmp_path):
    root = tmp_path / "CUB_200_2011"
    return root, make_cub(root)


# ------------------------------------------------------------------------------------------------ Aircraft

AIRCRAFT = [("707-320", "Boeing 707", "Boeing"), ("A300B4", "A300", "Airbus"), ("Cessna 172", "Cessna 172", "Cessna"),
            ("737-200", "Boeing 737", "Boeing")]


def make_aircraft(root: Path, per_split=(2, 1, 2)) -> Dict:
    data = root / "data"
    variants = [a[0] for a in AIRCRAFT]
    families = sorted({a[1] for a in AIRCRAFT})
    makers = sorted({a[2] for a in AIRCRAFT})
    write_lines(data / "variants.txt", variants)
    write_lines(data / "families.txt", families)
    write_lines(data / "manufacturers.txt", makers)
    iid = 1034300
    lines = {(lvl, s): [] for lvl in ("variant", "family", "manufacturer") for s in ("train", "val", "test")}
    for v, fam, mk in AIRCRAFT:
        for split, n in zip(("train", "val", "test"), per_split):
            for _ in range(n):
                write_image(data / "images" / f"{iid:07d}.jpg", seed=iid)
                for lvl, name in (("variant", v), ("family", fam), ("manufacturer", mk)):
                    lines[(lvl, split)].append(f"{iid:07d} {name}")
                iid += 1
    for (lvl, split), ls in lines.items():
        write_lines(data / f"images_{lvl}_{split}.txt", ls)
    n = len(AIRCRAFT)
    return {"classes": variants, "families": families, "manufacturers": makers,
            "train": per_split[0] * n, "val": per_split[1] * n, "test": per_split[2] * n}


@pytest.fixture
def aircraft_root(tmp_path):
    root = tmp_path / "fgvc-aircraft-2013b"
    return root, make_aircraft(root)


# ------------------------------------------------------------------------------------------------ Pets

PETS = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]


def make_pets(root: Path, n_trainval: int = 4, n_test: int = 2) -> Dict:
    splits = {"trainval": [], "test": []}
    for cid, (breed, species) in enumerate(PETS, 1):
        for k in range(1, n_trainval + n_test + 1):
            name = f"{breed}_{k}"
            write_image(root / "images" / f"{name}.jpg", seed=cid * 100 + k)
            split = "trainval" if k <= n_trainval else "test"
            splits[split].append(f"{name} {cid} {species} {k}")
    for split, lines in splits.items():
        write_lines(root / "annotations" / f"{split}.txt", lines)
    return {"classes": ["Abyssinian", "American Bulldog", "Bengal"], "train": n_trainval * 3, "test": n_test * 3}


@pytest.fixture
def pets_root(tmp_path):
    root = tmp_path / "pets"  # any folder name works (not torchvision's "oxford-iiit-pet")
    return root, make_pets(root)


# ------------------------------------------------------------------------------------------------ Dogs

DOGS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02086240-Shih-Tzu"]


def _cell(strings: List[str]) -> np.ndarray:
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


def make_dogs(root: Path, n_train: int = 4, n_test: int = 2) -> Dict:
    from scipy.io import savemat

    lists = {"train": ([], []), "test": ([], [])}
    for label, folder in enumerate(DOGS, 1):
        wnid = folder.split("-")[0]
        for k in range(n_train + n_test):
            rel = f"{folder}/{wnid}_{k}.jpg"
            write_image(root / "Images" / rel, seed=label * 100 + k)
            split = "train" if k < n_train else "test"
            lists[split][0].append(rel)
            lists[split][1].append(label)
    for split, (files, labels) in lists.items():
        savemat(str(root / f"{split}_list.mat"), {
            "file_list": _cell(files), "annotation_list": _cell([f.rsplit(".", 1)[0] for f in files]),
            "labels": np.array(labels, dtype=np.float64).reshape(-1, 1)})
    return {"classes": ["Chihuahua", "Japanese spaniel", "Shih-Tzu"], "train": n_train * 3, "test": n_test * 3}


@pytest.fixture
def dogs_root(tmp_path):
    root = tmp_path / "StanfordDogs"
    return root, make_dogs(root)


# ------------------------------------------------------------------------------------------------ Cars

CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"]


def _annos(fnames: List[str], classes: List[int]) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    rec = np.empty((1, len(fnames)), dtype=[(f, object) for f in fields])
    for i, (f, c) in enumerate(zip(fnames, classes)):
        rec[0, i] = (np.uint8(1), np.uint8(1), np.uint8(5), np.uint8(4), np.uint8(c), f)
    return rec


def make_cars(root: Path, n_train: int = 3, n_test: int = 2) -> Dict:
    from scipy.io import savemat

    (root / "devkit").mkdir(parents=True, exist_ok=True)
    names = np.empty((1, len(CARS)), dtype=object)
    for i, n in enumerate(CARS):
        names[0, i] = n
    savemat(str(root / "devkit" / "cars_meta.mat"), {"class_names": names})
    for split, n, mat in (("train", n_train, root / "devkit" / "cars_train_annos.mat"),
                          ("test", n_test, root / "cars_test_annos_withlabels.mat")):
        fnames, classes = [], []
        for c in range(1, len(CARS) + 1):
            for _ in range(n):
                fname = f"{len(fnames) + 1:05d}.jpg"
                write_image(root / f"cars_{split}" / fname, seed=c * 10 + len(fnames))
                fnames.append(fname)
                classes.append(c)
        savemat(str(mat), {"annotations": _annos(fnames, classes)})
    return {"classes": CARS, "train": n_train * 3, "test": n_test * 3}


@pytest.fixture
def cars_root(tmp_path):
    root = tmp_path / "stanford_cars"
    return root, make_cars(root)


# ------------------------------------------------------------------------------------------------ Flowers

def make_flowers(root: Path, per_split=(2, 1, 1)) -> Dict:
    from scipy.io import savemat

    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    image_id = 1
    for c in range(1, 103):
        for key, n in zip(("trnid", "valid", "tstid"), per_split):
            for _ in range(n):
                write_image(root / "jpg" / f"image_{image_id:05d}.jpg", seed=image_id, size=(3, 3))
                labels.append(c)
                ids[key].append(image_id)
                image_id += 1
    # official files: 1 x N arrays (uint8 labels, uint16 ids)
    savemat(str(root / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    savemat(str(root / "setid.mat"), {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    return {"train": per_split[0] * 102, "val": per_split[1] * 102, "test": per_split[2] * 102}


@pytest.fixture
def flowers_root(tmp_path):
    root = tmp_path / "flowers-102"
    return root, make_flowers(root)


# ------------------------------------------------------------------------------------------------ DTD

DTD = ["banded", "blotchy", "zigzagged"]


def make_dtd(root: Path, partitions=(1, 2), per_split=(3, 1, 2)) -> Dict:
    n = sum(per_split)
    for c in DTD:
        for k in range(1, n + 1):
            write_image(root / "images" / c / f"{c}_{k:04d}.jpg", seed=k + 17 * len(c))
    for p in partitions:
        # partition p rotates which files go to which split
        order = [((k + p) % n) + 1 for k in range(n)]
        bounds = np.cumsum((0,) + tuple(per_split))
        for split, lo, hi in zip(("train", "val", "test"), bounds[:-1], bounds[1:]):
            write_lines(root / "labels" / f"{split}{p}.txt",
                        [f"{c}/{c}_{k:04d}.jpg" for c in DTD for k in order[lo:hi]])
    return {"classes": DTD, "train": per_split[0] * 3, "val": per_split[1] * 3, "test": per_split[2] * 3}


@pytest.fixture
def dtd_root(tmp_path):
    root = tmp_path / "dtd"
    return root, make_dtd(root)


# ------------------------------------------------------------------------------------------------ NABirds

NABIRDS_CLASSES = [(0, "Birds"), (1, "Perching Birds"), (2, "Ducks, Geese, and Swans"), (295, "Bewick's Wren"),
                   (314, "Mallard (Breeding male)"), (315, "Mallard (Female/Eclipse male)"), (400, "Unused Leaf")]
NABIRDS_HIERARCHY = [(1, 0), (2, 0), (295, 1), (314, 2), (315, 2), (400, 1)]
NABIRDS_LEAVES = [295, 314, 315]


def make_nabirds(root: Path, n_train: int = 3, n_test: int = 2) -> Dict:
    import uuid

    rows = []
    rnd = np.random.default_rng(0)
    for cid in NABIRDS_LEAVES:
        for k in range(n_train + n_test):
            iid = uuid.UUID(bytes=rnd.bytes(16)).hex
            rel = f"{cid:04d}/{iid}.jpg"
            write_image(root / "images" / rel, seed=cid + k)
            rows.append((iid, rel, cid, 1 if k < n_train else 0))
    write_lines(root / "classes.txt", [f"{i} {n}" for i, n in NABIRDS_CLASSES])
    write_lines(root / "hierarchy.txt", [f"{c} {p}" for c, p in NABIRDS_HIERARCHY])
    write_lines(root / "images.txt", [f"{i} {rel}" for i, rel, _, _ in rows])
    write_lines(root / "image_class_labels.txt", [f"{i} {c}" for i, _, c, _ in rows[::-1]])
    write_lines(root / "train_test_split.txt", [f"{i} {t}" for i, _, _, t in rows])
    return {"classes": ["Bewick's Wren", "Mallard (Breeding male)", "Mallard (Female/Eclipse male)"],
            "train": n_train * 3, "test": n_test * 3, "rows": rows}


@pytest.fixture
def nabirds_root(tmp_path):
    root = tmp_path / "nabirds"
    return root, make_nabirds(root)


# ------------------------------------------------------------------------------------------------ ImageFolder

IMAGEFOLDER = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "010.Red_winged_Blackbird"]


def make_imagefolder(root: Path, counts=None) -> Dict:
    counts = counts or {"train": 5, "val": 2, "test": 3}
    for split, n in counts.items():
        for ci, c in enumerate(IMAGEFOLDER):
            for k in range(n):
                ext = ".png" if k % 2 else ".jpg"
                # a seed per split too: the same bytes in two splits is a leak that build_splits refuses
                write_image(root / split / c / f"img_{k}{ext}", seed=ci * 50 + k + 1000 * list(counts).index(split))
    (root / "train" / IMAGEFOLDER[0] / "notes.txt").write_text("not an image")
    return {"classes": ["Black footed Albatross", "Laysan Albatross", "Red winged Blackbird"],
            **{s: n * len(IMAGEFOLDER) for s, n in counts.items()}}


@pytest.fixture
def imagefolder_root(tmp_path):
    root = tmp_path / "birds"
    return root, make_imagefolder(root)


@pytest.fixture
def builders():
    """The fixture builders by dataset name: ``builders["cub"](root) -> expected``."""
    return {"cub": make_cub, "aircraft": make_aircraft, "pets": make_pets, "dogs": make_dogs, "cars": make_cars,
            "flowers": make_flowers, "dtd": make_dtd, "nabirds": make_nabirds, "imagefolder": make_imagefolder}
