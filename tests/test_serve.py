"""``mnm serve`` on the tiny finished run: the JSON API through Flask's test client, the real
loopback server under concurrent requests, and the page in Debian's headless Chromium.

Expected answers come from :mod:`mnm.query` called directly (the library the server wraps)
and from nibabel reading the maps; the page is checked against the same maps.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mnm.query import query_map, query_text
from mnm.serve.app import create_app
from mnm.serve.server import make_server
from mnm.serve.service import QueryService

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(tiny_run):
    """The tiny run's fold-all MNM loaded once, as `mnm serve` loads it in the project folder
    (with its serve.torch_threads torch threads; the session's setting is restored after)."""
    import torch

    from mnm.query import load_run_config

    threads = torch.get_num_threads()
    torch.set_num_threads(load_run_config(tiny_run / "config.yaml")["serve"]["torch_threads"])
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tiny_run)
            service = QueryService.open("config.yaml")
        yield service
        service.close()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(service):
    return create_app(service).test_client()


@pytest.fixture(scope="module")
def articles(tiny_run):
    table = pd.read_parquet(tiny_run / "results/corpus/articles.parquet")
    return table.set_index("article_id", drop=False)


@pytest.fixture(scope="module")
def kde_map(service, tiny_run, tmp_path_factory):
    """(article id, path) of the KDE map of the first article's peaks."""
    peaks = pd.read_parquet(tiny_run / "results/corpus/peaks.parquet")
    article_id = peaks["article_id"].iloc[0]
    xyz = peaks.loc[peaks.article_id == article_id, ["x", "y", "z"]].to_numpy()
    path = tmp_path_factory.mktemp("maps") / "kde_first_article.nii.gz"
    nib.save(service.run.projector.kde_img(xyz), path)
    return article_id, path


def _map_from(response) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(response.data))


def _upload(client, data: bytes, filename: str = "map.nii.gz", k=None):
    form = {"map": (io.BytesIO(data), filename)}
    if k is not None:
        form["k"] = str(k)
    return client.post("/api/decode", data=form, content_type="multipart/form-data")


