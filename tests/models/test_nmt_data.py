"""Tests of the German-English NMT data: parser, splits, words, tags, subwords.

Everything runs on hand-written files and tiny vocabularies, except one
test that reads the installed trans-de-en dictionary and skips without it.
"""

import importlib.util
import pathlib
import re
from unittest import mock

import numpy as np
import pytest

from autoloss_models import nmt_data
from autoloss_models import nmt_text

BENCHMARK_DIR = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"

# Each group of lines tests one rule of `parse_dictionary`, named in the
# comment above it.
DICTIONARY_LINES = [
    "# Version :: test",
    "# Das ist ein Kommentar, kein Satz. :: This is a comment, not a pair.",
    "",
    # Aligned sub-entries: only the third pair is a sentence pair.
    "Haus {n} | Häuser {pl} | Das Haus ist [ugs.] sehr alt. :: "
    "house | houses | The house is very old.",
    # Alternatives: the first one of each side is kept.
    "Regen Sie sich nicht auf!; Reg dich nicht auf! :: "
    "Don’t you get upset now!; Calm down now, please!",
    # Markup that contains `;`, <...> search keys and /ABBR/ marks.
    "Er blies alle Kerzen aus. :: He blew {blew; blown} out all the candles.",
    "Sie wohnt jetzt in Köln <Koeln>. :: She lives in Cologne now.",
    "Danke im Voraus für alles! :: Thanks in advance for everything! /TIA/",
    # Too short on one side.
    "Ich bin sehr müde. :: I am tired.",
    # No sentence ending on one side.
    "Er kommt morgen früh an … :: He arrives early tomorrow morning.",
    "Wie spät ist es jetzt? :: What time is it now,",
    # Different numbers of sub-entries: cannot be aligned.
    "Das ist mein Haus. | Das ist dein Haus. :: This is my house.",
    # Duplicates: the same line again, and the same German sentence with
    # another translation.
    "Er blies alle Kerzen aus. :: He blew {blew; blown} out all the candles.",
    "Er blies alle Kerzen aus. :: He blew all the candles out.",
    # No ` :: ` separator.
    "Das ist kein Eintrag mit Trenner.",
    # A question with a question mark on both sides.
    "Wo ist der nächste Bahnhof? :: Where is the nearest station?",
]
EXPECTED_PAIRS = [
    ("Das Haus ist sehr alt.", "The house is very old."),
    ("Regen Sie sich nicht auf!", "Don’t you get upset now!"),
    ("Er blies alle Kerzen aus.", "He blew out all the candles."),
    ("Sie wohnt jetzt in Köln.", "She lives in Cologne now."),
    ("Danke im Voraus für alles!", "Thanks in advance for everything!"),
    ("Wo ist der nächste Bahnhof?", "Where is the nearest station?"),
]

