"""Parsers for the two public paper lists the catalog was seeded from (see shared/data/SOURCES.md).

Each parser turns a list into `Row`s: one per table row or bullet, with the facts as written.
The importer merges rows into papers; the source-check test re-reads rows to compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: awesome-list area files in the order their rows take precedence (README repeats rows)
AREA_FILES = (
    "image-llm.md",
    "video-llm.md",
    "audio-llm.md",
    "vision-transformer.md",
    "audio-transformer.md",
    "README.md",
)
ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})(?:v\d+)?(?:\.pdf)?", re.I)
#: venue spellings of both lists -> taxonomy venue names
VENUE_NAMES = {
    "acm mm": "ACM MM",
    "trans. mach. learn. res.": "TMLR",
    "tmlr": "TMLR",
    "nips": "NeurIPS",
    "neurips": "NeurIPS",
}
KNOWN_VENUES = ["AAAI", "ACL", "CVPR", "COLING", "ECAI", "ECCV", "EMNLP", "ICASSP", "ICCV", "ICLR", "ICML", "ICME", "IJCV", "Interspeech", "IROS", "NAACL", "NeurIPS", "TMLR", "TPAMI", "WACV"]


@dataclass
class Venue:
    """A venue as a list states it; `year` None where the list omits it."""

    name: str
    year: int | None
    track: str = "main"
    presentation: str | None = None


@dataclass
class Row:
    """One paper as one row of one list states it."""

    source: str  # "awesome-list/image-llm.md:17"
    title: str
    paper_url: str
    arxiv: str | None
    authors: list[str] = field(default_factory=list)
    venue: Venue | None = None
    arxiv_badge: tuple[int, int] | None = None  # (year, month) of a red arXiv badge
    areas: list[str] = field(default_factory=list)  # "Image-LLM", "GUI-Agent", ...
    mechanisms: list[str] = field(default_factory=list)
    costs: list[str] = field(default_factory=list)
    code: str | None = None
    model: str | None = None
    dataset: str | None = None
    method: str | None = None
    tags: list[str] = field(default_factory=list)  # awesome-token-compress: the other tags
    section_year: int | None = None


def known_venue(raw: str) -> str | None:
    """The taxonomy spelling of a venue name, None when `raw` names no known venue."""
    text = raw.strip()
    if text.lower() in VENUE_NAMES:
        return VENUE_NAMES[text.lower()]
    for name in KNOWN_VENUES:
        if text.lower() == name.lower():
            return name
    return None


def arxiv_id(url: str) -> str | None:
    """The arXiv id in an arXiv URL (abs or pdf, with or without version), else None."""
    match = ARXIV_URL.search(url)
    return match.group(1) if match else None


def _shield_text(text: str) -> str:
    """Undo shields.io escaping: `--` is a dash, `_` a space, `\\.` a dot."""
    return text.replace("\\.", ".").replace("--", "\x00").replace("_", " ").replace("\x00", "-")


def _split_badge(badge: str) -> tuple[str, str]:
    """`CVPR_Highlight-2025` -> ("CVPR Highlight", "2025"); `Image--LLM` -> ("Image-LLM", "")."""
    parts = re.split(r"(?<!-)-(?!-)", badge.replace("--", "\x00"))
    parts = [part.replace("\x00", "--") for part in parts]
    label = _shield_text(parts[0])
    message = _shield_text("-".join(parts[1:])) if len(parts) > 1 else ""
    return label, message


def parse_publish_badge(badge: str) -> Venue:
    """A blue badge (`CVPR_Highlight-2025`, `EMNLP_Findings-2024`, `EMNLP-`) as a `Venue`."""
    label, message = _split_badge(badge)
    words = label.split()
    track, presentation = "main", None
    if words and words[-1].lower() in ("oral", "highlight", "spotlight", "poster"):
        presentation = words.pop().lower()
    if words and words[-1].lower() in ("findings", "workshop"):
        track = words.pop().lower()
    raw = " ".join(words)
    name = known_venue(raw) or raw
    year = int(message) if message.isdigit() else None
    return Venue(name, year, track, presentation)


def parse_awesome_list(folder: Path) -> list[Row]:
    """Every table row of the awesome-list files, in `AREA_FILES` order."""
    rows: list[Row] = []
    for name in AREA_FILES:
        path = folder / name
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("|  [!") or line.startswith("| [!"):
                rows.append(_table_row(line, f"{path.parent.name}/{name}:{number}"))
    return rows


def _table_row(line: str, source: str) -> Row:
    """One awesome-list table row: badges<br>[title](url)<br>authors | areas | tags | links."""
    cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
    if len(cells) != 4:
        raise ValueError(f"{source}: expected 4 table cells, found {len(cells)}")
    head, areas, tags, links = cells
    parts = head.split("<br>")
    badges, title_part = parts[0], parts[1]
    authors_text = parts[2].strip() if len(parts) > 2 else ""
    match = re.match(r"\s*\[(.+)\]\((\S+)\)\s*$", title_part)
    if not match:
        raise ValueError(f"{source}: no [title](url) in {title_part!r}")
    title, paper_url = " ".join(match.group(1).split()), match.group(2)
    row = Row(source=source, title=title, paper_url=paper_url, arxiv=arxiv_id(paper_url))
    row.authors = [a.strip() for a in authors_text.split(",") if a.strip()]
    publish = re.search(r"badge/([^)]*)-blue\)", badges)
    red = re.search(r"badge/arXiv-(\d{4})\\?\.(\d{2})-red\)", badges)
    if publish:
        row.venue = parse_publish_badge(publish.group(1))
    elif red:
        row.arxiv_badge = (int(red.group(1)), int(red.group(2)))
    row.areas = [_split_badge(b)[0] for b in re.findall(r"badge/([^)]*)-purple\)", areas)]
    for badge in re.findall(r"badge/([^)]*)-(?:green|yellow)\)", tags):
        label = _split_badge(badge)[0]
        if label.endswith("-Based") and label.startswith("Training"):
            row.costs.append("training-based")
        elif label == "Training-Free":
            row.costs.append("training-free")
        elif label.endswith("-Based"):
            row.mechanisms.append(label.removesuffix("-Based").lower())
    for label, url in re.findall(r"\[([^\]]+)\]\((\S+?)\)", links):
        if label == "GitHub" and row.code is None:
            row.code = url
        elif label == "Model" and row.model is None:
            row.model = url
        elif label == "Dataset" and row.dataset is None:
            row.dataset = url
    return row


def parse_token_compress(folder: Path) -> list[Row]:
    """Every bullet of awesome-token-compress/README.md, with its section (VLM / Vit) and year."""
    path = folder / "README.md"
    rows: list[Row] = []
    section, year = "", None
    item: list[str] = []
    start = 0

    def flush() -> None:
        if item:
            rows.append(_bullet(" ".join(item), f"{path.parent.name}/README.md:{start}", section, year))

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            flush()
            item = []
            if line.startswith("## "):
                section = line[3:].strip()
            elif line.startswith("### ") and line[4:].strip().isdigit():
                year = int(line[4:].strip())
        elif line.lstrip().startswith("- "):
            flush()
            item, start = [line.strip()], number
        elif item and line.strip():
            item.append(line.strip())
    flush()
    return rows


def _bullet(text: str, source: str, section: str, year: int | None) -> Row:
    """One bullet: [badge] [title](url) . [Method;Venue;Video;[GitHub](url)]."""
    match = re.search(
        r"\[((?:[^\[\]]|\[[^\[\]]*\])+)\]\((\S+?)\)\s*\.?\s*(.*)$", text.split("/>", 1)[-1]
    )
    if not match:
        raise ValueError(f"{source}: no [title](url) in {text!r}")
    title = " ".join(match.group(1).split())
    paper_url, rest = match.group(2), match.group(3)
    row = Row(source=source, title=title, paper_url=paper_url, arxiv=arxiv_id(paper_url))
    badge = re.search(r"badge/arXiv-(\d{4}\.\d{4,5})-red", text)
    if badge and row.arxiv is None:
        row.arxiv = badge.group(1)
    row.section_year = year
    row.areas = ["VLM" if section.upper() == "VLM" else "ViT"]
    code = re.search(r"\[Git[Hh]ub\]\((\S+?)\)", rest)
    if code:
        row.code = code.group(1)
    rest = re.sub(r"\[Git[Hh]ub\]\(\S+?\)", "", rest)
    tags = [tag.strip(" []:") for tag in re.split(r"[;\t]", rest.replace("][", ";"))]
    tags = [" ".join(tag.split()) for tag in tags if tag.strip(" []:")]
    for index, tag in enumerate(tags):
        venue = _venue_tag(tag)
        if venue:
            row.venue = venue
        elif index == 0 and tag.lower() not in ("video", "survey", "audio-video"):
            row.method = tag.rstrip(":").strip()
        else:
            row.tags.append(tag)
    return row


def _venue_tag(tag: str) -> Venue | None:
    """`CVPR 2025`, `2025 CVPR`, `ICLR2025`, `NIPS2025`, `ICCV` -> Venue, else None."""
    match = re.fullmatch(r"(?:(\d{4})\s*)?([A-Za-z]+)\s*(\d{4})?", tag)
    if not match:
        return None
    name = known_venue(match.group(2))
    if name is None:
        return None
    year = match.group(1) or match.group(3)
    return Venue(name, int(year) if year else None)


#: awesome-token-reduction domain headings -> the area the importer reads them as
REDUCTION_DOMAINS = {
    "vision": "ViT",
    "language": "LLM",
    "vision-language (action) model": "VLM",
    "agentic systems": "Agent",
    "state space models": "SSM",
    "hardware co-design": "Hardware",
}
#: awesome-token-reduction venue spellings that are not taxonomy names as written
REDUCTION_VENUES = {"NEURIPSW": ("NeurIPS", "workshop"), "CVPRW": ("CVPR", "workshop")}


def parse_token_reduction(folder: Path) -> list[Row]:
    """Every bullet of awesome-token-reduction/README.md, with its domain heading and year.

    Bullets read `* [**VENUE'YY**] Title [[Paper](url)] [[Code](url)]` (or `* [arXiv] ...`);
    a `Finding` or `Workshop` word after the venue names the track.
    """
    path = folder / "README.md"
    rows: list[Row] = []
    domain, year = "", None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("## "):
            heading = re.sub(r"[^\w\s()\-]", "", line[3:]).strip().lower()
            domain = REDUCTION_DOMAINS.get(heading, "")
        elif line.startswith("#### ") and line[5:].strip().isdigit():
            year = int(line[5:].strip())
        elif line.startswith("* [") and domain and "[Paper](" in line:  # else a software project
            rows.append(_reduction_bullet(line, f"{path.parent.name}/README.md:{number}", domain, year))
    return rows


def _reduction_bullet(line: str, source: str, domain: str, year: int | None) -> Row:
    match = re.match(r"\* \[(.*?)\]\s*(.+?)\s*\[\[Paper\]\(\s*(\S+?)\s*\)\](.*)$", line)
    if not match:
        raise ValueError(f"{source}: no `[VENUE] Title [[Paper](url)]` in {line!r}")
    tag, title, paper_url, rest = match.groups()
    row = Row(source=source, title=" ".join(title.split()), paper_url=paper_url, arxiv=arxiv_id(paper_url))
    row.areas, row.section_year = [domain], year
    code = re.search(r"\[\[Code\]\(\s*(\S+?)\s*\)\]", rest)
    row.code = code.group(1) if code else None
    venue = re.fullmatch(r"\*\*([A-Za-z0-9 ]+?)(?:'(\d{2}))?\*\*\s*(Finding|Workshop)?", tag.strip())
    if venue and venue.group(1).lower() != "arxiv":
        raw, short_year, track = venue.groups()
        name, stated_track = REDUCTION_VENUES.get(raw.upper(), (known_venue(raw) or raw, "main"))
        track = {"Finding": "findings", "Workshop": "workshop"}.get(track or "", stated_track)
        row.venue = Venue(name, 2000 + int(short_year) if short_year else None, track)
    return row


#: token-level-compression files -> the area of their entries
LEVEL_FILES = {
    "vision-understanding.md": "ViT",
    "multimodal-understanding.md": "VLM",
    "audio-speech.md": "Audio-Transformer",
}
LEVEL_VENUE = re.compile(r"^(?:(findings|fingdings) of )?([A-Za-z ]+?)(w)?\s+(\d{4})$", re.I)


def parse_token_level(folder: Path) -> list[Row]:
    """Every numbered entry of the token-level-compression files: `**[n] Title**, VENUE YEAR.`,
    then the authors in italics, then the links and badges."""
    rows: list[Row] = []
    for name, area in LEVEL_FILES.items():
        path = folder / name
        lines = path.read_text(encoding="utf-8").splitlines()
        video = False
        for number, line in enumerate(lines, 1):
            if line.startswith("### "):
                video = line.startswith("### Video") or (video and line[4:].strip().isdigit())
            head = re.match(r"\s*- \*\*\[\d+\]\s*(.+?)\*\*\s*,?\s*(.*?)\.?\s*(?:<br>)?\s*$", line)
            if head:
                block = _entry_block(lines, number)
                rows.append(_level_entry(head.groups(), block, f"{path.parent.name}/{name}:{number}", area, video))
    return rows


def _entry_block(lines: list[str], number: int) -> list[str]:
    """The lines after an entry's head, up to the next entry or heading."""
    block = []
    for line in lines[number:]:
        if re.match(r"\s*- \*\*\[\d+\]", line) or line.startswith("#"):
            break
        if line.strip():
            block.append(line.strip())
    return block


