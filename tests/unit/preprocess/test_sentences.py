import pytest

from preprocess import sentences
from preprocess.sentences import split_sentences

GOLD = [
    ("Use e.g. the os module. It works.", ["Use e.g. the os module.", "It works."]),
    ("Python 3.11 was released in 2022. It is faster.", ["Python 3.11 was released in 2022.", "It is faster."]),
    ("Mr. Smith went to Washington. He arrived at 5 p.m. on Monday.",
     ["Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."]),
    ("Is it true? Yes! It is.", ["Is it true?", "Yes!", "It is."]),
    ("The value is 3.14. That is pi.", ["The value is 3.14.", "That is pi."]),
    ("Create argparse.ArgumentParser first. Then parse.", ["Create argparse.ArgumentParser first.", "Then parse."]),
    ("See :py:data:`~errno.ESRCH` for details.", ["See :py:data:`~errno.ESRCH` for details."]),
    ("猫が寝ている。犬が吠える。", ["猫が寝ている。", "犬が吠える。"]),
    ("Он пришёл домой. Она спала.", ["Он пришёл домой.", "Она спала."]),
]


@pytest.mark.parametrize("text,expected", GOLD)
def test_hard_cases(text, expected):
    assert split_sentences([text]) == expected


def test_sentences_never_span_lines_and_blank_pieces_vanish():
    assert split_sentences(["First line without stop", "  ", "Second. Third."]) == [
        "First line without stop", "Second.", "Third."]


def test_very_long_line_is_cut_before_segmentation(monkeypatch):
    monkeypatch.setattr(sentences, "MAX_LINE_CHARS", 1000)
    line = "word " * 1000  # 5000 characters, no sentence end
    out = split_sentences([line])
    assert len(out) >= 5
    assert " ".join(out).split() == line.split()
