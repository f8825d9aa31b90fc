"""Million-AID: the on-disk layout of its pictures.

Under the data set's root::

    train/<L1>/<L2>/<name>.jpg
    train/<L1>/<L2>/<L3>/<name>.jpg
    test/<name>.jpg

A train picture's folders are its labels at levels 1 to 3 of the Million-AID category tree;
test pictures sit directly under ``test/``, unlabelled.
"""

from __future__ import annotations

TRAIN_FOLDER = "train"
TEST_FOLDER = "test"
# Split folder -> how many label folders (levels L1..L3) its pictures may sit under.
SPLIT_LABEL_DEPTHS: dict[str, tuple[int, ...]] = {TRAIN_FOLDER: (2, 3), TEST_FOLDER: (0,)}
IMAGE_SUFFIX = ".jpg"
