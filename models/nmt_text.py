"""Words, silver tags and WordPiece subwords for the German-English NMT task.

The pieces `autoloss_models.nmt_data` combines into a corpus:

- `split_words` cuts a sentence into words. Hyphenated compounds such as
  `US-Präsident`, which the TIGER treebank has as one token, and words with
  an apostrophe such as `geht's` stay whole, so the tagger gets tokens
  like those it was trained on.
- `load_german_tagger` and `tag_sentences` tag German words with HanTa
  (PyPI `HanTa==1.2.1`, model `morphmodel_ger.pgz`). HanTa's German model
  was trained on the TIGER treebank, so its STTS tags and lemmas are silver
  labels: HanTa's output, not human annotation. It writes STTS tags at
  taglevel 1 in its own notation, such as `VV(FIN)` for `VVFIN`, and
  splits NN into NN, NNA (nominalized adjectives) and NNI (nominalized
  infinitives). `coarse_stts_tag` maps its tags to plain STTS.
- `lemma_edit_class` turns a word and its lemma into the edit that maps
  one to the other, the label of the second auxiliary task.
- `build_vocabulary` and `make_tokenizer` build WordPiece vocabularies
  (tensorflow-text's learner, as keras-hub calls it) and keras-hub
  tokenizers from training text.
- `align_word_labels` flattens per-word subwords and puts each word's label
  on its first subword, with label 0 (ignore) on the continuation pieces.
"""

import collections
import numbers
import re
import unicodedata

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
BOS_TOKEN = "[BOS]"
EOS_TOKEN = "[EOS]"
# WordPiece reserves these at the start of the vocabulary, in this order,
# so [PAD] is id 0 on both sides.
SOURCE_RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN)
TARGET_RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
SUFFIX_INDICATOR = "##"

# Label 0 of every tagging task: positions without a label (continuation
# subwords, padding).
IGNORE_LABEL = "<ignore>"
OTHER_LEMMA_CLASS = "<other>"
IDENTITY_LEMMA_CLASS = "-+"

HANTA_REQUIREMENT = "HanTa==1.2.1"
HANTA_GERMAN_MODEL = "morphmodel_ger.pgz"
# Batch size of the sentences fed to the vocabulary learner.
_VOCABULARY_BATCH_SIZE = 1000
# The minimum word count with which keras-hub 0.32 calls the WordPiece
# learner.
DEFAULT_MIN_WORD_COUNT = 10

# Characters that may join two word characters inside one word: hyphens
# (US-Präsident), apostrophes (geht's, geht’s) and periods (z.B.).
_WORD_JOINERS = frozenset("-'’.")
_TRUNCATION_HYPHEN = "-"
# HanTa's tags with features in parentheses, such as VV(FIN) and ADJ(A).
_FEATURE_TAG = re.compile(r"([A-Z]+)\(([A-Z]+)\)")


def is_punctuation(char):
    """Return whether WordPiece splits `char` off as punctuation.

    This is the rule of keras-hub's `WordPieceTokenizer` (0.32): every ASCII
    character that is not a letter, digit or whitespace, and every character
    in a Unicode punctuation category (P*).
    """
    code = ord(char)
    is_ascii_symbol = (
        33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96
        or 123 <= code <= 126
    )
    return is_ascii_symbol or unicodedata.category(char).startswith("P")


def is_separator(char):
    """Return whether WordPiece treats `char` as whitespace.

    Whitespace, control characters (Cc) and invisible format characters (Cf)
    separate words without becoming tokens.
    """
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf")


def split_words(text):
    """Split a sentence into words and punctuation marks.

    Whitespace separates words, and each punctuation mark is a word of its
    own, with three exceptions. A hyphen, apostrophe or period between two
    word characters stays inside the word (`US-Präsident`, `geht's`). A
    period after a word that already contains one stays on it (`z.B.`). A
    hyphen that ends a word before whitespace stays on it, as in truncated
    compounds (`Bildungs- und Kulturpolitik`). Every boundary is
    also a boundary of WordPiece's own split, so tokenizing the words one by
    one gives the same subwords as tokenizing the sentence.

    Args:
        text: a sentence.

    Returns:
        The list of words, in order.
    """
    words = []
    current = []
    for index, char in enumerate(text):
        if is_separator(char):
            _flush(current, words)
        elif not is_punctuation(char):
            current.append(char)
        elif _joins_word(text, index, current):
            current.append(char)
        else:
            _flush(current, words)
            words.append(char)
    _flush(current, words)
    return words


