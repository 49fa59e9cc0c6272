"""Compare candidate auxiliary tagging tasks on the German sentences.

The NMT task needs a second German tagging task beside POS tags. Two
candidates come from HanTa (`HanTa==1.2.1`) without a download: lemma-edit
classes (`nmt_text.lemma_edit_class`) and proper-noun tagging (HanTa's NE
tag). The script reads every German sentence of the dictionary
(`parse_dictionary`), splits it into words with `split_words` and tags it.
For each candidate it prints the number of classes, the share of words in
the largest class (the accuracy of always predicting it) and the entropy
of the labels in bits. For lemma edits it also prints the share of words
that the top N classes cover.

Usage:

    python benchmarks/nmt_label_statistics.py [--path FILE] [--top 40]
        [--json PATH]
"""

import argparse
import collections
import json
import math
import sys

from autoloss_models import nmt_data
from autoloss_models import nmt_text


def entropy_bits(counts):
    """Return the entropy in bits of the distribution given by `counts`."""
    total = sum(counts.values())
    return -sum(
        count / total * math.log2(count / total)
        for count in counts.values() if count
    )


def label_statistics(words, tagged, top):
    """Summarize POS, NE and lemma-edit labels of tagged sentences.

    Args:
        words: lists of words, one per sentence.
        tagged: `(lemmas, tags)` per sentence, from `tag_sentences`.
        top: number of lemma-edit classes with their own label.

    Returns:
        A dict of counts, shares and entropies.
    """
    pos = collections.Counter()
    edits = collections.Counter()
    for sentence_words, (lemmas, tags) in zip(words, tagged):
        pos.update(tags)
        edits.update(
            nmt_text.lemma_edit_class(word, lemma)
            for word, lemma in zip(sentence_words, lemmas)
        )
    num_words = sum(pos.values())
    proper_nouns = pos["NE"]
    binary_ne = collections.Counter(
        {"NE": proper_nouns, "other": num_words - proper_nouns}
    )
    top_classes = dict(edits.most_common(top))
    top_count = sum(top_classes.values())
    top_with_other = collections.Counter(top_classes)
    top_with_other[nmt_text.OTHER_LEMMA_CLASS] = num_words - top_count
    return {
        "sentences": len(words),
        "words": num_words,
        "pos_tags": len(pos),
        "pos_entropy_bits": entropy_bits(pos),
        "pos_majority_share": pos.most_common(1)[0][1] / num_words,
        "ne_share": proper_nouns / num_words,
        "ne_entropy_bits": entropy_bits(binary_ne),
        "lemma_edit_classes": len(edits),
        "lemma_identity_share": (
            edits[nmt_text.IDENTITY_LEMMA_CLASS] / num_words
        ),
        "lemma_top": top,
        "lemma_top_coverage": top_count / num_words,
        "lemma_top_entropy_bits": entropy_bits(top_with_other),
        "lemma_all_entropy_bits": entropy_bits(edits),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=str(nmt_data.DICTIONARY_PATH),
                        help="dictionary file (default: %(default)s)")
    parser.add_argument("--top", type=int, default=40,
                        help="lemma-edit classes with their own label "
                             "(default: %(default)s)")
    parser.add_argument("--json", help="also write the result to this path")
    args = parser.parse_args(argv)

    pairs = nmt_data.parse_dictionary(args.path)
    words = [nmt_text.split_words(german) for german, _ in pairs]
    tagged = nmt_text.tag_sentences(words, nmt_text.load_german_tagger())
    result = label_statistics(words, tagged, args.top)
    for name, value in result.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float)
              else f"{name}: {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
