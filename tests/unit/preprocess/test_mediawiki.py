from collections import Counter

import pytest

from preprocess.documents import Document, ReadParams, document_id
from preprocess.inputs import read_file
from preprocess.mediawiki import dump_documents, paragraphs
from tests.wiki_dump import dump_xml, write_dump

ARTICLE = """{{Short description|English mathematician}}
{{Infobox person
| name = Ada Lovelace
| birth_date = {{birth date|1815|12|10}}
}}
'''Ada Lovelace''' ({{IPA|ˈlʌvleɪs}}; 10 December 1815 – 27 November 1852) was an [[England|English]] \
[[mathematician]] and ''writer''.<ref>{{cite web |url=https://example.org |title=Ada}}</ref> She wrote on the \
[[Analytical Engine]] &amp; its uses.<ref name="toole"/>
Her notes were
published in 1843.<!-- a hidden comment -->

== Early life ==
[[File:Ada Lovelace portrait.jpg|thumb|upright|Ada in 1840, by [[Alfred Edward Chalon]]]]
Ada was born in [[London]]. See [https://example.org/ada the archive] or https://example.org/plain.
{| class="wikitable"
|-
! Year !! Event
|-
| 1843 || Notes
|}
* a list item
# a numbered item
: an indented line
Her father was <small>Lord</small> Byron.<br/>Her mother was Anne.<math>E = mc^2</math>
<gallery>
Ada.jpg|A caption
</gallery>
__NOTOC__
[[:Category:Mathematicians|Other mathematicians]] wrote about her.

=== Legacy ===
<blockquote>Ada Lovelace Day</blockquote> is held in October.
<references />

[[Category:English mathematicians]]
[[de:Ada Lovelace]]
[[zh-yue:愛達·勒芙蕾絲]]
"""

EXPECTED = [
    "Ada Lovelace (10 December 1815 – 27 November 1852) was an English mathematician and writer. She wrote on "
    "the Analytical Engine & its uses. Her notes were published in 1843.",
    "Ada was born in London. See the archive or https://example.org/plain.",
    "Her father was Lord Byron. Her mother was Anne.",
    "Other mathematicians wrote about her.",
    "Ada Lovelace Day is held in October.",
]


def test_an_article_becomes_its_paragraphs_without_markup():
    assert paragraphs(ARTICLE) == EXPECTED


def test_broken_markup_is_kept_as_the_text_mediawiki_shows():
    text = "Unclosed [[link and {{template here.\n\nA '''bold start and a [[good link|link]]."
    assert paragraphs(text) == ["Unclosed [[link and {{template here.", "A bold start and a link."]


def test_headings_end_paragraphs_and_are_not_text():
    assert paragraphs("First paragraph.\n== Heading ==\nSecond one.") == ["First paragraph.", "Second one."]


PAGES = [
    {"page_id": 12, "title": "Ada Lovelace", "text": ARTICLE},
    {"page_id": 13, "title": "Lovelace", "text": "#REDIRECT [[Ada Lovelace]]", "redirect": "Ada Lovelace"},
    {"page_id": 14, "title": "Old name", "text": "#redirect [[Ada Lovelace]]"},  # no <redirect> element
    {"page_id": 15, "title": "Talk:Ada Lovelace", "text": "Is she the first programmer?", "ns": 1},
    {"page_id": 16, "title": "Ada (disambiguation)",
     "text": "'''Ada''' may refer to:\n* [[Ada Lovelace]]\n* [[Ada (language)]]\n{{disambiguation}}"},
    {"page_id": 17, "title": "Broken", "text": "Unclosed [[link and {{template here."},
    {"page_id": 18, "title": "Only a table", "text": "{|\n| 1 || 2\n|}\n[[Category:Tables]]"},
    {"page_id": 18, "title": "Same id again", "text": "Never read."},
    {"page_id": 20, "title": "Ada (programming language)", "text": "'''Ada''' is a programming language."},
]


