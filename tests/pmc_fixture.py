"""A tiny PubMed Central articleset written by the tests (pubget's download format).

Three articles in ``articleset_00000.xml`` (one reporting MNI peaks with SPM, one reporting
Talairach peaks with AFNI, one without any coordinate table) and a truncated
``articleset_00001.xml``, laid out as ``pubget.download_query_results`` leaves them.
"""

from __future__ import annotations

import json
from pathlib import Path

MNI_PEAKS = [(-42.0, 24.0, 30.0), (40.0, 22.0, 32.0), (0.0, 16.0, 44.0)]
TAL_PEAKS = [(-38.0, -50.0, 44.0), (36.0, -54.0, 42.0)]

_ARTICLE = """<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article">
<front>
<journal-meta><journal-title-group><journal-title>{journal}</journal-title></journal-title-group></journal-meta>
<article-meta>
<article-id pub-id-type="pmid">{pmid}</article-id>
<article-id pub-id-type="pmc">{pmcid}</article-id>
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

_TABLE = """<table-wrap id="tbl1"><label>Table 1</label><caption><p>Activation peaks.</p></caption>
<table><thead><tr><th>Region</th><th>x</th><th>y</th><th>z</th><th>Z score</th></tr></thead>
<tbody>{rows}</tbody></table></table-wrap>"""


def _table(peaks):
    rows = "".join(
        f"<tr><td>region {i}</td><td>{x:g}</td><td>{y:g}</td><td>{z:g}</td><td>4.1</td></tr>"
        for i, (x, y, z) in enumerate(peaks)
    )
    return _TABLE.format(rows=rows)


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
]


def write_pmc_download(data_dir: Path) -> Path:
    """Write the articlesets as pubget's download step leaves them; return articlesets dir."""
    articlesets = Path(data_dir) / "query_fixture" / "articlesets"
    articlesets.mkdir(parents=True)
    body = "\n".join(
        _ARTICLE.format(table=_table(a["peaks"]) if a["peaks"] else "", **{
            k: v for k, v in a.items() if k != "peaks"})
        for a in ARTICLES
    )
    (articlesets / "articleset_00000.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<pmc-articleset>{body}</pmc-articleset>\n'
    )
    truncated = _ARTICLE.format(table="", **{**{k: v for k, v in ARTICLES[0].items()
                                              if k != "peaks"}, "pmcid": 1004})
    (articlesets / "articleset_00001.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<pmc-articleset>{truncated[:300]}'
    )
    (articlesets / "info.json").write_text(json.dumps(
        {"name": "download", "is_complete": True, "retmax": 500}))
    return articlesets