# 24 short pairs for `load_corpus`, plus one with a long German side. On
# so little text the WordPiece learner keeps single characters only, so
# every word of more than one letter has continuation pieces.
TINY_PAIRS = [
    ("Die Kinder spielen im Garten.", "The children play in the garden."),
    ("Der Hund schläft unter dem Tisch.", "The dog sleeps under the table."),
    ("Ich bin gestern nach Hause gegangen.", "I went home yesterday."),
    ("Wir haben das Haus gekauft.", "We have bought the house."),
    ("Sie liest ein gutes Buch.", "She is reading a good book."),
    ("Er trinkt jeden Morgen Kaffee.", "He drinks coffee every morning."),
    ("Das Wetter ist heute schön.", "The weather is nice today."),
    ("Meine Mutter kocht das Essen.", "My mother cooks the food."),
    ("Die Katze sitzt auf dem Dach.", "The cat sits on the roof."),
    ("Wir fahren morgen in die Stadt.", "We drive into town tomorrow."),
    ("Der Lehrer erklärt die Aufgabe.", "The teacher explains the task."),
    ("Ich habe keine Zeit mehr.", "I have no time left."),
    ("Die Sonne scheint über dem Meer.", "The sun shines over the sea."),
    ("Er hat den Schlüssel verloren.", "He has lost the key."),
    ("Sie schreibt ihrem Bruder einen Brief.",
     "She writes a letter to her brother."),
    ("Das Kind malt ein großes Bild.", "The child paints a big picture."),
    ("Wir warten auf den nächsten Zug.", "We wait for the next train."),
    ("Der Arzt hilft den kranken Leuten.",
     "The doctor helps the sick people."),
    ("Ich gehe jeden Tag zur Arbeit.", "I go to work every day."),
    ("Die Blumen blühen im Frühling.", "The flowers bloom in spring."),
    ("Er spielt gern mit seinem Hund.", "He likes playing with his dog."),
    ("Sie hat das Fenster geöffnet.", "She has opened the window."),
    ("Wir essen heute Abend Fisch.", "We are eating fish tonight."),
    ("Die Straße ist sehr lang.", "The street is very long."),
    ("Die Kinder spielen im Garten und die Katze schläft auf dem warmen "
     "Dach des alten Hauses.",
     "The children play in the garden."),
]
TINY_SETTINGS = dict(
    vocabulary_size=200, source_length=48, target_length=40,
    lemma_classes=5, split_sizes=(17, 4),
)


def _write_dictionary(tmp_path, lines):
    path = tmp_path / "de-en"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _tiny_dictionary(tmp_path):
    return _write_dictionary(
        tmp_path, [f"{german} :: {english}" for german, english in TINY_PAIRS]
    )


def _load_benchmark(name):
    spec = importlib.util.spec_from_file_location(
        name, BENCHMARK_DIR / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Dictionary parser.


def test_parse_dictionary_rules(tmp_path):
    path = _write_dictionary(tmp_path, DICTIONARY_LINES)

    pairs = nmt_data.parse_dictionary(path)

    assert pairs == EXPECTED_PAIRS


@pytest.mark.parametrize(
    "text, expected",
    [("Das ist {n} ein [ugs.] Test <Tst>.", "Das ist ein Test."),
     ("Danke! /TIA/", "Danke!"),
     ("wo/wer/was genau (hier)?", "wo/wer/was genau (hier)?"),
     ("  viel   Platz  ", "viel Platz")],
    ids=["markup", "abbreviation", "slashes-and-parentheses", "whitespace"],
)
def test_clean_entry(text, expected):
    assert nmt_data.clean_entry(text) == expected


def test_parse_dictionary_missing_file(tmp_path):
    missing = tmp_path / "de-en"
    with pytest.raises(FileNotFoundError) as error:
        nmt_data.parse_dictionary(missing)
    message = str(error.value)
    assert str(missing) in message
    assert "apt-get install trans-de-en" in message
    assert "scripts/install_system_packages.sh" in message
    assert "data_dir" in message


# Splits.


def test_split_pairs_deterministic_and_disjoint():
    pairs = [(f"Satz {i} ist hier.", f"Sentence {i} is here.")
             for i in range(50)]

    first = nmt_data.split_pairs(pairs, seed=7, split_sizes=(30, 8))
    again = nmt_data.split_pairs(pairs, seed=7, split_sizes=(30, 8))
    other = nmt_data.split_pairs(pairs, seed=8, split_sizes=(30, 8))

    assert first.splits() == again.splits()
    assert first.train != other.train
    assert [len(split) for split in first.splits().values()] == [30, 8, 12]
    train, valid, test = (set(split) for split in first.splits().values())
    assert not train & valid
    assert not train & test
    assert not valid & test
    assert train | valid | test == set(pairs)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(split_sizes=(40, 10)), "at least one pair for the test split"),
     (dict(split_sizes=(0, 5)), "train_size"),
     (dict(split_sizes=(10,)), "must be a pair"),
     (dict(seed=-1), "seed")],
    ids=["no-test", "zero-train", "one-size", "negative-seed"],
)
def test_split_pairs_invalid(kwargs, match):
    pairs = [(f"Satz {i} ist hier.", f"Sentence {i} is here.")
             for i in range(50)]
    with pytest.raises(ValueError, match=match):
        nmt_data.split_pairs(pairs, **kwargs)