def test_a_dump_gives_its_articles_and_counts_the_rest(tmp_path):
    path = write_dump(tmp_path / "wiki-pages-articles.xml", PAGES)
    stats = Counter()
    docs = list(read_file(2, str(path), ReadParams(), stats))
    assert docs == [
        Document(document_id(2, 12), EXPECTED),
        Document(document_id(2, 17), ["Unclosed [[link and {{template here."]),
        Document(document_id(2, 20), ["Ada is a programming language."]),
    ]
    assert {k: v for k, v in stats.items() if k.startswith("wiki_")} == {
        "wiki_redirect": 2, "wiki_not_article": 1, "wiki_disambiguation": 1, "wiki_empty": 1, "wiki_bad_page_id": 1}
    assert stats["documents_read"] == 3 and stats["files"] == 1


@pytest.mark.parametrize("streams_of", [0, 2])
def test_bz2_and_multistream_dumps_read_as_the_plain_xml(tmp_path, streams_of):
    plain = list(read_file(0, str(write_dump(tmp_path / "a.xml", PAGES)), ReadParams(), Counter()))
    path = write_dump(tmp_path / "a.xml.bz2", PAGES, streams_of=streams_of)
    assert list(read_file(0, str(path), ReadParams(), Counter())) == plain


def test_a_truncated_dump_keeps_the_articles_before_the_cut(tmp_path):
    pages = [{"page_id": i, "title": f"P{i}", "text": f"Article number {i} has some text."} for i in range(1, 3000)]
    path = write_dump(tmp_path / "cut.xml.bz2", pages, streams_of=100)  # Wikipedia's multistream layout
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    stats = Counter()
    docs = list(read_file(0, str(path), ReadParams(), stats))
    assert 0 < len(docs) < len(pages)
    assert docs[:2] == [Document(1, ["Article number 1 has some text."]), Document(2, ["Article number 2 has some text."])]
    assert stats["file_corrupt"] == 1 and stats["errors"] == 1
    # cut inside the XML itself (uncompressed): the same
    cut = tmp_path / "cut.xml"
    cut.write_text(dump_xml(pages)[:50_000])
    stats = Counter()
    docs = list(read_file(0, str(cut), ReadParams(), stats))
    assert 0 < len(docs) < len(pages) and stats["file_corrupt"] == 1


def test_xml_that_is_not_a_dump_is_counted(tmp_path):
    (tmp_path / "other.xml").write_text("<html><body><p>Not a dump.</p></body></html>")
    stats = Counter()
    assert list(read_file(0, str(tmp_path / "other.xml"), ReadParams(), stats)) == []
    assert stats["file_not_mediawiki"] == 1


def test_memory_does_not_grow_with_the_dump(monkeypatch):
    """Pages already read are dropped from the tree: the root holds what the parser has read ahead
    (a 16 KB chunk's pages), the same for 10x the pages."""
    import io
    import xml.etree.ElementTree as ET

    real = ET.iterparse

    def most_held(n: int) -> int:
        roots, sizes = [], [0]

        def spy(source, events):
            for event, elem in real(source, events):
                if roots:
                    sizes.append(len(roots[0]))
                elif event == "start":
                    roots.append(elem)
                yield event, elem

        monkeypatch.setattr(ET, "iterparse", spy)
        pages = [{"page_id": i, "title": f"P{i}", "text": f"Text {i}."} for i in range(1, n + 1)]
        assert len(list(dump_documents(io.BytesIO(dump_xml(pages).encode()), Counter()))) == n
        return max(sizes)

    small, large = most_held(300), most_held(3000)
    assert small < 300 and large <= small + 2


def test_markup_the_parser_gives_up_on_loses_that_page_only(tmp_path):
    pages = [{"page_id": 1, "title": "Deep", "text": "{{" * 5000 + "x" + "}}" * 5000},
             {"page_id": 2, "title": "Fine", "text": "A fine article."}]
    stats = Counter()
    docs = list(read_file(0, str(write_dump(tmp_path / "d.xml", pages)), ReadParams(), stats))
    assert docs == [Document(2, ["A fine article."])] and stats["wiki_unparsable"] == 1
