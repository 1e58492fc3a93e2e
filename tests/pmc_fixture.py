"""PubMed Central articles written by the tests, in the shape E-utilities' efetch returns them.

:data:`ARTICLES` are four articles: MNI peaks reported with SPM, Talairach peaks with AFNI, no
coordinate table, and one in the newer JATS form (``pub-id-type="pmcid"`` with a "PMC" prefix
instead of ``pub-id-type="pmc"``) whose coordinate table has no id and uses the Unicode minus
sign, as many PMC tables do. :data:`MORE_ARTICLES` add three MNI articles for multi-batch
downloads. :func:`write_pmc_download` lays them out as ``pubget.download_query_results``
leaves them, with a second, truncated articleset.
"""

from __future__ import annotations

import json
from pathlib import Path

MNI_PEAKS = [(-42.0, 24.0, 30.0), (40.0, 22.0, 32.0), (0.0, 16.0, 44.0)]
TAL_PEAKS = [(-38.0, -50.0, 44.0), (36.0, -54.0, 42.0)]
NO_ID_TABLE_PEAKS = [(-30.0, -60.0, 50.0), (34.0, -58.0, 48.0)]

_IDS_OLD = """<article-id pub-id-type="pmid">{pmid}</article-id>
<article-id pub-id-type="pmc">{pmcid}</article-id>"""
_IDS_NEW = """<article-id pub-id-type="pmid">{pmid}</article-id>
<article-id pub-id-type="pmcid">PMC{pmcid}</article-id>"""

_ARTICLE = """<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML" dtd-version="1.3" xml:lang="en" article-type="research-article">
<front>
<journal-meta><journal-title-group><journal-title>{journal}</journal-title></journal-title-group></journal-meta>
<article-meta>
{ids}
<article-id pub-id-type="doi">10.1000/fixture.{pmcid}</article-id>
<title-group><article-title>{title}</article-title></title-group>
<pub-date pub-type="epub"><day>1</day><month>3</month><year>{year}</year></pub-date>
<abstract><p>{abstract}</p></abstract>
<kwd-group><kwd>fMRI</kwd><kwd>working memory</kwd></kwd-group>
</article-meta>
</front>
<body>
<sec><title>Methods</title><p>{methods}</p></sec>
{table}
</body>
</article>"""

_TABLE = """<table-wrap{id_attribute} position="float"><label>Table {number}</label><caption><p>Activation peaks.</p></caption>
<table frame="hsides" rules="groups"><thead><tr><th>Region</th><th>x</th><th>y</th><th>z</th><th>Z score</th></tr></thead>
<tbody>{rows}</tbody></table></table-wrap>"""

_DOCTYPE = ('<!DOCTYPE pmc-articleset PUBLIC "-//NLM//DTD ARTICLE SET 2.0//EN" '
            '"https://dtd.nlm.nih.gov/ncbi/pmc/articleset/nlm-articleset-2.0.dtd">')


def _number(value: float, minus: str) -> str:
    return f"{value:g}".replace("-", minus)


def _table(peaks, table_id="tbl1", minus="-"):
    rows = "".join(
        f"<tr><td>region {i}</td><td>{_number(x, minus)}</td><td>{_number(y, minus)}</td>"
        f"<td>{_number(z, minus)}</td><td>4.1</td></tr>"
        for i, (x, y, z) in enumerate(peaks)
    )
    id_attribute = f' id="{table_id}"' if table_id else ""
    return _TABLE.format(id_attribute=id_attribute, number=1, rows=rows)


ARTICLES = [
    dict(pmcid=1001, pmid=9001, year=2019, journal="NeuroImage",
         title="Prefrontal cortex supports working memory updating",
         abstract="Participants performed an n-back task while we recorded fMRI.",
         methods="Images were normalised to MNI space with SPM12.", peaks=MNI_PEAKS),
    dict(pmcid=1002, pmid=9002, year=2020, journal="Cortex",
         title="Parietal responses to conflict in the flanker task",
         abstract="We contrasted incongruent and congruent flanker trials.",
         methods="Data were analysed with AFNI and transformed to Talairach space.",
         peaks=TAL_PEAKS),
    dict(pmcid=1003, pmid=9003, year=2021, journal="Brain",
         title="A review of attention networks",
         abstract="We review the literature on attention.",
         methods="No new data were acquired.", peaks=None),
    dict(pmcid=1004, pmid=9004, year=2024, journal="Human Brain Mapping",
         title="Posterior parietal cortex in visuospatial working memory",
         abstract="A delayed match-to-sample task engaged the intraparietal sulcus.",
         methods="Statistical maps were normalised to MNI space with SPM12.",
         peaks=NO_ID_TABLE_PEAKS, new_ids=True, table_id=None, minus="\u2212"),
]
MORE_ARTICLES = [
    dict(pmcid=pmcid, pmid=pmcid + 8000, year=2022, journal="NeuroImage",
         title=f"Working memory load study {pmcid}",
         abstract=f"Study {pmcid} varied working memory load in an n-back task.",
         methods="Images were normalised to MNI space with FSL.",
         peaks=[(-40.0 + k, 20.0 + k, 30.0 - k), (38.0 - k, 24.0, 34.0)])
    for k, pmcid in enumerate((1005, 1006, 1007))
]


def article_xml(article: dict) -> str:
    """One ``<article>`` element of an efetch response."""
    fields = {k: v for k, v in article.items()
              if k not in ("peaks", "new_ids", "table_id", "minus")}
    ids = (_IDS_NEW if article.get("new_ids") else _IDS_OLD).format(**fields)
    table = (_table(article["peaks"], article.get("table_id", "tbl1"), article.get("minus", "-"))
             if article["peaks"] else "")
    return _ARTICLE.format(ids=ids, table=table, **fields)


def articleset_xml(articles: list[dict]) -> str:
    """An efetch response: a ``<pmc-articleset>`` document holding ``articles``."""
    body = "".join(article_xml(a) for a in articles)
    return f'<?xml version="1.0" ?>\n{_DOCTYPE}\n<pmc-articleset>{body}</pmc-articleset>\n'


def write_pmc_download(data_dir: Path, articles: list[dict] = ARTICLES) -> Path:
    """Write the articlesets as pubget's download step leaves them; return articlesets dir.

    ``articleset_00000.xml`` holds ``articles``; ``articleset_00001.xml`` is cut short.
    """
    articlesets = Path(data_dir) / "query_fixture" / "articlesets"
    articlesets.mkdir(parents=True)
    (articlesets / "articleset_00000.xml").write_text(articleset_xml(articles),
                                                      encoding="utf-8")
    truncated = article_xml({**ARTICLES[0], "pmcid": 1099, "peaks": None})
    (articlesets / "articleset_00001.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<pmc-articleset>{truncated[:300]}'
    )
    (articlesets / "info.json").write_text(json.dumps(
        {"name": "download", "is_complete": True, "retmax": 500}))
    return articlesets
