"""Built-in datasets: the embedded PhotoDigits default, and user data as an .npz file or an image folder."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..api import Dataset, ImageSet, LoadedDataset, Option
from ..checks import check_label_array
from ..errors import DataError
from ..hookspecs import hookimpl


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class PhotoDigits(Dataset):
    name = "photodigits"
    description = ("Embedded default: scikit-learn handwritten digits composited on bundled photographs, 32 px "
                   "(rendered at 64), 10 classes, 6,000 train / 2,000 test (no download)")
    options = {
        "image_size": Option(int, 32, "32: the zoo encoders' input (the 64 px render downsampled as the encoders "
                                      "resize; corruptions then use CIFAR-10-C's table) or 64: the render itself "
                                      "(ImageNet-C's table)", choices=(32, 64)),
        "train_size": Option(int, 6000, "number of train images", minimum=10),
        "test_size": Option(int, 2000, "number of test images (2,000 gives ~±2 point 95% intervals)", minimum=1),
        "render_seed": Option(int, 0, "seed of the rendering; fixed so every run sees the same images"),
    }

    def load(self, seed: int) -> LoadedDataset:
        from ..datasets import photodigits as pd

        arrays = _cached_render(self.opts)
        return LoadedDataset(train=ImageSet(arrays["x_train"], arrays["y_train"]),
                             test=ImageSet(arrays["x_test"], arrays["y_test"]), class_names=pd.CLASS_NAMES,
                             fingerprint=_fingerprint(*arrays.values()),
                             provenance={**pd.provenance(self.opts["image_size"]), **self.opts})


def _render_splits(opts: dict) -> tuple[Any, Any]:
    """The train and test splits; each has its own seeded stream, so the test split renders in a forked process
    while this one renders train (one core each: the default's render took 11.9 s instead of 15.8 s). The child
    only composites (numpy and PIL); the downsampling to ``image_size`` runs here (``engine.fork_beside``)."""
    import dataclasses

    from ..datasets import photodigits as pd
    from ..engine import fork_beside

    size = opts["image_size"]
    pd.load_material()  # before the fork: the child inherits the decoded photographs (~2 s to load)
    test, train = fork_beside(pd.build_split, ("test", opts["test_size"], opts["render_seed"]),  # at the render size
                              lambda: pd.build_split("train", opts["train_size"], opts["render_seed"], stored_size=size))
    if size != pd.IMAGE_SIZE:
        test = dataclasses.replace(test, images=pd.downsample(test.images, size))
    return train, test


def _cached_render(opts: dict) -> dict[str, np.ndarray]:
    """Render once and keep the arrays in the run's cache (``jerc_eval.cache``, kind ``datasets``), keyed by
    the render version, the renderer's source and every option; a damaged entry is rendered again."""
    from .. import cache as cache_mod
    from ..datasets import photodigits as pd

    cache = cache_mod.active()
    names = ("x_train", "y_train", "x_test", "y_test")
    key = cache_mod.key("datasets", dataset="photodigits", render_version=pd.VERSION,
                        renderer=cache_mod.source_digest(PhotoDigits), options=cache_mod.canonical(
                            {k: opts[k] for k in ("train_size", "test_size", "render_seed", "image_size")}),
                        module=cache_mod.file_digest(Path(pd.__file__)))
    arrays = cache.get_arrays("datasets", key, names)
    if arrays is not None:
        return arrays
    tr, te = _render_splits(opts)
    arrays = {"x_train": tr.images, "y_train": tr.labels, "x_test": te.images, "y_test": te.labels}
    cache.put_arrays("datasets", key, arrays)
    return arrays


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class NpzDataset(Dataset):
    name = "npz"
    description = "Your own data: an .npz with x_train, y_train, x_test, y_test (uint8 NHWC or NHW images)"
    options = {"path": Option(Path, help=".npz file with x_train, y_train, x_test, y_test", must_exist=True,
                              path_kind="file")}

    def load(self, seed: int) -> LoadedDataset:
        path = self.opts["path"]
        fix = "save x_train, y_train, x_test, y_test with numpy.savez"
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{path} is not a readable .npz ({first[:120]}); {fix}") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            what = f"a single {z.dtype} array of shape {z.shape} (.npy)" if isinstance(z, np.ndarray) else "not an .npz"
            raise DataError(f"{path} is {what}, not an .npz archive of the four splits; {fix}")
        with z:
            absent = [k for k in NPZ_ARRAYS if k not in z.files]
            if absent:
                raise DataError(f"{path} has no array {', '.join(absent)} (it holds {', '.join(z.files) or 'nothing'})"
                                f"; {fix}")
            try:
                arrays = {k: z[k] for k in NPZ_ARRAYS}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(f"{path} is truncated or damaged ({first[:120]}); {fix}") from None
        for split in ("train", "test"):
            labels = arrays[f"y_{split}"]
            check_label_array(labels, f"npz {split}", f"{path} y_{split}")
        y_train, y_test = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
        present = np.union1d(y_train, y_test)
        if len(present) and present.min() >= 0 and present[-1] + 1 > len(present):
            # labels are indices 0..K-1: a gap (or a stray 10**6) would allocate a class nothing belongs to
            absent_cls = np.setdiff1d(np.arange(min(int(present[-1]) + 1, len(present) + 3)), present)
            raise DataError(f"{path} labels are not 0..K-1: they run up to {int(present[-1])} but only "
                            f"{len(present)} values occur (no class {', '.join(map(str, absent_cls[:3]))}); "
                            f"relabel with numpy.unique(y, return_inverse=True)")
        n_classes = int(present[-1]) + 1 if len(present) else 0
        return LoadedDataset(ImageSet(arrays["x_train"], y_train), ImageSet(arrays["x_test"], y_test),
                             tuple(str(i) for i in range(n_classes)), _fingerprint(*arrays.values()),
                             {"name": "npz", "path": str(path)})


class ImageFolder(Dataset):
    name = "imagefolder"
    description = "Your own data: ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/* (class = folder name)"
    options = {"root": Option(Path, help="folder holding train/ and test/", must_exist=True, path_kind="folder"),
               "image_size": Option(int, 0, "resize every image to this square size; 0 keeps the files' size",
                                    minimum=0)}

    def load(self, seed: int) -> LoadedDataset:
        root = Path(self.opts["root"])
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else []
        if not classes:
            raise DataError(f"{root} has no train/<class>/ folders; lay images out as ROOT/train/<class>/<image>")
        test_only = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in classes) \
            if (root / "test").is_dir() else []
        classes = sorted(classes + test_only)  # a test class without train images: warned about, still scored
        train, test = self._split(root / "train", classes), self._split(root / "test", classes)
        return LoadedDataset(train, test, tuple(classes), _fingerprint(train.images, train.labels, test.images,
                                                                      test.labels), {"name": "imagefolder", "root": str(root)})

    def _split(self, folder: Path, classes: list[str]) -> ImageSet:
        from PIL import Image

        images, labels = [], []
        for label, cls in enumerate(classes):
            for f in sorted((folder / cls).glob("*")) if (folder / cls).is_dir() else []:
                if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
                    continue
                try:
                    with Image.open(f) as im:
                        im = im.convert("RGB")  # decodes every pixel: a truncated file fails here
                        if self.opts["image_size"]:
                            im = im.resize((self.opts["image_size"],) * 2, Image.BICUBIC)
                        images.append(np.asarray(im))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise DataError(f"image {f} is corrupt or truncated ({first[:100]}); replace or remove the "
                                    f"file") from None
                labels.append(label)
        if not images:
            raise DataError(f"{folder} holds no images; add ROOT/{folder.name}/<class>/<image> files")
        if len({im.shape for im in images}) > 1:
            raise DataError(f"images under {folder} differ in size; pass -o image_size N to resize them")
        return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64))


@hookimpl
def register_datasets(register: Any) -> None:
    for cls in (PhotoDigits, NpzDataset, ImageFolder):
        register(cls)
