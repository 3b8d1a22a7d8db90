"""Reading an ingested dataset: Ray Data batches for training, plain samples for evaluation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaffnet.contract import check_image_size, check_input_mode
from jaffnet.frames import model_inputs
from jaffnet.preprocess import to_rgb
from pipelines import storage
from pipelines.data.augment import AugmentConfig, augment_pair, resize_pair, sample_rng
from pipelines.codec import decode_image, decode_mask
from pipelines.data.ingestion import DATA_FOLDER, MANIFEST
from pipelines.data.splits import SPLITS

_COLUMNS = ["id", "defect_class", "split", "image", "mask"]


@dataclass
class Sample:
    id: str
    defect_class: str
    image: np.ndarray  # uint8 RGB (height, width, 3), original resolution
    mask: np.ndarray  # uint8 (height, width) in {0, 255}
    height: int
    width: int


def _data_dir(dataset_dir: str | Path) -> str:
    """The dataset's Parquet folder (a local path or a URI), checked to exist."""
    data = storage.join(dataset_dir, DATA_FOLDER)
    if not storage.is_dir(data) or not storage.is_file(storage.join(dataset_dir, MANIFEST)):
        raise FileNotFoundError(f"{dataset_dir} is not an ingested dataset "
                                f"(expected {MANIFEST} and {DATA_FOLDER}/); run `jaffnet ingest`")
    return data


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")


def read_manifest(dataset_dir: str | Path) -> dict:
    _data_dir(dataset_dir)
    return json.loads(storage.read_text(storage.join(dataset_dir, MANIFEST)))


def manifest_hash(dataset_dir: str | Path) -> str:
    """A short, stable id of the dataset's content and splits (for MLflow tags).

    It hashes sample ids, classes, splits and pixel data, not paths or timestamps, so
    re-ingesting the same files with the same seed gives the same value.
    """
    return read_manifest(dataset_dir)["content_hash"][:16]


def dataset_list(data: str | Path | Sequence[str | Path]) -> list[str]:
    """One dataset or several (``--data base --data line``) as resolved locations, each checked to be
    an ingested dataset and given once."""
    dirs = [storage.resolve(location) for location in one_or_more(data)]
    if not dirs:
        raise ValueError("no dataset given")
    repeated = sorted({d for d in dirs if dirs.count(d) > 1})
    if repeated:
        raise ValueError(f"dataset {repeated[0]} is given twice")
    for location in dirs:
        _data_dir(location)
    return dirs


