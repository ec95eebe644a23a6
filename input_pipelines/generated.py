"""What the embedded (generated) demo datasets' TFDS builders share: the features of a generated
video and the two splits drawn from a config's seed. A builder subclasses GeneratedVideos and
gives CONFIGS (name -> {seed, num_train, num_validation, ...}), `features()` and
`make(seed, index, config) -> example`."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def video_features(label: tfds.features.FeatureConnector | None = None,
                   **extra: tfds.features.FeatureConnector) -> dict:
    """The features every generated video has: encoded mp4 bytes, label (an int by default),
    caption, video_id, num_frames, fps; plus `extra`."""
    return {"video": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded mp4 bytes
            "label": label or tfds.features.Scalar(dtype=np.int32),
            "caption": tfds.features.Text(), "video_id": tfds.features.Text(),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
            "fps": tfds.features.Scalar(dtype=np.float32), **extra}


def seconds() -> tfds.features.Scalar:
    """A duration feature (float32 seconds)."""
    return tfds.features.Scalar(dtype=np.float32)


class GeneratedVideos(tfds.core.GeneratorBasedBuilder):
    """A generated dataset: 'train' from seed 2s, 'validation' from seed 2s + 1 (s: the config's
    seed), examples a deterministic function of (seed, index)."""

    CONFIGS: dict[str, dict] = {}

    def features(self) -> dict:
        raise NotImplementedError

    def make(self, seed: int, index: int, config: dict) -> dict:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=type(self).__doc__,
                                     features=tfds.features.FeaturesDict(self.features()))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded: the videos are generated
        c = self.CONFIGS[self.builder_config.name]
        return {"train": self._generate_examples(c["seed"] * 2, c["num_train"], c),
                "validation": self._generate_examples(c["seed"] * 2 + 1, c["num_validation"], c)}

    def _generate_examples(self, seed: int, count: int, c: dict):
        for i in range(count):
            ex = self.make(seed, i, c)
            yield ex["video_id"], ex