def _joins_word(text, index, current):
    """Return whether the punctuation mark `text[index]` stays in the word."""
    char = text[index]
    if not current or char not in _WORD_JOINERS:
        return False
    following = text[index + 1] if index + 1 < len(text) else " "
    if not (is_separator(following) or is_punctuation(following)):
        return True
    if char == "." and "." in current:
        return True
    return char == _TRUNCATION_HYPHEN and is_separator(following)


def _flush(current, words):
    if current:
        words.append("".join(current))
        current.clear()


def load_german_tagger():
    """Load HanTa's German tagger (the model `morphmodel_ger.pgz`).

    Returns:
        A `HanTa.HanoverTagger.HanoverTagger`.

    Raises:
        ImportError: if HanTa is not installed.
    """
    try:
        from HanTa import HanoverTagger
    except ImportError as error:
        raise ImportError(
            "German POS tags and lemmas need the package HanTa. Install it "
            f"with `pip install {HANTA_REQUIREMENT}`."
        ) from error
    return HanoverTagger.HanoverTagger(HANTA_GERMAN_MODEL)


def german_pos_tags(tagger):
    """Return the sorted STTS tags of HanTa's German model (taglevel 1).

    HanTa 1.2.1 lists 56 tags, `UNKNOWN` included.
    """
    int2tag = tagger.int2tag
    return sorted(
        int2tag[-code] for code in int2tag if code < 0 and -code in int2tag
    )


def tag_sentences(sentences, tagger, progress=None):
    """Tag the words of German sentences with HanTa.

    Args:
        sentences: lists of words, one per sentence (see `split_words`).
        tagger: the tagger from `load_german_tagger`.
        progress: optional callable(message) that gets a line every 5,000
            sentences. Defaults to None.

    Returns:
        One `(lemmas, tags)` pair of lists per sentence, aligned with its
        words. The tags are silver labels in HanTa's notation (`VV(FIN)`).
    """
    tagged = []
    for index, words in enumerate(sentences):
        if words:
            analyses = tagger.tag_sent(list(words), taglevel=1)
            tagged.append(
                ([lemma for _, lemma, _ in analyses],
                 [tag for _, _, tag in analyses])
            )
        else:
            tagged.append(([], []))
        if progress is not None and (index + 1) % 5000 == 0:
            progress(f"Tagged {index + 1:,} of {len(sentences):,} sentences.")
    return tagged


def coarse_stts_tag(tag):
    """Map a HanTa tag to the plain STTS tag of the TIGER treebank.

    HanTa writes verb and adjective features in parentheses, which are
    dropped (`VV(FIN)` -> `VVFIN`, `ADJ(A)` -> `ADJA`, while the
    punctuation tag `$(` stays), and its noun
    subclasses NNA and NNI become NN. Other tags pass through unchanged.
    """
    if tag in ("NNA", "NNI"):
        return "NN"
    match = _FEATURE_TAG.fullmatch(tag)
    return match.group(1) + match.group(2) if match else tag


def lemma_edit_class(word, lemma):
    """Return the edit that turns `word` into `lemma`, as `-removed+added`.

    Both are lowercased first. The edit removes the suffix of the word after
    the longest common prefix and appends the lemma's suffix. So `gegangen`
    -> `gehen` is `-gangen+hen`, `Häuser` -> `Haus` is `-äuser+aus`, and an
    unchanged word is `-+`.
    """
    word = word.lower()
    lemma = lemma.lower()
    prefix_length = 0
    for word_char, lemma_char in zip(word, lemma):
        if word_char != lemma_char:
            break
        prefix_length += 1
    return f"-{word[prefix_length:]}+{lemma[prefix_length:]}"