def test_load_pairs_rejects_path_and_data_dir(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        nmt_data.load_pairs(path=tmp_path / "de-en", data_dir=tmp_path)


# Words and lemma edits.


@pytest.mark.parametrize(
    "text, expected",
    [("Der US-Präsident sagt, es geht’s gut.",
      ["Der", "US-Präsident", "sagt", ",", "es", "geht’s", "gut", "."]),
     ("Das kostet z.B. 5€ ... oder?",
      ["Das", "kostet", "z.B.", "5€", ".", ".", ".", "oder", "?"]),
     ("Bildungs- und Kulturpolitik - na ja!",
      ["Bildungs-", "und", "Kulturpolitik", "-", "na", "ja", "!"]),
     ("(Ende-)", ["(", "Ende", "-", ")"]),
     ("Andreas’ Buch.", ["Andreas", "’", "Buch", "."])],
    ids=["compound-apostrophe", "abbreviation-symbol", "truncation",
         "brackets", "trailing-apostrophe"],
)
def test_split_words(text, expected):
    assert nmt_text.split_words(text) == expected


@pytest.mark.parametrize(
    "word, lemma, expected",
    [("gegangen", "gehen", "-gangen+hen"),
     ("Häuser", "Haus", "-äuser+aus"),
     ("Kinder", "Kind", "-er+"),
     ("Die", "der", "-ie+er"),
     ("ist", "sein", "-ist+sein"),
     ("Haus", "Haus", "-+"),
     ("spielt", "spielen", "-t+en")],
)
def test_lemma_edit_class(word, lemma, expected):
    assert nmt_text.lemma_edit_class(word, lemma) == expected


def test_select_lemma_classes_ranks_and_breaks_ties():
    edits = ["-+"] * 5 + ["-e+"] * 3 + ["-n+"] * 2 + ["-en+"] * 2 + ["-x+"]

    names = nmt_text.select_lemma_classes(edits, num_classes=3)

    assert names == ["<ignore>", "-+", "-e+", "-en+", "<other>"]
    assert nmt_text.label_ids(["-e+", "-n+", "-+", "-x+"], names) == [
        2, 4, 1, 4
    ]


@pytest.mark.parametrize(
    "tag, expected",
    [("VV(FIN)", "VVFIN"), ("ADJ(A)", "ADJA"), ("VA(PP)", "VAPP"),
     ("NNA", "NN"), ("NNI", "NN"), ("$(", "$("), ("$.", "$."),
     ("APPRART", "APPRART")],
)
def test_coarse_stts_tag(tag, expected):
    assert nmt_text.coarse_stts_tag(tag) == expected


# HanTa tags.


def test_tag_sentences_hanta():
    tagger = nmt_text.load_german_tagger()
    words = nmt_text.split_words("Die Kinder spielten im Garten.")

    (lemmas, tags), = nmt_text.tag_sentences([words], tagger)

    assert tags == ["ART", "NN", "VV(FIN)", "APPRART", "NN", "$."]
    assert lemmas == ["der", "Kind", "spielen", "in", "Garten", "."]


def test_german_pos_tags_inventory():
    tags = nmt_text.german_pos_tags(nmt_text.load_german_tagger())

    assert len(tags) == 56
    assert tags == sorted(tags)
    assert {"NN", "NE", "VV(FIN)", "ADJ(A)", "$.", "$("} <= set(tags)


# Subwords and label alignment.

HAND_VOCABULARY = [
    "[PAD]", "[UNK]", "der", "us", "-", "präsident", "la", "##cht", ".",
]


def test_align_word_labels_hand_example():
    ids, pos, lemma = nmt_text.align_word_labels(
        [[5], [7, 8, 9], [3]], [2, 4, 6], [1, 3, 2]
    )

    assert ids == [5, 7, 8, 9, 3]
    assert pos == [2, 4, 0, 0, 6]
    assert lemma == [1, 3, 0, 0, 2]


def test_align_word_labels_length_mismatch():
    with pytest.raises(ValueError, match="2 labels for 3 words"):
        nmt_text.align_word_labels([[1], [2], [3]], [1, 2])


def test_tokenize_words_first_subword_labels():
    tokenizer = nmt_text.make_tokenizer(HAND_VOCABULARY)
    words = nmt_text.split_words("Der US-Präsident lacht.")

    word_pieces, = nmt_text.tokenize_words(tokenizer, [words])
    ids, labels = nmt_text.align_word_labels(word_pieces, [10, 20, 30, 40])

    assert words == ["Der", "US-Präsident", "lacht", "."]
    assert word_pieces == [[2], [3, 4, 5], [6, 7], [8]]
    assert ids == [2, 3, 4, 5, 6, 7, 8]
    assert labels == [10, 20, 0, 0, 30, 0, 40]
    # Tokenizing word by word gives the subwords of the whole sentence.
    assert ids == list(tokenizer.tokenize("Der US-Präsident lacht."))


ROUND_TRIP_TEXT = [
    "Ich bin heute sehr müde.",
    "Wo ist der Bahnhof, bitte?",
    "Das Haus (am See) ist alt!",
    "Der US-Präsident lacht.",
]


def test_vocabulary_round_trip():
    # Ten copies, so that words pass the learner's count threshold of 10.
    vocabulary = nmt_text.build_vocabulary(
        ROUND_TRIP_TEXT * 10, 120, nmt_text.TARGET_RESERVED_TOKENS
    )
    tokenizer = nmt_text.make_tokenizer(vocabulary)

    assert vocabulary[:4] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    assert len(vocabulary) <= 120
    assert {"bahnhof", "präsident", "müde", "##ä"} <= set(vocabulary)
    assert "Bahnhof" not in vocabulary
    expected = [
        "ich bin heute sehr müde .",
        "wo ist der bahnhof , bitte ?",
        "das haus ( am see ) ist alt !",
        "der us - präsident lacht .",
    ]
    for text, normalized in zip(ROUND_TRIP_TEXT, expected):
        ids = tokenizer.tokenize(text)
        assert nmt_text.UNK_TOKEN not in [vocabulary[i] for i in ids]
        assert nmt_text.detokenize(vocabulary, ids) == normalized
        assert tokenizer.detokenize(ids) == normalized


def test_vocabulary_default_count_matches_keras_hub():
    import keras_hub
    import tensorflow as tf

    texts = ROUND_TRIP_TEXT * 10 + ["Ein seltenes Wort."] * 3
    ours = nmt_text.build_vocabulary(
        texts, 120, nmt_text.TARGET_RESERVED_TOKENS
    )
    theirs = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts).batch(1000), 120,
        lowercase=True, strip_accents=False, suffix_indicator="##",
        reserved_tokens=list(nmt_text.TARGET_RESERVED_TOKENS),
    )
    assert ours == [str(token) for token in theirs]


