"""mkdocs hook: figures from results/ in the built site, without copying them into docs/.

A page shows a figure of the repository's ``results/`` folder with plain HTML whose path is relative to the page's
own source file, so it also resolves when the Markdown is read in the repository::

    <img src="../results/cifar10_cpu/label_efficiency.png" alt="...">

mkdocs does not check raw HTML, so this hook does: a referenced file that does not exist is a warning (an error
under ``--strict``). Each referenced file is copied to ``<site>/results/...`` after the build, and the path in the
page is rewritten to reach it from the page's address.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # docs/hooks/ -> the repository
RESULTS = ROOT / "results"
ATTR = re.compile(r'(?P<attr>\b(?:src|href))="(?P<path>(?:\.\./)+results/[^"#?<>\s]+)"')

log = logging.getLogger("mkdocs.hooks.results_figures")
_used: set[Path] = set()


def on_pre_build(config) -> None:
    _used.clear()


def on_page_markdown(markdown: str, page, config, files) -> str:
    source_dir = (Path(config["docs_dir"]) / page.file.src_uri).parent

    def rewrite(match: re.Match) -> str:
        target = (source_dir / match["path"]).resolve()
        if not target.is_relative_to(RESULTS):
            return match[0]
        if not target.is_file():
            log.warning("%s: %s does not exist", page.file.src_uri, target.relative_to(ROOT))
            return match[0]
        _used.add(target)
        in_site = target.relative_to(ROOT).as_posix()  # results/<suite>/<file>, at the site's root
        page_dir = page.url if page.url.endswith("/") or not page.url else posixpath.dirname(page.url)
        return f'{match["attr"]}="{posixpath.relpath(in_site, page_dir or ".")}"'

    return ATTR.sub(rewrite, markdown)


def on_post_build(config) -> None:
    site = Path(config["site_dir"])
    for source in sorted(_used):
        target = site / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
