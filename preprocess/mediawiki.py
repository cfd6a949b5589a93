"""MediaWiki XML dumps (Wikipedia's ``*-pages-articles*.xml[.bz2]``): articles as plain paragraphs.

:func:`dump_documents` streams a dump's ``<page>`` elements with the standard library's
``iterparse`` (each page is dropped once read, so memory is one page whatever the dump's
size; a multistream ``.bz2`` is a series of bz2 streams, which Python's ``bz2`` reads as
one). Kept: articles (namespace 0) that are not redirects or disambiguation pages. The
rest are counted by reason into ``stats``:

* ``wiki_not_article``: another namespace (talk, user, template, category ...);
* ``wiki_redirect``: a ``<redirect>`` element or ``#REDIRECT`` text;
* ``wiki_disambiguation``: a disambiguation template (:data:`DISAMBIGUATION`), a list of
  links rather than prose;
* ``wiki_empty``: no text left once the markup is removed;
* ``wiki_unparsable``: markup the parser gives up on (it raised: this page only);
* ``wiki_bad_page_id``: a page id that is missing, not a number, past 2^40, or not greater
  than the previous page's (dumps are in page-id order; ids must be unique, since a
  document's id is its page id).

:func:`paragraphs` turns wikitext into plain text with mwparserfromhell's parse tree
(chosen over wikitextparser for its node tree: a node per construct, with tag names and
flags for list and heading markup, which we walk with exactly one rule per kind of markup;
wikitextparser's ``plain_text()``, 1.9x faster on the benchmark's wikitext, keeps tables,
lists, headings, math, galleries, categories and interlanguage links as text). As in
BERT's paper ("we extract only the text passages and ignore lists, tables, and
headers"): templates, references, tables, math, galleries, files and images,
categories, interlanguage links, HTML comments, behaviour switches (``__TOC__``),
headings and list lines are removed; link text, bold and italic text, the title of a
bracketed external link and a bare URL are kept. Headings end paragraphs; the article's title is not
part of its text. Broken markup (an unclosed ``[[`` or ``{{``) is kept as the text
MediaWiki itself would show (an unclosed ``'''`` is bold to the line's end: removed).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.parser import ParserError

MAX_PAGE_ID = 1 << 40
# Templates that mark a disambiguation page (lower case, spaces for underscores); also any name
# ending in " disambiguation" ("Hospital disambiguation", ...). English Wikipedia's names and a few
# other languages' most used ones.
DISAMBIGUATION = frozenset({
    "disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "set index article",
    "begriffsklärung", "homonymie", "disambigua", "desambiguación", "desambiguação", "неоднозначность",
    "曖昧さ回避", "消歧义",
})
# Tags whose contents are not prose: dropped with what they hold.
DROPPED_TAGS = frozenset({
    "ref", "references", "table", "math", "chem", "ce", "gallery", "imagemap", "timeline", "graph", "mapframe",
    "maplink", "score", "syntaxhighlight", "source", "pre", "templatedata", "templatestyles", "inputbox",
    "categorytree", "hiero", "poem", "div", "caption", "noinclude", "includeonly", "onlyinclude", "section",
})
LIST_TAGS = frozenset({"li", "dt", "dd"})  # wiki list markup (* # ; :): the line is dropped
# Link prefixes that are not inline text: files, images, categories (a leading ':' makes a category an
# ordinary link, kept).
DROPPED_LINK_NAMESPACES = frozenset({"file", "image", "media", "category", "datei", "bild", "fichier", "kategorie",
                                     "catégorie", "categoría", "archivo", "imagen", "categoria", "ficheiro"})
_INTERLANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*|simple")  # [[de:...]], [[zh-yue:...]], [[simple:...]]
_QUOTES = re.compile(r"''+")  # bold/italic markup that mwparserfromhell left as text (unclosed: MediaWiki
# closes it at the line's end)
_SWITCH = re.compile(r"__[A-Z]+__")  # behaviour switches: __TOC__, __NOTOC__, __NOEDITSECTION__ ...
_SPACES = re.compile(r"[ \t\u00a0]+")
# " ( )" and "(; born" that removed templates leave ("f()" stays)
_EMPTY_BRACKETS = re.compile(r"(?<=\s)\(\s*[,;]?\s*\)|\(\s*[,;]\s*")


def dump_documents(stream: BinaryIO, stats: Counter) -> Iterator[tuple[int, list[str]]]:
    """(page id, paragraphs) of each article of a dump; what is skipped is counted in ``stats``.

    Raises ``ValueError`` on XML that is not well-formed (a truncated dump): the articles
    before the fault have been yielded.
    """
    previous_id = -1
    events = ET.iterparse(stream, events=("start", "end"))
    try:
        _, root = next(events)
        if _local(root.tag) != "mediawiki":
            stats["file_not_mediawiki"] += 1
            return
        for event, elem in events:
            if event != "end" or _local(elem.tag) != "page":
                continue
            page = _page_fields(elem)
            root.clear()  # the page and everything before it: memory stays one page
            reason, page_id = _skip_reason(page, previous_id)
            if page_id is not None:
                previous_id = page_id
            if reason:
                stats[reason] += 1
                continue
            try:
                code = mwparserfromhell.parse(page["text"])
                if _is_disambiguation(code):
                    stats["wiki_disambiguation"] += 1
                    continue
                lines = _paragraphs(code)
            except (ParserError, RecursionError):  # markup the parser gives up on: this page only
                stats["wiki_unparsable"] += 1
                continue
            if not lines:
                stats["wiki_empty"] += 1
                continue
            yield page_id, lines
    except ET.ParseError as e:
        raise ValueError(f"malformed XML: {e}") from None


def _local(tag: str) -> str:
    """A tag without its namespace: ``{http://www.mediawiki.org/xml/export-0.11/}page`` -> ``page``."""
    return tag.rsplit("}", 1)[-1]


def _page_fields(page: ET.Element) -> dict:
    fields = {"ns": "0", "id": None, "redirect": False, "text": ""}
    for child in page:
        name = _local(child.tag)
        if name in ("ns", "id"):
            fields[name] = (child.text or "").strip()
        elif name == "redirect":
            fields["redirect"] = True
        elif name == "revision":
            for part in child:
                if _local(part.tag) == "text":
                    fields["text"] = part.text or ""
    return fields


def _skip_reason(page: dict, previous_id: int) -> tuple[str | None, int | None]:
    """(why the page is skipped or None, its page id if it has a valid one)."""
    try:
        page_id = int(page["id"])
    except (TypeError, ValueError):
        return "wiki_bad_page_id", None
    if not 0 <= page_id < MAX_PAGE_ID or page_id <= previous_id:
        return "wiki_bad_page_id", None
    if page["ns"] != "0":
        return "wiki_not_article", page_id
    if page["redirect"] or page["text"].lstrip()[:9].upper() == "#REDIRECT":
        return "wiki_redirect", page_id
    return None, page_id


def _is_disambiguation(code) -> bool:
    for template in code.filter_templates(recursive=False):
        name = str(template.name).strip().replace("_", " ").lower()
        if name in DISAMBIGUATION or name.endswith(" disambiguation"):
            return True
    return False


def paragraphs(wikitext: str) -> list[str]:
    """The plain-text paragraphs of an article's wikitext, one string each (see the module's rules)."""
    return _paragraphs(mwparserfromhell.parse(wikitext))


def _paragraphs(code) -> list[str]:
    out: list[str] = []
    _Renderer(out).render(code)
    text = _SWITCH.sub("", "".join(out))
    result = []
    for block in re.split(r"\n[ \t]*\n", text):
        para = " ".join(line.strip() for line in block.split("\n") if line.strip())
        para = _EMPTY_BRACKETS.sub(lambda m: "" if m.group(0).endswith(")") else "(", para)
        para = _SPACES.sub(" ", para).strip()
        if any(c.isalnum() for c in para):
            result.append(para)
    return result


class _Renderer:
    """Appends the plain text of a parse tree's nodes to ``out``; a list item drops its line."""

    def __init__(self, out: list[str]):
        self.out = out
        self.skip_line = False  # inside a list item: text up to the next newline is dropped

    def render(self, code) -> None:
        for node in code.nodes:
            self.node(node)

    def text(self, value: str) -> None:
        if self.skip_line:
            nl = value.find("\n")
            if nl < 0:
                return
            self.skip_line = False
            value = value[nl:]
        self.out.append(value)

    def node(self, node) -> None:
        if isinstance(node, Text):
            self.text(_QUOTES.sub("", node.value))
        elif isinstance(node, (Template, Comment, Argument)):
            pass
        elif isinstance(node, HTMLEntity):
            self.text(node.normalize())
        elif isinstance(node, Heading):
            self.skip_line = False
            self.out.append("\n\n")
        elif isinstance(node, Wikilink):
            self.wikilink(node)
        elif isinstance(node, ExternalLink):
            if not node.brackets:  # a bare URL: shown as written
                self.text(str(node.url))
            elif node.title is not None:
                self.render(node.title)
        elif isinstance(node, Tag):
            self.tag(node)
        else:  # any node type a later mwparserfromhell adds: its own plain text
            self.text(str(node.__strip__(normalize=True, collapse=True, keep_template_params=False) or ""))

    def wikilink(self, link: Wikilink) -> None:
        title = str(link.title).strip()
        prefix, colon, _ = title.partition(":")
        prefix = prefix.strip().lower()
        if colon and (prefix in DROPPED_LINK_NAMESPACES or (link.text is None and _INTERLANGUAGE.fullmatch(prefix))):
            return
        if link.text is not None:
            self.render(link.text)
        else:
            self.text(title.lstrip(":"))

    def tag(self, tag: Tag) -> None:
        name = str(tag.tag).strip().lower()
        if name in LIST_TAGS and tag.wiki_markup:
            self.skip_line = True
        elif name == "br":
            self.text(" ")
        elif name in DROPPED_TAGS or tag.self_closing or tag.contents is None:
            return
        else:  # b, i, small, span, sup, sub, blockquote, nowiki, ...: their contents
            self.render(tag.contents)