def _level_entry(head: tuple[str, str], block: list[str], source: str, area: str, video: bool) -> Row:
    title = re.sub(r"<sup>(.*?)</sup>", r"\1", head[0]).strip()
    links = " ".join(line for line in block if "[Paper]" in line)
    paper = re.search(r"\[\[Paper\]\((\S+?)\)\]", links)
    if not paper:
        raise ValueError(f"{source}: no [[Paper](url)] under {title!r}")
    row = Row(source=source, title=" ".join(title.split()), paper_url=paper.group(1), arxiv=arxiv_id(paper.group(1)))
    if row.arxiv is None:
        doi = re.search(r"10\.48550/arXiv\.(\d{4}\.\d{4,5})", paper.group(1), re.I)
        row.arxiv = doi.group(1) if doi else None
    authors = next((line for line in block if line.startswith("*") and not line.startswith("**")), "")
    row.authors = _level_authors(authors.replace("<br>", "").strip("*. "))
    venue = LEVEL_VENUE.match(head[1].replace("<br>", "").strip())
    if venue and venue.group(2).strip().lower() != "arxiv":
        findings, raw, workshop, year = venue.groups()
        track = "findings" if findings else "workshop" if workshop else "main"
        row.venue = Venue(known_venue(raw) or raw.strip(), int(year), track)
    code = re.search(r"\[\[Code\]\((\S+?)\)\]", links)
    row.code = code.group(1) if code else None
    row.areas = [area] + (["Video"] if video else [])
    badges = re.findall(r"badge/([^)]*?)-(blue|brown|purple|orange)\)", links)
    row.method = next((_shield_text(text) for text, colour in badges if colour == "blue"), None)
    for text, colour in badges:
        label = _shield_text(text).lower()
        if label == "training free":
            row.costs.append("training-free")
        elif label in ("training based", "parametric"):
            row.costs.append("training-based")
        elif colour == "purple" and label.endswith(" based") and label[:-6] in ("attention", "similarity"):
            row.mechanisms.append(label[:-6])
    return row


def _level_authors(text: str) -> list[str]:
    """`Shen, Leqi and Hao, Tianxiang` or `Leqi Shen, Tianxiang Hao` -> ['Leqi Shen', ...]."""
    if not text:
        return []
    if " and " in text:
        parts = [part.strip() for part in text.split(" and ")]
        return [" ".join(reversed([p.strip() for p in part.split(",", 1)])) if "," in part else part for part in parts]
    return [part.strip() for part in text.split(",") if part.strip()]
