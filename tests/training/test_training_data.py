import torch

from latentcodec.data.crops import BatchStream, RandomCropDataset, ResumableDistributedSampler, find_images


def test_ranks_split_each_epoch_without_overlap():
    samplers = [ResumableDistributedSampler(10, seed=5, rank=r, world_size=2) for r in range(2)]
    keys = [list(s) for s in samplers]
    assert len(keys[0]) == len(keys[1]) == 5
    indices = [k.index for k in keys[0] + keys[1]]
    assert sorted(indices) == list(range(10))
    augment_seeds = {k.augment_seed for k in keys[0] + keys[1]}
    assert len(augment_seeds) == 10


def test_epochs_reshuffle():
    sampler = ResumableDistributedSampler(50, seed=0)
    first = [k.index for k in sampler]
    sampler.set_position(1, 0)
    assert [k.index for k in sampler] != first


def test_stream_resumes_mid_epoch_with_identical_batches(image_folder):
    dataset = RandomCropDataset(find_images([image_folder]), crop_size=32)
    reference = BatchStream(dataset, batch_size=3, seed=7, rank=0, world_size=1)
    expected = [reference.next_batch() for _ in range(6)]  # crosses the 8-image epoch boundary
    stream = BatchStream(dataset, batch_size=3, seed=7, rank=0, world_size=1)
    for _ in range(2):
        stream.next_batch()
    state = stream.state_dict()
    restarted = BatchStream(dataset, batch_size=3, seed=7, rank=0, world_size=1)
    restarted.load_state_dict(state)
    for batch in expected[2:]:
        assert torch.equal(restarted.next_batch(), batch)


def test_crops_are_in_range_and_random(image_folder):
    dataset = RandomCropDataset(find_images([image_folder]), crop_size=48)
    stream = BatchStream(dataset, batch_size=4, seed=1, rank=0, world_size=1)
    batch = stream.next_batch()
    assert batch.shape == (4, 3, 48, 48)
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    again = BatchStream(dataset, batch_size=4, seed=2, rank=0, world_size=1).next_batch()
    assert not torch.equal(batch, again)


def test_small_images_are_enlarged_to_the_crop(image_folder):
    dataset = RandomCropDataset(find_images([image_folder]), crop_size=128)  # images are 96x80
    assert BatchStream(dataset, 2, 0, 0, 1).next_batch().shape == (2, 3, 128, 128)


def test_holdout_is_evenly_spaced_disjoint_and_bounded():
    import pytest

    from latentcodec.data.crops import split_holdout
    from latentcodec.errors import ConfigError

    files = [f"{folder}/{i:03d}.png" for folder in ("a", "b", "c", "d") for i in range(25)]
    train, held = split_holdout(files, 4)
    assert len(held) == 4 and len(train) == 96 and not set(train) & set(held)
    assert {name.split("/")[0] for name in held} == {"a", "b", "c", "d"}  # one from each source folder
    assert split_holdout(files, 0) == (files, [])
    with pytest.raises(ConfigError, match="withhold all"):
        split_holdout(files[:3], 3)


def test_holdout_settings_are_checked(tmp_path, image_folder):
    import pytest

    from latentcodec.errors import ConfigError
    from latentcodec.training.config import load_config
    from training_helpers import tiny_config, write_config

    def load(**extra):
        return load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, image_folder, "latent", **extra)))

    with pytest.raises(ConfigError, match="data.holdout must be"):
        load(**{"data.holdout": -1})
    with pytest.raises(ConfigError, match="hold some training images out"):
        load(**{"data.holdout": 0, "validation.every": 5, "validation.image_dir": "holdout"})
    assert load(**{"data.holdout": 0, "validation.every": 0}).data.holdout == 0
