"""Word counts: the words BERT's tokenizer sees, the same sums in any batching and any number of processes."""

from collections import Counter

from tokenizers import pre_tokenizers

from preprocess import word_counts
from preprocess.tokenization import bert_normalizer
from preprocess.word_counts import count_words

LINES = [
    "Héllo Wörld! Ça va? naïve café résumé",
    "The U.S.A. costs $3.50 -- (approx.) 12% off; x^2 `code` ~home @user #tag",
    "中文字符和English混合。日本語のテキスト",
    "tab\tand\u00a0nbsp\u2003em space and\u200bzero width",
    "control\x07chars\x00and\ufffdreplacement",
    "«quotes» „german“ ‘single’ — em dash … ellipsis",
    "ΟΔΥΣΣΕΥΣ ΣΟΦΟΣ",  # upper-case Greek, lower-cased character by character
    "",
    "the end",
]


def each_line_alone(lines, lower_case):
    normalizer, pre = bert_normalizer(lower_case), pre_tokenizers.BertPreTokenizer()
    return Counter(w for line in lines for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(line)))


def test_batched_counts_equal_each_line_counted_alone(monkeypatch):
    lines = LINES * 50
    for lower_case in (True, False):
        expected = each_line_alone(lines, lower_case)
        assert count_words(lines, lower_case) == expected
        monkeypatch.setattr(word_counts, "_LINES_PER_TASK", 7)  # tasks cut mid-batch
        monkeypatch.setattr(word_counts, "_LINES_PER_CALL", 3)
        assert count_words(lines, lower_case) == expected
        monkeypatch.undo()
    counts = count_words(LINES)
    assert counts["hello"] == 1 and counts["ca"] == 1 and counts["οδυσσευσ"] == 1 and counts["$"] == 1
    assert counts["中"] == 1 and "\x07" not in "".join(counts)


def test_two_processes_count_what_one_does(monkeypatch):
    monkeypatch.setattr(word_counts, "_LINES_PER_TASK", 40)  # many tasks, several in flight
    lines = [f"{line} {i}" for i in range(300) for line in LINES[:3]]
    assert count_words(iter(lines), processes=2) == count_words(lines, processes=1)
