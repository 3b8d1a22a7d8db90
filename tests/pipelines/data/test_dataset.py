import numpy as np
import pytest

from pipelines.data.dataset import build_dataset, iter_samples, manifest_hash, read_manifest, read_split
from pipelines.data.augment import resize_pair
from pipelines.data.dataset import training_arrays
from pipelines.data.ingestion import ingest
from tests.datasets import make_tiny_dataset

SIZE = 32


@pytest.fixture(scope="module")
def tiny(ray_session, tmp_path_factory):
    from pipelines.runtime import configure_data_context

    # Read as training and evaluation read: Ray Data's default Parquet reader (datasource V2)
    # costs 2-3 s of reader actors per read here, V1 0.2 s, and these tests read a few dozen times.
    configure_data_context()
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), count=24, size=48, seed=0)


def take(dataset) -> dict[str, np.ndarray]:
    batches = list(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    merged = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    order = np.argsort(merged["id"])
    return {key: value[order] for key, value in merged.items()}


def test_every_split_is_populated_and_matches_the_manifest(tiny):
    totals = read_manifest(tiny)["totals"]
    assert min(totals.values()) > 0 and sum(totals.values()) == 24
    for split, count in totals.items():
        assert len(list(iter_samples(tiny, split))) == count
    assert build_dataset(tiny, "val", SIZE, augment=False).count() == totals["val"]


def test_training_batches_travel_as_uint8_and_become_model_ready(tiny):
    batch = take(build_dataset(tiny, "train", SIZE, augment=True, seed=0, epoch=0))
    n = read_manifest(tiny)["totals"]["train"]
    assert batch["image"].shape == (n, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
    assert batch["mask"].shape == (n, SIZE, SIZE) and batch["mask"].dtype == np.uint8
    images, masks = training_arrays(batch, "imagenet")
    assert images.shape == (n, 3, SIZE, SIZE) and images.dtype == np.float32
    assert masks.shape == (n, 1, SIZE, SIZE) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0} and masks.any()
    assert -3 < images.min() < 0 < images.max() < 3  # ImageNet-normalised
    assert set(batch["defect_class"]) <= {"scratch", "inclusion", "patch", "crack", "blowhole", "none"}


def test_epochs_differ_and_a_seed_reproduces(tiny):
    epoch0 = take(build_dataset(tiny, "train", SIZE, augment=True, seed=0, epoch=0))
    again = take(build_dataset(tiny, "train", SIZE, augment=True, seed=0, epoch=0))
    epoch1 = take(build_dataset(tiny, "train", SIZE, augment=True, seed=0, epoch=1))
    assert np.array_equal(epoch0["image"], again["image"])
    assert np.array_equal(epoch0["mask"], again["mask"])
    assert not np.array_equal(epoch0["image"], epoch1["image"])


def test_one_dataset_draws_each_epoch_from_the_run_clock(tiny):
    from pipelines.data.epochs import set_epoch, start_epoch_clock

    clock = start_epoch_clock("epoch-clock-dataset-test")
    one_dataset = build_dataset(tiny, "train", SIZE, augment=True, seed=0, epoch=clock)
    for epoch in (0, 1, 2):
        set_epoch(clock, epoch)
        drawn = take(one_dataset)  # the same dataset object, re-executed
        expected = take(build_dataset(tiny, "train", SIZE, augment=True, seed=0, epoch=epoch))
        assert np.array_equal(drawn["image"], expected["image"]) and np.array_equal(drawn["mask"], expected["mask"])


def test_materialised_rows_give_the_same_epochs_as_the_folder(tiny):
    encoded = read_split(tiny, "train").materialize()  # what training shares across epochs
    for epoch in (0, 1):
        from_rows = take(build_dataset(encoded, "train", SIZE, augment=True, seed=0, epoch=epoch))
        from_folder = take(build_dataset(tiny, "train", SIZE, augment=True, seed=0, epoch=epoch))
        assert np.array_equal(from_rows["image"], from_folder["image"])
        assert np.array_equal(from_rows["mask"], from_folder["mask"])


def test_evaluation_splits_are_not_augmented(tiny):
    batch = take(build_dataset(tiny, "val", SIZE, augment=False, epoch=3))
    samples = sorted(iter_samples(tiny, "val"), key=lambda s: s.id)
    assert list(batch["id"]) == [s.id for s in samples]
    for row_mask, sample in zip(batch["mask"], samples):
        _, expected = resize_pair(sample.image, sample.mask, SIZE)
        assert np.array_equal(row_mask, expected)


def test_iter_samples_gives_decoded_originals(tiny):
    samples = list(iter_samples(tiny, "test"))
    assert len(samples) == read_manifest(tiny)["totals"]["test"]
    for sample in samples:
        assert sample.image.shape == (sample.height, sample.width, 3) == (48, 48, 3)
        assert sample.image.dtype == np.uint8 and set(np.unique(sample.mask)) <= {0, 255}
        assert sample.mask.any() == (sample.defect_class != "none")


def test_manifest_hash_is_stable_across_paths_and_tracks_content(tiny, tmp_path):
    copy = ingest(tiny.parent / "synth", tmp_path / "copy", "folder", seed=0, val_fraction=0.2,
                  test_fraction=0.2).dataset_dir
    assert manifest_hash(copy) == manifest_hash(tiny)
    assert len(manifest_hash(tiny)) == 16
    reshuffled = ingest(tiny.parent / "synth", tmp_path / "other", "folder", seed=1).dataset_dir
    assert manifest_hash(reshuffled) != manifest_hash(tiny)


def test_bad_arguments_are_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset(tiny, "training", SIZE, augment=False)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_dataset(tiny, "train", 50, augment=False)
    with pytest.raises(FileNotFoundError, match="not an ingested dataset"):
        build_dataset(tmp_path, "train", SIZE, augment=False)
    with pytest.raises(FileNotFoundError, match="jaffnet ingest"):
        list(iter_samples(tmp_path, "test"))