def test_vocabulary_min_word_count():
    # "seltenes" occurs 3 times: a whole-word token only when the minimum
    # count is at most 3.
    texts = ROUND_TRIP_TEXT * 10 + ["Ein seltenes Wort."] * 3
    default = nmt_text.build_vocabulary(
        texts, 200, nmt_text.TARGET_RESERVED_TOKENS
    )
    three = nmt_text.build_vocabulary(
        texts, 200, nmt_text.TARGET_RESERVED_TOKENS, min_word_count=3
    )
    four = nmt_text.build_vocabulary(
        texts, 200, nmt_text.TARGET_RESERVED_TOKENS, min_word_count=4
    )
    assert "seltenes" not in default
    assert "seltenes" not in four
    assert "seltenes" in three
    assert len(three) > len(default)
    with pytest.raises(ValueError, match="min_word_count=0"):
        nmt_text.build_vocabulary(
            texts, 200, nmt_text.TARGET_RESERVED_TOKENS, min_word_count=0
        )


@pytest.mark.parametrize("texts, reserved, message", [
    ("Der Hund läuft.", ["[PAD]"], "a sequence of sentences, not one string"),
    (["Der Hund.", None], ["[PAD]"], "must contain only strings"),
    (["", "  "], ["[PAD]"], "2 sentences without a word"),
    (["Der Hund."], "[PAD]", "`reserved_tokens` must be a sequence"),
    (["Der Hund."], ["[PAD]", "[PAD]"], "`reserved_tokens` must be distinct"),
])
def test_build_vocabulary_rejects_bad_input(texts, reserved, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        nmt_text.build_vocabulary(texts, 100, reserved)


def test_load_corpus_rejects_empty_cache_dir():
    with pytest.raises(ValueError, match="`cache_dir` must be a directory"):
        nmt_data.load_corpus(cache_dir="")


def test_build_vocabulary_invalid_size():
    with pytest.raises(ValueError, match="exceed the number of reserved"):
        nmt_text.build_vocabulary(
            ROUND_TRIP_TEXT, 4, nmt_text.TARGET_RESERVED_TOKENS
        )


# The encoded corpus.


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """Build the corpus of TINY_PAIRS once, recording the vocabulary texts."""
    tmp_path = tmp_path_factory.mktemp("tiny_corpus")
    path = _tiny_dictionary(tmp_path)
    cache_dir = tmp_path / "cache"
    vocabulary_texts = []
    build = nmt_text.build_vocabulary

    def recording_build(texts, *args, **kwargs):
        vocabulary_texts.append(list(texts))
        return build(texts, *args, **kwargs)

    messages = []
    with mock.patch.object(nmt_text, "build_vocabulary", recording_build):
        corpus = nmt_data.load_corpus(
            path=path, cache_dir=cache_dir, seed=3,
            progress=messages.append, **TINY_SETTINGS,
        )
    pairs = nmt_data.load_pairs(path, seed=3,
                                split_sizes=TINY_SETTINGS["split_sizes"])
    return dict(corpus=corpus, pairs=pairs, path=path, cache_dir=cache_dir,
                vocabulary_texts=vocabulary_texts, messages=messages)


def test_corpus_shapes_and_dtypes(tiny_corpus):
    corpus = tiny_corpus["corpus"]
    for name, split in corpus.splits().items():
        for field in ("source", "pos", "lemma"):
            assert getattr(split, field).dtype == np.int32, (name, field)
            assert getattr(split, field).shape == (len(split), 48)
        for field in ("target_in", "target_out"):
            assert getattr(split, field).dtype == np.int32, (name, field)
            assert getattr(split, field).shape == (len(split), 40)


def test_corpus_drops_long_pairs(tiny_corpus):
    corpus, pairs = tiny_corpus["corpus"], tiny_corpus["pairs"]
    long_german = TINY_PAIRS[-1][0]
    split_of_long = next(
        name for name, split in pairs.splits().items()
        if long_german in [german for german, _ in split]
    )

    assert sum(corpus.dropped.values()) == 1
    assert corpus.dropped[split_of_long] == 1
    for name, split in corpus.splits().items():
        assert len(split) == len(pairs.splits()[name]) - corpus.dropped[name]
        assert long_german not in split.german


def test_corpus_vocabularies_from_training_text(tiny_corpus):
    corpus, pairs = tiny_corpus["corpus"], tiny_corpus["pairs"]

    assert tiny_corpus["vocabulary_texts"] == [
        [german for german, _ in pairs.train],
        [english for _, english in pairs.train],
    ]
    assert corpus.source_vocabulary[:2] == ["[PAD]", "[UNK]"]
    assert corpus.target_vocabulary[:4] == [
        "[PAD]", "[UNK]", "[BOS]", "[EOS]"
    ]
    assert (corpus.bos_id, corpus.eos_id) == (2, 3)


def test_corpus_targets_shifted_by_one(tiny_corpus):
    corpus = tiny_corpus["corpus"]
    for split in corpus.splits().values():
        for target_in, target_out in zip(split.target_in, split.target_out):
            length = int(np.count_nonzero(target_out))
            assert target_in[0] == corpus.bos_id
            assert target_out[length - 1] == corpus.eos_id
            np.testing.assert_array_equal(
                target_in[1:length], target_out[:length - 1]
            )
            assert np.count_nonzero(target_in) == length


def test_corpus_text_round_trip(tiny_corpus):
    corpus = tiny_corpus["corpus"]
    german = "Ich bin gestern nach Hause gegangen."
    split = next(split for split in corpus.splits().values()
                 if german in split.german)
    row = split.german.index(german)

    assert split.english[row] == "I went home yesterday."
    assert corpus.detokenize_source(split.source[row]) == (
        "ich bin gestern nach hause gegangen ."
    )
    assert corpus.detokenize_target(split.target_out[row]) == (
        "i went home yesterday ."
    )
    assert corpus.detokenize_target(split.target_in[row]) == (
        "i went home yesterday ."
    )


def test_corpus_labels_on_first_subwords(tiny_corpus):
    corpus = tiny_corpus["corpus"]
    tagger = nmt_text.load_german_tagger()
    tokenizer = corpus.source_tokenizer()
    for split in corpus.splits().values():
        for row, german in enumerate(split.german):
            words = nmt_text.split_words(german)
            (lemmas, tags), = nmt_text.tag_sentences([words], tagger)
            word_pieces, = nmt_text.tokenize_words(tokenizer, [words])
            starts = np.cumsum([0] + [len(p) for p in word_pieces])[:-1]
            expected_pos = np.zeros(48, np.int32)
            expected_lemma = np.zeros(48, np.int32)
            expected_pos[starts] = [corpus.pos_tags.index(t) for t in tags]
            expected_lemma[starts] = nmt_text.label_ids(
                [nmt_text.lemma_edit_class(word, lemma)
                 for word, lemma in zip(words, lemmas)],
                corpus.lemma_classes,
            )
            np.testing.assert_array_equal(split.pos[row], expected_pos)
            np.testing.assert_array_equal(split.lemma[row], expected_lemma)
            assert np.count_nonzero(split.pos[row]) == len(words)


def test_corpus_label_names(tiny_corpus):
    corpus = tiny_corpus["corpus"]

    assert corpus.pos_tags[0] == "<ignore>"
    assert len(corpus.pos_tags) == 57
    assert corpus.lemma_classes[0] == "<ignore>"
    assert corpus.lemma_classes[-1] == "<other>"
    assert len(corpus.lemma_classes) == 7
    assert corpus.lemma_classes[1] == "-+"


def test_corpus_cached_load_skips_work(tiny_corpus):
    first = tiny_corpus["corpus"]

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    messages = []
    with mock.patch.object(nmt_text, "build_vocabulary", fail), \
            mock.patch.object(nmt_text, "tag_sentences", fail):
        again = nmt_data.load_corpus(
            path=tiny_corpus["path"], cache_dir=tiny_corpus["cache_dir"],
            seed=3, progress=messages.append, **TINY_SETTINGS,
        )
        longer = nmt_data.load_corpus(
            path=tiny_corpus["path"], cache_dir=tiny_corpus["cache_dir"],
            seed=3, **{**TINY_SETTINGS, "source_length": 100},
        )

    assert messages[0].startswith("Loaded the corpus from the cache")
    for name, split in first.splits().items():
        cached = again.splits()[name]
        for field in ("source", "target_in", "target_out", "pos", "lemma"):
            np.testing.assert_array_equal(getattr(cached, field),
                                          getattr(split, field))
        assert cached.german == split.german
        assert cached.english == split.english
    assert again.source_vocabulary == first.source_vocabulary
    assert again.lemma_classes == first.lemma_classes
    assert again.dropped == first.dropped
    # New lengths reuse the cached tags and vocabularies.
    assert longer.train.source.shape[1] == 100
    assert sum(longer.dropped.values()) == 0


def test_load_corpus_invalid_settings(tmp_path):
    with pytest.raises(ValueError, match="target_length"):
        nmt_data.load_corpus(target_length=1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="vocabulary_size"):
        nmt_data.load_corpus(vocabulary_size=4, cache_dir=tmp_path)


def test_nmt_split_shape_mismatch():
    with pytest.raises(ValueError, match="`pos` must have shape"):
        nmt_data.NmtSplit(
            source=np.zeros((2, 4)), target_in=np.zeros((2, 3)),
            target_out=np.zeros((2, 3)), pos=np.zeros((2, 5)),
            lemma=np.zeros((2, 4)), german=["a", "b"], english=["c", "d"],
        )


# GermEval and TED loaders.

GERMEVAL_TEXT = (
    "# http://de.wikipedia.org/wiki/Beispiel [2009-10-17]\n"
    "1\tAngela\tB-PER\tO\n"
    "2\tMerkel\tI-PER\tO\n"
    "3\tbesucht\tO\tO\n"
    "4\tBerlin\tB-LOC\tO\n"
    "5\t.\tO\tO\n"
    "\n"
    "# http://de.wikipedia.org/wiki/Zweites [2009-10-17]\n"
    "1\tDie\tO\tO\n"
    "2\tDeutsche\tB-ORG\tB-LOCderiv\n"
    "3\tBahn\tI-ORG\tO\n"
    "4\t#\tO\tO\n"
)


def test_load_germeval(tmp_path):
    path = tmp_path / "NER-de-test.tsv"
    path.write_text(GERMEVAL_TEXT, encoding="utf-8")

    outer = nmt_data.load_germeval(path)
    inner = nmt_data.load_germeval(path, tag_column="inner")

    assert outer == [
        (["Angela", "Merkel", "besucht", "Berlin", "."],
         ["B-PER", "I-PER", "O", "B-LOC", "O"]),
        (["Die", "Deutsche", "Bahn", "#"], ["O", "B-ORG", "I-ORG", "O"]),
    ]
    assert inner[1] == (["Die", "Deutsche", "Bahn", "#"],
                        ["O", "B-LOCderiv", "O", "O"])


@pytest.mark.parametrize(
    "text, match",
    [("1\tAngela\tB-PER\n", "4 tab-separated columns"),
     ("1\tAngela\tB-PER\tO\n3\tMerkel\tI-PER\tO\n", "must be 2")],
    ids=["three-columns", "index-gap"],
)
def test_load_germeval_invalid(text, match, tmp_path):
    path = tmp_path / "broken.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        nmt_data.load_germeval(path)


def test_load_germeval_unknown_column(tmp_path):
    with pytest.raises(ValueError, match="tag_column='nested'"):
        nmt_data.load_germeval(tmp_path / "x.tsv", tag_column="nested")


def test_ted_loader_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="TFDS data directory not "
                       "found"):
        nmt_data.load_ted_pairs(tmp_path / "absent")
    with pytest.raises(FileNotFoundError) as error:
        nmt_data.load_ted_pairs(tmp_path)
    message = str(error.value)
    assert "'ted_multi_translate' not found" in message
    assert "download_and_prepare()" in message
    assert str(tmp_path) in message