def select_lemma_classes(edit_classes, num_classes):
    """Choose the label names of the lemma-edit task.

    Args:
        edit_classes: iterable of edit classes (from `lemma_edit_class`),
            one per word of the training text.
        num_classes: number of most frequent classes that keep a label of
            their own, a positive integer. Ties in frequency go to the
            alphabetically first class.

    Returns:
        `["<ignore>", *top classes by frequency, "<other>"]`, so label 0 is
        ignored, labels 1 to N are the top classes and label N + 1 covers
        every rarer class. Fewer than N classes occur when the text has
        fewer distinct edits.
    """
    _check_positive_int("num_classes", num_classes, example=40)
    counts = collections.Counter(edit_classes)
    ranked = sorted(counts, key=lambda name: (-counts[name], name))
    return [IGNORE_LABEL, *ranked[:num_classes], OTHER_LEMMA_CLASS]


def label_ids(names, label_names):
    """Map label names to their index in `label_names`.

    A name that is not in `label_names` gets the last index, which is the
    catch-all class `<other>` of the lemma-edit task. Every POS tag is in
    its list, so POS tags never fall back.
    """
    index = {name: position for position, name in enumerate(label_names)}
    fallback = len(label_names) - 1
    return [index.get(name, fallback) for name in names]


def build_vocabulary(texts, vocabulary_size, reserved_tokens, lowercase=True,
                     min_word_count=None):
    """Learn a WordPiece vocabulary from training text.

    Words are split as keras-hub's `compute_word_piece_vocabulary` splits
    them, and tensorflow-text's WordPiece learner, which that function
    calls, learns the vocabulary. Calling the learner here makes its
    minimum word count a setting: keras-hub 0.32 fixes it at 10, and with
    that count the result is keras-hub's vocabulary.

    Args:
        texts: sentences, a sequence of str.
        vocabulary_size: maximum number of entries, reserved tokens
            included. The result can be smaller, because the learner
            gives no token of its own to a word seen fewer than
            `min_word_count` times. On the 16,000 German training sentences
            with a count of 10, targets of 3,000 and 10,000 both gave the
            same 2,684 entries.
        reserved_tokens: tokens that take the first ids, in order.
        lowercase: whether text is case-folded before learning. Defaults to
            True.
        min_word_count: words seen fewer times get no token of their own
            (they are spelled with subwords). Defaults to None, which means
            10, keras-hub's fixed value. A lower count lets a small corpus
            reach a larger vocabulary.

    Returns:
        The vocabulary, a list of str: id -> token.

    Raises:
        ValueError: if `vocabulary_size` leaves no room beyond the reserved
            tokens, the reserved tokens are not distinct strings, or
            `texts` is not a sequence of strings with at least one word.
    """
    _check_positive_int("vocabulary_size", vocabulary_size, example=3000)
    if isinstance(reserved_tokens, str) or not all(
            isinstance(token, str) for token in reserved_tokens):
        raise ValueError(
            "`reserved_tokens` must be a sequence of strings. Received: "
            f"{reserved_tokens!r}. Pass for example ['[PAD]', '[UNK]']."
        )
    if len(set(reserved_tokens)) != len(reserved_tokens):
        raise ValueError(
            "`reserved_tokens` must be distinct, because each takes its own "
            f"id. Received: {list(reserved_tokens)}. Remove the repeats."
        )
    if vocabulary_size <= len(reserved_tokens):
        raise ValueError(
            "`vocabulary_size` must exceed the number of reserved tokens "
            f"({len(reserved_tokens)}: {list(reserved_tokens)}). Received: "
            f"vocabulary_size={vocabulary_size}. Pass a size such as 3000."
        )
    if isinstance(texts, str):
        raise ValueError(
            "`texts` must be a sequence of sentences, not one string. "
            f"Received: {texts[:40]!r}. Pass a list such as [{texts[:40]!r}]."
        )
    texts = list(texts)
    wrong = [text for text in texts if not isinstance(text, str)]
    if wrong:
        raise ValueError(
            "`texts` must contain only strings. Received: "
            f"{len(wrong)} other values, the first {wrong[0]!r}. Drop or "
            "convert them."
        )
    if not any(text.strip() for text in texts):
        raise ValueError(
            "A vocabulary needs training text. Received: "
            f"{len(texts)} sentences without a word. Pass the training "
            "sentences."
        )
    if min_word_count is None:
        min_word_count = DEFAULT_MIN_WORD_COUNT
    _check_positive_int("min_word_count", min_word_count, example=2)
    import tensorflow as tf
    from keras_hub.src.tokenizers import word_piece_tokenizer_trainer
    from tensorflow_text.tools.wordpiece_vocab import (
        wordpiece_tokenizer_learner_lib as learner,
    )

    # The pre-tokenization and learner call of keras-hub's
    # `compute_word_piece_vocabulary`, with `lower_thresh` exposed. A
    # Python list there would be read as file names, so the sentences go
    # in as a tf.data.Dataset.
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(
        _VOCABULARY_BATCH_SIZE
    )
    words = dataset.map(
        lambda text: word_piece_tokenizer_trainer.pretokenize(
            text, lowercase, False, True, True
        )
    )
    vocabulary = learner.learn(
        learner.count_words(words),
        vocab_size=vocabulary_size,
        reserved_tokens=list(reserved_tokens),
        lower_thresh=min_word_count,
        include_joiner_token=True,
        joiner=SUFFIX_INDICATOR,
    )[:vocabulary_size]
    return [str(token) for token in vocabulary]


