"""A tiny synthetic corpus in the layout of the de-en NMT corpus.

Every split has the arrays of `autoloss_models.nmt_data.NmtSplit`: source
ids [n, S], target_in [n, T] starting with BOS, target_out [n, T] ending
with EOS, pos and lemma labels [n, S], all right-padded with 0. The
target copies the source shifted by an offset, and the labels are
functions of the source id, so all three tasks can be learned.
"""

import dataclasses

import numpy as np

BOS, EOS = 1, 2
SOURCE_VOCABULARY = 16
TARGET_OFFSET = 3
LENGTH = 6


@dataclasses.dataclass
class TinySplit:
    source: np.ndarray
    target_in: np.ndarray
    target_out: np.ndarray
    pos: np.ndarray
    lemma: np.ndarray
    german: list
    english: list


@dataclasses.dataclass
class TinyCorpus:
    train: TinySplit
    valid: TinySplit
    test: TinySplit
    source_vocabulary: list
    target_vocabulary: list
    pos_tags: list
    lemma_classes: list

    def detokenize_target(self, ids):
        return " ".join(self.target_vocabulary[int(i)] for i in ids)


def tiny_split(count, rng):
    """Return `count` synthetic sentence pairs of 2 to LENGTH - 1 tokens."""
    source = np.zeros((count, LENGTH), "int32")
    target_in = np.zeros((count, LENGTH), "int32")
    target_out = np.zeros((count, LENGTH), "int32")
    for row in range(count):
        length = int(rng.integers(2, LENGTH))
        words = rng.integers(1, SOURCE_VOCABULARY, size=length)
        source[row, :length] = words
        translation = words + TARGET_OFFSET
        target_in[row, 0] = BOS
        target_in[row, 1:length + 1] = translation
        target_out[row, :length] = translation
        target_out[row, length] = EOS
    pos = np.where(source > 0, source % 4 + 1, 0).astype("int32")
    lemma = np.where(source > 0, source % 3 + 1, 0).astype("int32")
    return TinySplit(source, target_in, target_out, pos, lemma,
                     german=[""] * count, english=[""] * count)


def make_tiny_corpus(seed=0, train=64, valid=16, test=16):
    """Return a `TinyCorpus` with the given split sizes."""
    rng = np.random.default_rng(seed)
    target_size = SOURCE_VOCABULARY + TARGET_OFFSET
    return TinyCorpus(
        train=tiny_split(train, rng), valid=tiny_split(valid, rng),
        test=tiny_split(test, rng),
        source_vocabulary=[f"s{i}" for i in range(SOURCE_VOCABULARY)],
        target_vocabulary=["[PAD]", "[BOS]", "[EOS]"]
        + [f"t{i}" for i in range(3, target_size)],
        pos_tags=["-", "A", "B", "C", "D"],
        lemma_classes=["-", "x", "y", "z"],
    )