def test_ted_loader_prepared_data(tmp_path):
    """Prepare ted_multi_translate from hand-written TSV files, offline."""
    tfds = pytest.importorskip("tensorflow_datasets")
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    rows = (
        "talk_name\tde\ten\tfr\n"
        "talk\tIch bin hier .\tI am here .\tJe suis là .\n"
        "talk\t__NULL__\tNo German here .\tPas ici .\n"
    )
    for name in ("train", "dev", "test"):
        (extracted / f"all_talks_{name}.tsv").write_text(rows,
                                                         encoding="utf-8")
    data_dir = tmp_path / "data"
    with mock.patch.object(tfds.download.DownloadManager,
                           "download_and_extract",
                           return_value=str(extracted)):
        tfds.builder(nmt_data.TED_DATASET,
                     data_dir=str(data_dir)).download_and_prepare()

    pairs = nmt_data.load_pairs(data_dir=data_dir)
    corpus = nmt_data.load_corpus(
        vocabulary_size=50, source_length=20, target_length=20,
        cache_dir=tmp_path / "cache", data_dir=data_dir,
    )

    for split in pairs.splits().values():
        assert split == [("Ich bin hier .", "I am here .")]
    for split in corpus.splits().values():
        assert split.german == ["Ich bin hier ."]
        assert corpus.detokenize_target(split.target_out[0]) == "i am here ."