def one_or_more(data: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """One dataset location, or several, as a list."""
    return [data] if isinstance(data, (str, Path)) else list(data)


def mix_manifest_hash(dataset_dirs: Sequence[str | Path]) -> str:
    """:func:`manifest_hash` of one dataset; for several, one hash of all their contents (in any order),
    so two runs on the same mix record the same value and a run on one of them another."""
    if len(dataset_dirs) == 1:
        return manifest_hash(dataset_dirs[0])
    contents = sorted(read_manifest(location)["content_hash"] for location in dataset_dirs)
    return hashlib.sha256("\n".join(["mix", *contents]).encode()).hexdigest()[:16]


def mix_sample_id(position: int, sample_id: str, count: int) -> str:
    """A sample's id in a mix of ``count`` datasets: prefixed with the dataset's position, since two
    datasets may use the same ids (e.g. both from ``jaffnet synth``); unchanged for one dataset."""
    return sample_id if count == 1 else f"{position}:{sample_id}"


def prepare_batch(batch: dict[str, np.ndarray], image_size: int, augment: bool, seed: int,
                  epoch: int | str, config: AugmentConfig | None, input_mode: str = "resize") -> dict[str, np.ndarray]:
    """Ray Data UDF: encoded rows -> model-size uint8 RGB images ``(N, S, S, 3)`` and 0/255
    masks ``(N, S, S)`` (new arrays, never in-place). uint8 is a quarter of float32 through
    the object store; the trainer normalises (``training_arrays``).

    ``epoch``: an int, or the name of the run's ``EpochClock`` (one dataset for all epochs).
    """
    if augment and isinstance(epoch, str):
        from pipelines.data.epochs import current_epoch  # imports Ray: only where a clock is used

        epoch = current_epoch(epoch)
    images, masks = [], []
    for sample_id, image_bytes, mask_bytes in zip(batch["id"], batch["image"], batch["mask"]):
        image, mask = decode_image(image_bytes), decode_mask(mask_bytes)
        if augment:
            image, mask = augment_pair(image, mask, image_size, sample_rng(seed, epoch, sample_id), config,
                                       input_mode)
        else:
            image, mask = resize_pair(image, mask, image_size)
        images.append(to_rgb(image))
        masks.append(mask)
    return {
        "image": np.stack(images),
        "mask": np.stack(masks),
        "id": np.asarray(batch["id"], dtype=object).copy(),
        "defect_class": np.asarray(batch["defect_class"], dtype=object).copy(),
    }


def training_arrays(batch: dict[str, np.ndarray], normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """A prepared batch -> float32 model inputs ``(N, 3, S, S)`` normalised as the input
    contract's ``normalization`` says, and float32 masks ``(N, 1, S, S)`` in {0, 1}."""
    images = model_inputs(list(batch["image"]), normalization)
    return images, (np.asarray(batch["mask"])[:, None] >= 128).astype(np.float32)


def _prepare_batch_in_worker(batch: dict[str, np.ndarray], **kwargs) -> dict[str, np.ndarray]:
    """A Ray Data task holds a fraction of a CPU: keep OpenCV from spawning a thread per core."""
    import cv2

    cv2.setNumThreads(1)
    return prepare_batch(batch, **kwargs)


def read_split(dataset_dir: str | Path | Sequence[str | Path], split: str, *, rows_per_block: int = 16):
    """A lazy Ray Dataset of one split's encoded rows (``id``, ``defect_class``, ``split``,
    PNG ``image`` and ``mask``), in blocks of ``rows_per_block`` rows; of several datasets,
    the union of their splits.

    Materialise it to decode many epochs from memory: reading and re-blocking the
    Parquet files costs a few dozen small tasks per pass.
    """
    import ray
    from ray.data.expressions import col

    _check_split(split)
    dirs = one_or_more(dataset_dir)
    parts = []
    for location in dirs:
        # An explicit filesystem (local or object store) skips Ray's own detection. Column
        # selection and the split predicate are pushed down into the Parquet scan.
        filesystem, path = storage.filesystem(_data_dir(location))
        rows = ray.data.read_parquet(path, filesystem=filesystem).select_columns(_COLUMNS)
        parts.append(rows.filter(expr=col("split") == split))
    rows = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    # Small files arrive as one block; batch-sized blocks let several tasks share the work.
    return rows.repartition(target_num_rows_per_block=rows_per_block)


def build_dataset(source, split: str, image_size: int, *, augment: bool, input_mode: str = "resize",
                  seed: int = 0, epoch: int | str = 0, config: AugmentConfig | None = None,
                  num_cpus: float = 0.5, batch_size: int = 64):
    """A lazy Ray Dataset of one split with columns ``image`` uint8 (S, S, 3) RGB, ``mask``
    uint8 (S, S) 0/255, ``id`` and ``defect_class``: the training input (``training_arrays``
    turns a batch into model tensors).

    ``source``: a dataset folder, or that split's rows from :func:`read_split` (e.g.
    materialised once and shared by every epoch). ``augment=True`` applies the training
    augmentation drawn from ``(seed, epoch, id)`` for the model's ``input_mode`` (resized
    frames or native tiles); ``epoch`` may name an ``EpochClock`` so that one dataset,
    re-executed, gives every epoch its own draw. ``augment=False`` (``resize`` mode
    only) gives each frame resized as the contract resizes it; scoring whole frames goes
    through ``jaffnet.frames`` instead. Nothing executes until the dataset is consumed; the
    fractional ``num_cpus`` leaves room beside training workers.
    """
    _check_split(split)
    check_image_size(image_size)
    check_input_mode(input_mode, "input_mode")
    if not augment and input_mode != "resize":
        raise ValueError("un-augmented rows exist for the resize input mode only; "
                         "cut whole frames into tiles with jaffnet.frames.predict_frames")
    if augment and config is None:
        config = AugmentConfig()  # the defaults; training passes its config's augment section
    rows = read_split(source, split, rows_per_block=batch_size) if isinstance(source, (str, Path)) else source
    return rows.map_batches(
        _prepare_batch_in_worker,
        fn_kwargs={"image_size": image_size, "augment": augment, "seed": seed, "epoch": epoch,
                   "config": config, "input_mode": input_mode},
        batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus,
    )


def iter_encoded_batches(dataset_dir: str | Path, split: str,
                         batch_size: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """Rows of one split as encoded column batches, without Ray, in a stable order."""
    import pyarrow.dataset as pads

    _check_split(split)
    filesystem, path = storage.filesystem(_data_dir(dataset_dir))
    source = pads.dataset(path, filesystem=filesystem, format="parquet")
    for batch in source.to_batches(columns=_COLUMNS, filter=pads.field("split") == split,
                                   batch_size=batch_size):
        if batch.num_rows:
            yield {name: np.array(values, dtype=object) for name, values in batch.to_pydict().items()}


def iter_samples(dataset_dir: str | Path | Sequence[str | Path], split: str,
                 keep: Callable[[str], bool] | None = None) -> Iterator[Sample]:
    """Decoded originals of one split, without Ray, in a stable order; with ``keep``, only
    the ids it accepts are decoded (e.g. one validation rank's share). Several datasets: the
    split of each in turn, ids as :func:`mix_sample_id` makes them."""
    dirs = one_or_more(dataset_dir)
    for position, location in enumerate(dirs):
        for batch in iter_encoded_batches(location, split):
            for i, stored_id in enumerate(batch["id"]):
                sample_id = mix_sample_id(position, str(stored_id), len(dirs))
                if keep is not None and not keep(sample_id):
                    continue
                image = to_rgb(decode_image(batch["image"][i]))
                yield Sample(sample_id, batch["defect_class"][i], image, decode_mask(batch["mask"][i]),
                             image.shape[0], image.shape[1])
