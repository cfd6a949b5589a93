"""Small MediaWiki XML dumps for the tests: the export format Wikipedia's dumps use."""

from __future__ import annotations

import bz2
import re
from pathlib import Path
from xml.sax.saxutils import escape

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
    </namespaces>
  </siteinfo>
"""
FOOTER = "</mediawiki>\n"


def page_xml(page_id: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    redirect_xml = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n{redirect_xml}"
        f"    <revision>\n      <id>{page_id * 10}</id>\n      <contributor><id>7</id></contributor>\n"
        f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
        "    </revision>\n  </page>\n"
    )


def dump_xml(pages: list[dict]) -> str:
    """``pages``: dicts of :func:`page_xml`'s arguments."""
    return HEADER + "".join(page_xml(**p) for p in pages) + FOOTER


def write_dump(path: Path, pages: list[dict], streams_of: int = 0) -> Path:
    """The dump as ``path``: bz2-compressed when it ends in .bz2, as a multistream file of
    ``streams_of`` pages per bz2 stream (Wikipedia's multistream layout) when that is set."""
    if not str(path).endswith(".bz2"):
        path.write_text(dump_xml(pages), encoding="utf-8")
        return path
    if not streams_of:
        path.write_bytes(bz2.compress(dump_xml(pages).encode()))
        return path
    parts = [HEADER] + ["".join(page_xml(**p) for p in pages[i : i + streams_of])
                        for i in range(0, len(pages), streams_of)] + [FOOTER]
    path.write_bytes(b"".join(bz2.compress(part.encode()) for part in parts))
    return path


def plain_documents(documents: list[list[str]]) -> list[list[str]]:
    """Documents without the lines that hold a character of wiki markup (so that an article made of them
    reads back as exactly those lines); those left with none are dropped."""
    def plain(line: str) -> bool:
        return not (set("[]{}'<>&|~") & set(line) or "__" in line or line[0] in "*#:;=" or line.endswith("=")
                    or re.search(r"\(\s*[,;)]", line))

    kept = [[line for line in doc if plain(line)] for doc in documents]
    return [doc for doc in kept if doc]


def wiki_pages(documents: list[list[str]], first_id: int = 10) -> list[dict]:
    """Articles made of real text: each document's lines as paragraphs, with the markup that the reader
    removes around them (an infobox, references, a heading, a category, an interlanguage link) and links
    whose text it keeps; every tenth page a talk page and every seventh a redirect, which it skips."""
    pages = []
    for i, lines in enumerate(documents):
        page_id = first_id + 2 * i
        body = []
        for j, line in enumerate(lines):
            words = line.split(" ")
            if len(words) > 3:  # a link around the second word: its text stays
                words[1] = f"[[{words[1]} (topic)|{words[1]}]]"
            body.append(" ".join(words) + ("<ref>{{cite book|title=Source}}</ref>" if j % 3 == 0 else ""))
            if j == 2:
                body.append("\n== Section ==")
        text = "{{Infobox thing|name=Page}}\n" + "\n\n".join(body) + f"\n\n[[Category:Things]]\n[[de:Seite {i}]]"
        if i % 10 == 9:
            pages.append({"page_id": page_id, "title": f"Talk:Page {i}", "text": text, "ns": 1})
        elif i % 7 == 6:
            pages.append({"page_id": page_id, "title": f"Page {i}", "text": "#REDIRECT [[Page 1]]",
                          "redirect": "Page 1"})
        else:
            pages.append({"page_id": page_id, "title": f"Page {i}", "text": text})
    return pages