def _declaring(shape) -> bytes:
    """A gzipped NIfTI header declaring a huge float32 volume, followed by 1 kB of zeros."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    return gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 1024)


def _nifti_bytes(data, affine=None, compress=True) -> bytes:
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    raw = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine).to_bytes()
    return gzip.compress(raw) if compress else raw


# ---------------------------------------------------------------------------- answers
def test_health_and_info(client, service, articles, tiny_run):
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json["status"] == "ok"
    assert health.json["model"] == "mnm" and health.json["n_articles"] == len(articles)
    info = client.get("/api/info").json
    assert info["examples"] == list(service.run.config["serve"]["examples"])
    assert info["top_k"] == 10 and info["max_upload_mb"] == 50 and info["report"] is True
    background = _map_from(client.get(info["background_url"]))
    maps_img, _ = service.run.atlas
    assert background.shape == maps_img.shape[:3]
    np.testing.assert_allclose(background.affine, maps_img.affine)


def test_text_query_matches_the_library(client, service, articles):
    text = articles["title"].iloc[7]
    response = client.get("/api/query", query_string={"text": text, "k": 5})
    assert response.status_code == 200, response.json
    table, maps = query_text(service.run, text, top_k=5)
    got = response.json["articles"]
    assert [a["article_id"] for a in got] == table["article_id"].tolist()
    np.testing.assert_allclose([a["score"] for a in got], table["score"], rtol=1e-6)
    for record in got:
        meta = articles.loc[record["article_id"]]
        assert record["title"] == meta["title"] and record["journal"] == meta["journal"]
        pmcid = None if pd.isna(meta["pmcid"]) else int(meta["pmcid"])
        assert record["pmcid"] == pmcid
        if pmcid is not None:
            assert record["url"] == f"https://www.ncbi.nlm.nih.gov/pmc/articles/PMC{pmcid}/"
    served = {m["name"]: m for m in response.json["maps"]}
    assert set(served) == set(maps)
    for name, img in maps.items():
        download = client.get(served[name]["url"])
        assert download.status_code == 200
        assert f'filename="mnm_{name}.nii.gz"' in download.headers["Content-Disposition"]
        back = _map_from(download)
        np.testing.assert_allclose(back.get_fdata(), np.asarray(img.dataobj, np.float32), rtol=1e-6)
        np.testing.assert_allclose(back.affine, img.affine)


def test_text_query_with_meta_analysis_matches_the_library(client, service):
    """meta=mkda adds NiMARE's maps and summary: those of mnm.meta.meta_analysis called on the
    same query (as `mnm query --meta-analysis mkda`), labelled for the page."""
    from mnm.meta import meta_analysis

    response = client.get("/api/query", query_string={"text": "working memory", "k": 6,
                                                      "meta": "mkda"})
    assert response.status_code == 200, response.json
    table, maps = query_text(service.run, "working memory", top_k=6)
    expected = meta_analysis(service.run, table, "mkda", predicted=maps["decoder"])
    summary = response.json["meta_analysis"]
    assert summary["articles"] == expected.article_ids == table["article_id"].tolist()
    assert summary["correlation_with_decoder_map"] == pytest.approx(expected.correlation)
    served = {m["name"]: m for m in response.json["maps"]}
    assert set(served) == set(maps) | {"meta_mkda_z", "meta_mkda_logp"}
    assert served["meta_mkda_z"]["label"] == "MKDA meta-analysis of the articles, z (uncorrected)"
    for name, img in expected.output_maps().items():
        back = _map_from(client.get(served[name]["url"]))
        np.testing.assert_allclose(back.get_fdata(), img.get_fdata(), rtol=1e-6)
    assert "meta_analysis" not in client.get("/api/query", query_string={"text": "memory"}).json


def test_cli_meta_analysis_writes_maps_beside_the_prediction(service, tiny_run, tmp_path,
                                                             monkeypatch, capsys):
    """`mnm query TEXT --meta-analysis ale` (here on the served run, loaded once: the command
    line's own run loading is tested in test_e2e): maps and summary written beside the
    prediction; the correlation recomputed with numpy from the written files."""
    from mnm.atlas import analysis_mask
    from mnm.cli import EXIT_BAD_INPUT, main

    monkeypatch.setattr("mnm.query.open_run", lambda *args, **kwargs: service.run)
    out = tmp_path / "q"
    assert main(["query", "working memory load", "--top-k", "8", "--meta-analysis", "ale",
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["meta_analysis"]
    assert summary == json.loads((out / "meta_analysis.json").read_text())
    table = pd.read_csv(out / "articles.csv")
    assert summary["articles"] == table["article_id"].tolist()  # every article has peaks
    peaks = pd.read_parquet(tiny_run / "results/corpus/peaks.parquet")
    assert summary["n_peaks"] == peaks["article_id"].isin(table["article_id"]).sum()
    for name in ("meta_ale_z", "meta_ale_logp"):
        assert (out / f"{name}.nii.gz").is_file() and (out / f"{name}.png").stat().st_size > 1000
    z, decoder = nib.load(out / "meta_ale_z.nii.gz"), nib.load(out / "decoder.nii.gz")
    assert z.shape == decoder.shape and np.allclose(z.affine, decoder.affine)
    # brain-mask voxels of the run's grid that the atlas covers
    atlas = nib.load(tiny_run / "results/atlas/aicha/atlas.nii.gz")
    voxels = (np.asarray(atlas.dataobj) != 0).any(axis=-1)
    voxels &= np.asarray(analysis_mask(4).dataobj) > 0
    expected = np.corrcoef(z.get_fdata()[voxels], decoder.get_fdata()[voxels])[0, 1]
    assert summary["correlation_with_decoder_map"] == pytest.approx(expected, abs=1e-5)
    assert summary["correlation_voxels"] == voxels.sum()
    # the z map's maximum lies within the ALE kernel's reach of a retrieved article's peak
    data = z.get_fdata()
    top = nib.affines.apply_affine(z.affine, np.unravel_index(np.argmax(data), data.shape))
    retrieved = peaks[peaks["article_id"].isin(table["article_id"])][["x", "y", "z"]].to_numpy()
    assert np.linalg.norm(retrieved - top, axis=1).min() <= 8.0
    assert main(["query", "--map", str(out / "decoder.nii.gz"), "--meta-analysis", "ale",
                 "--out", str(tmp_path / "m")]) == EXIT_BAD_INPUT
    assert "needs a TEXT query" in capsys.readouterr().err


def test_map_upload_matches_the_library(client, service, kde_map):
    _, path = kde_map
    response = _upload(client, path.read_bytes(), "my map.nii.gz", k=5)
    assert response.status_code == 200, response.json
    expected = query_map(service.run, path, top_k=5)
    assert [a["article_id"] for a in response.json["articles"]] == expected["article_id"].tolist()
    assert response.json["filename"] == "my map.nii.gz"
    shown = _map_from(client.get(response.json["maps"][0]["url"]))
    np.testing.assert_allclose(shown.get_fdata(), nib.load(path).get_fdata(), rtol=1e-6, atol=1e-7)
    # the same map uncompressed (.nii): same answer
    raw = gzip.decompress(path.read_bytes())
    again = _upload(client, raw, "map.nii", k=5)
    assert [a["article_id"] for a in again.json["articles"]] == expected["article_id"].tolist()


def test_upload_on_another_grid_is_shown_on_the_analysis_grid(client, service):
    data = np.zeros((40, 48, 40), dtype=np.float32)
    data[10:20, 20:30, 20:30] = 1.0
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-80, -112, -70]
    response = _upload(client, _nifti_bytes(data, affine), "coarse.nii.gz", k=3)
    assert response.status_code == 200, response.json
    shown = _map_from(client.get(response.json["maps"][0]["url"]))
    maps_img, _ = service.run.atlas
    # the map shown is the map the projector saw (mnm.brain resamples with nilearn)
    with pytest.warns(UserWarning):
        reference = service.run.projector._volume_on_grid(nib.Nifti1Image(data, affine))
    assert shown.shape == maps_img.shape[:3]
    np.testing.assert_allclose(shown.get_fdata(), reference, atol=1e-6)
    # and its mass is where the coarse map put it (a 40 mm cube at the same place)
    inside = np.argwhere(shown.get_fdata() > 0.5)
    corner = (shown.affine @ [*inside.min(axis=0), 1])[:3]
    np.testing.assert_allclose(corner, affine[:3, 3] + 4.0 * np.array([10, 20, 20]), atol=4.0)


# ---------------------------------------------------------------------------- bad input
def _assert_one_line_error(response, status: int, fragment: str):
    assert response.status_code == status, (response.status_code, response.data[:300])
    body = response.json
    assert set(body) == {"error"} and "\n" not in body["error"], body
    assert fragment.lower() in body["error"].lower(), body


@pytest.mark.parametrize("params, fragment", [
    ({}, "empty"), ({"text": "   "}, "empty"), ({"text": "memory", "k": "0"}, "k must be"),
    ({"text": "memory", "k": "ten"}, "whole number"), ({"text": "memory", "k": "101"}, "max_top_k"),
    ({"text": "x" * 10001}, "max_text_chars"), ({"text": "memory", "meta": "gls"}, "meta must be"),
])
def test_bad_text_queries_are_refused(client, params, fragment):
    _assert_one_line_error(client.get("/api/query", query_string=params), 400, fragment)


def test_bad_uploads_are_refused(client, service):
    far = np.diag([2.0, 2.0, 2.0, 1.0])
    far[:3, 3] = 500  # far outside the MNI brain
    cases = [
        (b"hello, not an image", "notes.nii.gz", "not a readable NIfTI"),
        (_nifti_bytes(np.ones((5, 5, 5, 3))), "four_d.nii.gz", "3D"),
        (_nifti_bytes(np.zeros((5, 5, 5))), "zeros.nii.gz", "empty"),
        (_nifti_bytes(np.ones((10, 10, 10)), far), "outside.nii.gz", "no signal inside the brain"),
        (_declaring((2048, 2048, 2048)), "bomb.nii.gz", "declares 8,589,934,592 voxels"),
    ]
    for data, name, fragment in cases:
        response = _upload(client, data, name)
        _assert_one_line_error(response, 400, fragment)
        # the message names the upload, never the server's scratch file
        assert name in response.json["error"] and "mnm-serve-uploads" not in response.json["error"]
    assert list(service._upload_dir.iterdir()) == []  # scratch files removed
    _assert_one_line_error(client.post("/api/decode", data={}), 400, "field named 'map'")


def test_upload_size_limit(service):
    small = dataclasses.replace(service.settings, max_upload_mb=0.01)  # 10 KiB
    client = create_app(_with_settings(service, small)).test_client()
    just_over = _upload(client, b"\0" * (small.max_upload_bytes + 10))  # the app's own check
    _assert_one_line_error(just_over, 413, "larger than 0.01 MB")
    far_over = _upload(client, b"\0" * (small.max_upload_bytes + 200_000))  # Flask's body limit
    _assert_one_line_error(far_over, 413, "serve.max_upload_mb")


def _with_settings(service, settings):
    import copy

    clone = copy.copy(service)
    clone.settings = settings
    return clone


def test_unknown_ids_and_paths_answer_404(client):
    for url in ["/maps/0123456789abcdef01234567.nii.gz", "/maps/..%2F..%2Fetc%2Fpasswd.nii.gz",
                "/maps/../config.yaml", "/static/..%2Fapp.py", "/static/service.py",
                "/report/figures/999.png", "/report/figures/-1.png", "/config.yaml",
                "/results/corpus/articles.parquet"]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert set(response.json) == {"error"}, url


def test_server_keeps_serving_after_a_crash(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("mnm.serve.service.query_text", broken)
    _assert_one_line_error(client.get("/api/query?text=memory"), 500, "internal error")
    monkeypatch.undo()
    assert client.get("/api/query?text=memory&k=2").status_code == 200


# ---------------------------------------------------------------------------- page, report
class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for key, value in attrs if key in ("src", "href") and value]


def test_page_loads_nothing_from_other_sites(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    parser = _Links()
    parser.feed(page.get_data(as_text=True))
    assert parser.links, "the page links its script and style"
    for link in parser.links:
        assert link.startswith("/") and not link.startswith("//"), link
        asset = client.get(link)
        assert asset.status_code == 200 and len(asset.data) > 100, link


def test_report_tab(client, tiny_run):
    report = client.get("/api/report").json
    assert report["available"]
    html = report["html"]
    retrieval = pd.read_parquet(tiny_run / "results/report/retrieval.parquet")
    assert "<table>" in html and all(model in html for model in retrieval["model"].unique())
    figures = sorted((tiny_run / "results/report/figures").glob("*.png"))
    shown = sorted({int(n) for n in _figure_numbers(html)})
    assert shown and set(shown) <= set(range(len(figures)))
    for number in shown:
        assert client.get(f"/report/figures/{number}.png").data == figures[number].read_bytes()
    assert ".parquet\"" not in html and "<script" not in html


def _figure_numbers(html: str):
    import re

    return re.findall(r'src="/report/figures/(\d+)\.png"', html)


# ---------------------------------------------------------------------------- real server
@pytest.fixture(scope="module")
def live_server(service):
    """The waitress server on a free loopback port, in a thread."""
    server = make_server(service, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(timeout=10)


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_concurrent_users_share_one_model(service, live_server, monkeypatch):
    """Eight users at once get the answers one user gets, and nothing is loaded again."""
    assert live_server.startswith("http://127.0.0.1:")  # loopback by default
    texts = ["working memory", "response conflict", "visual cortex", "motor inhibition"]
    expected = {t: query_text(service.run, t, top_k=3)[0]["article_id"].tolist() for t in texts}
    users = [(n, text) for n, text in enumerate(texts * 2)]  # two users per text

    def no_second_load(*args, **kwargs):
        raise AssertionError("the model was loaded a second time")

    monkeypatch.setattr("mnm.trained.load_trained", no_second_load)
    monkeypatch.setattr("mnm.atlas.read_atlas", no_second_load)
    answers, barrier = {}, threading.Barrier(len(users))

    def user(n, text):
        barrier.wait()
        query = urllib.parse.urlencode({"text": text, "k": 3})
        answers[n] = _get_json(f"{live_server}/api/query?{query}")

    threads = [threading.Thread(target=user, args=pair) for pair in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, text in users:
        status, body = answers[n]
        assert status == 200, body
        assert [a["article_id"] for a in body["articles"]] == expected[text]
    status, body = _get_json(f"{live_server}/api/query?text=")
    assert status == 400 and "empty" in body["error"]
    assert _get_json(f"{live_server}/api/health")[0] == 200


def _post_upload(url: str, payload: bytes):
    """POST ``payload`` as the multipart field ``map``; (status, body bytes)."""
    boundary = "mnmtestboundary0123456789"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="map"; filename="big.nii.gz"'
            f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + payload + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_real_server_refuses_large_uploads(service):
    """Through waitress: just over the limit gets the JSON 413; far over (beyond twice the
    limit) is refused by waitress before the body is read; the server keeps serving."""
    small = _with_settings(service, dataclasses.replace(service.settings, max_upload_mb=0.01))
    server = make_server(small, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    try:
        status, body = _post_upload(f"{url}/api/decode", b"\0" * 20_000)
        assert status == 413 and "serve.max_upload_mb" in json.loads(body)["error"]
        try:
            status, _ = _post_upload(f"{url}/api/decode", b"\0" * 400_000)
            assert status == 413
        except (ConnectionError, urllib.error.URLError):
            pass  # waitress may close the connection while the body is still being sent
        assert _get_json(f"{url}/api/health")[0] == 200
    finally:
        server.close()
        thread.join(timeout=10)


def test_model_work_runs_one_request_at_a_time(service, monkeypatch):
    """The lock: concurrent requests never run the model code at the same time."""
    table, maps = query_text(service.run, "memory", top_k=2)
    running, most = [0], [0]
    guard = threading.Lock()

    def slow_query_text(run, text, top_k):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return table, maps

    monkeypatch.setattr("mnm.serve.service.query_text", slow_query_text)
    threads = [threading.Thread(target=service.query, args=(f"text {n}", 2)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


# ---------------------------------------------------------------------------- browser
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1400,1050"]


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        message = "Debian's chromium and chromium-driver are needed: run .ci/install-browser"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _colored_pixels(driver, selector: str) -> int:
    """Overlay pixels (not gray) drawn on the axial canvas under ``selector``."""
    return driver.execute_script("""
        const canvas = document.querySelector(arguments[0] + ' canvas.axial');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let p = 0; p < data.length; p += 4) {
          if (Math.abs(data[p] - data[p + 2]) > 40) count++;
        }
        return count;""", selector)


def _readout(driver, selector: str) -> tuple[tuple[int, int, int], float, str]:
    element = driver.find_element("css selector", f"{selector} .readout")
    ijk = tuple(int(element.get_attribute(f"data-{axis}")) for axis in "ijk")
    return ijk, float(element.get_attribute("data-value")), element.text


@pytest.mark.browser
def test_page_in_headless_chromium(browser, live_server, service, kde_map, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    find = browser.find_element
    browser.get(live_server + "/")
    wait.until(lambda d: "articles" in find("id", "run-info").text)

    # Text -> map and articles
    find("id", "query-text").send_keys("working memory load in the n-back task")
    find("id", "query-submit").click()
    wait.until(lambda d: find("id", "query-viewer").get_attribute("data-state") == "ready")
    wait.until(lambda d: len(d.find_elements("css selector", "#query-articles li")) == 10)
    browser.save_screenshot(str(tmp_path / "query.png"))
    assert browser.find_element("css selector", "#query-articles li .title").text.strip()

    # The viewer shows the decoder map: the cursor starts on its peak, values match nibabel.
    url = find("css selector", "#query-downloads a").get_attribute("href")
    with urllib.request.urlopen(url, timeout=60) as response:
        decoder = nib.Nifti1Image.from_bytes(gzip.decompress(response.read()))
    data = decoder.get_fdata()
    ijk, value, text = _readout(browser, "#query-viewer")
    assert abs(data[ijk]) == pytest.approx(np.abs(data).max(), rel=1e-6)  # a peak (ties: any)
    assert value == pytest.approx(data[ijk], rel=1e-5)
    x, y, z = (decoder.affine @ [*ijk, 1])[:3]
    assert f"x = {round(x)}, y = {round(y)}, z = {round(z)} mm" in text

    # Click on the axial slice a quarter of the way across and down: the cursor moves there.
    axial = find("css selector", "#query-viewer canvas.axial")
    box = axial.rect
    ActionChains(browser).move_to_element_with_offset(
        axial, -box["width"] / 4, -box["height"] / 4).click().perform()
    nx, ny, _ = data.shape
    ijk2, value2, _ = _readout(browser, "#query-viewer")
    assert abs(ijk2[0] - nx // 4) <= 1 and abs(ijk2[1] - (ny - 1 - ny // 4)) <= 1  # y up
    assert ijk2[2] == ijk[2]
    assert value2 == pytest.approx(data[ijk2], rel=1e-5, abs=1e-12)

    # The threshold slider hides voxels live.
    def set_threshold(percent):
        browser.execute_script(
            "const s = document.querySelector('#query-viewer .threshold');"
            "s.value = arguments[0]; s.dispatchEvent(new Event('input'));", percent)
        return _colored_pixels(browser, "#query-viewer")

    assert set_threshold(50) > set_threshold(98) > 0

    # Another hierarchy level's parcel map.
    find("css selector", "#query-layers label:nth-child(2) input").click()
    wait.until(lambda d: "Parcel route" in _readout(d, "#query-viewer")[2])

    # With the MKDA meta-analysis: its two maps are layers, its correlation is stated.
    from selenium.webdriver.support.ui import Select

    Select(find("id", "query-meta")).select_by_value("mkda")
    find("id", "query-submit").click()
    wait.until(lambda d: find("id", "query-meta-summary").is_displayed())
    assert "MKDA meta-analysis (NiMARE, uncorrected) of 10 articles" in find(
        "id", "query-meta-summary").text
    find("css selector", "#query-layers input[value='meta_mkda_z']").click()
    wait.until(lambda d: "MKDA meta-analysis of the articles, z" in _readout(d, "#query-viewer")[2])
    Select(find("id", "query-meta")).select_by_value("")

    # Map -> articles: upload the KDE map of an article; it is listed, and shown back.
    _, path = kde_map
    find("id", "tab-map").click()
    find("id", "decode-file").send_keys(str(path))
    find("id", "decode-submit").click()
    wait.until(lambda d: find("id", "decode-viewer").get_attribute("data-state") == "ready")
    listed = [li.get_attribute("data-article-id")
              for li in browser.find_elements("css selector", "#decode-articles li")]
    assert listed == query_map(service.run, path, top_k=10)["article_id"].tolist()
    assert _colored_pixels(browser, "#decode-viewer") > 0
    browser.save_screenshot(str(tmp_path / "upload.png"))

    # The run's report.
    find("id", "tab-report").click()
    wait.until(lambda d: d.find_elements("css selector", "#report table"))
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#report img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"))
    browser.save_screenshot(str(tmp_path / "report.png"))

    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    for name in ("query.png", "upload.png", "report.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    print(f"screenshots in {tmp_path}")
