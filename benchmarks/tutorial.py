"""The tutorial's own code, as it wrote it, for the baselines (nothing is ever deleted here).

The "happy vs sad" tutorial cleans its folder with cv2.imread plus imghdr.what per file
(deleting what imghdr does not call jpeg/jpg/bmp/png) and loads it with
`tf.keras.utils.image_dataset_from_directory` followed by `map(lambda x, y: (x/255, y))`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

if __name__ == "__main__":  # run as a process of its own (bench_peers.py): find tests/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from imghdr_compat import what  # tests/: imghdr's rules, which Python 3.13 removed

IMAGE_EXTS = ["jpeg", "jpg", "bmp", "png"]


@dataclass(frozen=True)
class CleanupCounts:
    """What the tutorial's loop saw: files, files it would delete, files cv2 could not read."""

    n_files: int
    n_would_delete: int
    n_unreadable: int


def tutorial_cleanup(data_dir: Path) -> CleanupCounts:
    """The tutorial's clean-up loop, counting what it would `os.remove` instead of removing.

    Only class folders are walked: the tutorial's own loop raises NotADirectoryError on a
    file beside them (renotte's SOURCE.md).
    """
    n_files = n_would_delete = n_unreadable = 0
    for image_class in os.listdir(data_dir):
        class_dir = os.path.join(data_dir, image_class)
        if not os.path.isdir(class_dir):
            continue
        for image in os.listdir(class_dir):
            image_path = os.path.join(class_dir, image)
            n_files += 1
            try:
                img = cv2.imread(image_path)
                tip = what(Path(image_path))
                if img is None:
                    n_unreadable += 1
                if tip not in IMAGE_EXTS:
                    n_would_delete += 1  # the tutorial: os.remove(image_path)
            except Exception:
                n_would_delete += 1  # the tutorial prints 'Issue with image ...'
    return CleanupCounts(n_files, n_would_delete, n_unreadable)


def tutorial_dataset(data_dir: Path, image_size: int = 256, seed: int = 0) -> Any:
    """The tutorial's input pipeline: image_dataset_from_directory, then x/255."""
    import tensorflow as tf

    data = tf.keras.utils.image_dataset_from_directory(
        str(data_dir), image_size=(image_size, image_size), batch_size=32, seed=seed, verbose=False
    )
    return data.map(lambda x, y: (x / 255, y))


if __name__ == "__main__":
    # `python tutorial.py DATA`: the clean-up loop as a whole process, as a user runs it
    # (its imports counted); one JSON line of its counts
    counts = tutorial_cleanup(Path(sys.argv[1]))
    print(json.dumps({"n_files": counts.n_files, "n_would_delete": counts.n_would_delete}))
