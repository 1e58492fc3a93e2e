"""The run's report (``results/report/``) as one HTML fragment for the page's third tab.

``report/index.md`` (retrieval table, trade-off, map prediction, hierarchy, figures) is
rendered with markdown-it (raw HTML in the Markdown is escaped, not passed through). Figures
are listed once at start-up and served by number (``/report/figures/<n>.png``): a request
never names a file. Links to files of the run (Parquet tables) become plain text.
"""

from __future__ import annotations

from pathlib import Path

INDEX = "index.md"
RETRIEVAL = "retrieval.md"


def figure_url(index: int) -> str:
    return f"/report/figures/{index}.png"


class RunReport:
    """The report folder of a run, read once.

    Parameters
    ----------
    folder : path-like
        ``results/report`` (may be missing: the tab then says the report is not built).
    """

    def __init__(self, folder):
        self.folder = Path(folder).resolve()  # the server may change its working folder later
        figure_dir = self.folder / "figures"
        self.figures: list[Path] = sorted(figure_dir.glob("*.png")) if figure_dir.is_dir() else []
        self._number = {path.resolve(): i for i, path in enumerate(self.figures)}
        self._html: str | None = None

    @property
    def available(self) -> bool:
        return (self.folder / INDEX).is_file() or (self.folder / RETRIEVAL).is_file()

    def figure_path(self, index: int) -> Path | None:
        """The figure with this number, or None."""
        return self.figures[index] if 0 <= index < len(self.figures) else None

    def html(self) -> str:
        """The report as an HTML fragment (rendered once, then kept)."""
        if self._html is None:
            self._html = self._render()
        return self._html

    def _render(self) -> str:
        source = next((self.folder / name for name in (INDEX, RETRIEVAL)
                       if (self.folder / name).is_file()), None)
        if source is None:
            return ("<p>The run has no report yet (<code>results/report/index.md</code> is "
                    "missing): run <code>snakemake --cores all</code> to build it.</p>")
        from markdown_it import MarkdownIt

        markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
        tokens = markdown.parse(source.read_text())
        for token in tokens:
            for child in token.children or []:
                self._rewrite(child, source.parent)
        return markdown.renderer.render(tokens, markdown.options, {})

    def _rewrite(self, token, page_dir: Path) -> None:
        """Point images at the figure route; turn links to run files into plain text."""
        if token.type == "image":
            number = self._number.get((page_dir / str(token.attrGet("src"))).resolve())
            if number is None:  # not a figure of this report: keep its caption only
                token.type, token.children = "text", None
                token.content = f"[{token.content}]"
            else:
                token.attrSet("src", figure_url(number))
        elif token.type in ("link_open", "link_close"):
            href = str(token.attrGet("href") or "")
            if not href.startswith(("https://", "http://")):
                token.tag, token.attrs = "span", {}