def make_tokenizer(vocabulary, lowercase=True):
    """Build a keras-hub `WordPieceTokenizer` over `vocabulary`.

    Called eagerly, it runs keras-hub's pure Python path: `tokenize` of a
    list of strings returns a list of lists of int ids, not a tensor.
    """
    import keras_hub

    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=list(vocabulary),
        lowercase=lowercase,
        strip_accents=False,
        suffix_indicator=SUFFIX_INDICATOR,
        oov_token=UNK_TOKEN,
        dtype="int32",
    )


def tokenize_words(tokenizer, sentences):
    """Tokenize each word of each sentence on its own.

    Args:
        tokenizer: a `WordPieceTokenizer`.
        sentences: lists of words, one per sentence.

    Returns:
        For each sentence, one list of subword ids per word. A word that
        WordPiece splits at punctuation (`US-Präsident`) gets all pieces.
    """
    flat_words = [word for words in sentences for word in words]
    flat_pieces = tokenizer.tokenize(flat_words) if flat_words else []
    grouped = []
    start = 0
    for words in sentences:
        stop = start + len(words)
        grouped.append([list(pieces) for pieces in flat_pieces[start:stop]])
        start = stop
    return grouped


def align_word_labels(word_pieces, *word_labels):
    """Flatten per-word subwords and put each word's label on its first one.

    Args:
        word_pieces: one list of subword ids per word.
        *word_labels: label lists, each with one label per word.

    Returns:
        A tuple `(ids, labels_1, labels_2, ...)` of flat lists. Each label
        list has the word's label at the word's first subword and 0 at every
        continuation subword. A word without subwords keeps no label.

    Raises:
        ValueError: if a label list has a different length than
            `word_pieces`.
    """
    for labels in word_labels:
        if len(labels) != len(word_pieces):
            raise ValueError(
                "Each label list must have one label per word. Received: "
                f"{len(labels)} labels for {len(word_pieces)} words."
            )
    ids = []
    aligned = [[] for _ in word_labels]
    for position, pieces in enumerate(word_pieces):
        for piece_index, piece in enumerate(pieces):
            ids.append(piece)
            for labels, output in zip(word_labels, aligned):
                output.append(labels[position] if piece_index == 0 else 0)
    return (ids, *aligned)


def detokenize(vocabulary, ids):
    """Join subword ids into text, merging `##` continuation pieces.

    Words are joined with single spaces, as keras-hub's
    `WordPieceTokenizer.detokenize` does, so punctuation comes out as a
    separate word (`i am tired .`). Reserved tokens other than [UNK] are
    dropped.
    """
    skipped = {PAD_TOKEN, BOS_TOKEN, EOS_TOKEN}
    words = []
    for token_id in ids:
        token = vocabulary[int(token_id)]
        if token in skipped:
            continue
        is_continuation = (
            token.startswith(SUFFIX_INDICATOR)
            and len(token) > len(SUFFIX_INDICATOR)
        )
        if is_continuation and words:
            words[-1] += token[len(SUFFIX_INDICATOR):]
        else:
            words.append(token)
    return " ".join(words)


def _check_positive_int(name, value, example):
    is_integer = isinstance(value, numbers.Integral) and not isinstance(
        value, bool
    )
    if not is_integer or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. "
            f"Received: {name}={value!r}. Pass a value such as {example}."
        )