# The installed dictionary.


@pytest.mark.skipif(
    not nmt_data.DICTIONARY_PATH.is_file(),
    reason="the Debian package trans-de-en is not installed "
           "(run scripts/install_system_packages.sh)",
)
def test_installed_dictionary():
    pairs = nmt_data.parse_dictionary()
    splits = nmt_data.split_pairs(pairs)

    # 18,417 with the 2023-01-30 file of trans-de-en 1.9-6. Other versions
    # of the dictionary give a few more or fewer.
    assert 17000 <= len(pairs) <= 20000
    assert ("Sie war eine große Hilfe.", "She was a great help.") in pairs
    assert len({german for german, _ in pairs}) == len(pairs)
    for german, english in pairs:
        for side in (german, english):
            assert nmt_data.is_sentence(side), side
            assert not set("{}[]<>") & set(side), side
    assert [len(split) for split in splits.splits().values()] == [
        16000, 1000, len(pairs) - 17000
    ]


# Benchmark scripts on hand-written input.


def test_pos_accuracy_benchmark(tmp_path):
    benchmark = _load_benchmark("nmt_pos_accuracy")
    gold = tmp_path / "gold.txt"
    gold.write_text(
        "Die/ART Kinder/NN spielten/VVFIN im/APPRART Garten/NN ./.\n"
        "Er/PPER lacht/ADJA &slash;/( !/.\n",
        encoding="utf-8",
    )

    sentences = benchmark.read_gold(gold)
    result = benchmark.evaluate(sentences, nmt_text.load_german_tagger())

    assert sentences[1] == [("Er", "PPER"), ("lacht", "ADJA"), ("/", "$("),
                            ("!", "$.")]
    # "lacht" is tagged VVFIN by HanTa, so the wrong gold tag ADJA is the
    # only miss.
    assert result["tokens"] == 10
    assert result["accuracy"] == pytest.approx(9 / 10)
    assert result["non_punctuation_tokens"] == 7
    assert result["non_punctuation_accuracy"] == pytest.approx(6 / 7)
    assert result["top_confusions"] == [("ADJA -> VVFIN", 1)]


def test_label_statistics_benchmark():
    benchmark = _load_benchmark("nmt_label_statistics")
    words = [["Anna", "ist", "da"], ["Häuser", "sind", "alt"]]
    tagged = [(["Anna", "sein", "da"], ["NE", "VA(FIN)", "ADV"]),
              (["Haus", "sein", "alt"], ["NN", "VA(FIN)", "ADJ(D)"])]

    result = benchmark.label_statistics(words, tagged, top=1)

    assert result["words"] == 6
    assert result["ne_share"] == pytest.approx(1 / 6)
    assert result["lemma_edit_classes"] == 4
    assert result["lemma_identity_share"] == pytest.approx(3 / 6)
    assert result["lemma_top_coverage"] == pytest.approx(3 / 6)
    # Top 1 plus <other>: two classes of 3 words each, 1 bit.
    assert result["lemma_top_entropy_bits"] == pytest.approx(1.0)
