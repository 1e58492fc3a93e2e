/* The page of `mnm serve`: tabs, the text and map forms, article lists, report. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let info = null;
  let backgroundPromise = null;

  function background() {
    if (!backgroundPromise) backgroundPromise = MnmViewer.loadNifti(info.background_url);
    return backgroundPromise;
  }

  function setStatus(id, message, isError) {
    const element = $(id);
    element.textContent = message;
    element.classList.toggle("error", Boolean(isError));
  }

  async function getJson(response) {
    let body = null;
    try { body = await response.json(); } catch (error) { /* not JSON */ }
    if (!response.ok) {
      throw new Error((body && body.error) || `HTTP ${response.status} ${response.statusText}`);
    }
    return body;
  }

  // ------------------------------------------------------------------ tabs
  function showTab(button) {
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      const selected = tab === button;
      tab.setAttribute("aria-selected", String(selected));
      $(tab.dataset.panel).hidden = !selected;
    }
    if (button.id === "tab-report") loadReport();
  }

  let reportLoaded = false;
  async function loadReport() {
    if (reportLoaded) return;
    reportLoaded = true;
    try {
      const report = await getJson(await fetch("/api/report"));
      $("report").innerHTML = report.html;
    } catch (error) {
      reportLoaded = false;
      $("report").textContent = "Could not load the report: " + error.message;
    }
  }

  // ------------------------------------------------------------------ results
  function articleItem(article) {
    const item = document.createElement("li");
    item.dataset.articleId = article.article_id;
    const title = document.createElement(article.url ? "a" : "span");
    title.className = "title";
    title.textContent = article.title || article.article_id;
    if (article.url) {
      title.href = article.url;
      title.target = "_blank";
      title.rel = "noopener noreferrer";
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const parts = [];
    if (article.year) parts.push(String(article.year));
    if (article.journal) parts.push(article.journal);
    meta.textContent = parts.join(" · ");
    if (article.pmcid) {
      const pmc = document.createElement("a");
      pmc.href = `https://www.ncbi.nlm.nih.gov/pmc/articles/PMC${article.pmcid}/`;
      pmc.target = "_blank";
      pmc.rel = "noopener noreferrer";
      pmc.className = "pmcid";
      pmc.textContent = `PMC${article.pmcid}`;
      meta.append(parts.length ? " · " : "", pmc);
    } else if (article.pmid) {
      meta.append(`${parts.length ? " · " : ""}PMID ${article.pmid}`);
    }
    meta.append(` · score ${MnmViewer.formatValue(article.score)} · id ${article.article_id}`);
    item.append(title, meta);
    return item;
  }

  function showArticles(listId, articles) {
    const list = $(listId);
    list.replaceChildren(...articles.map(articleItem));
  }

  function showDownloads(elementId, maps) {
    const element = $(elementId);
    element.replaceChildren("Download (NIfTI): ");
    for (const map of maps) {
      const link = document.createElement("a");
      link.href = map.url;
      link.download = `mnm_${map.name}.nii.gz`;
      link.textContent = `${map.name}.nii.gz`;
      element.append(link);
    }
  }

  const viewers = {};
  function viewer(id) {
    if (!viewers[id]) viewers[id] = new MnmViewer.SliceViewer($(id));
    return viewers[id];
  }

  async function showMap(viewerId, map) {
    const target = viewer(viewerId);
    target.root.dataset.state = "loading";
    const [template, volume] = await Promise.all([background(), MnmViewer.loadNifti(map.url)]);
    if (!target.background) {
      target.setBackground(template);
      target.root.querySelector(".views").style.gridTemplateColumns =
        `${template.dims[1]}fr ${template.dims[0]}fr ${template.dims[0]}fr`;
    }
    target.setOverlay(volume, map.label);
  }

  function showLayers(maps) {
    const group = $("query-layers");
    group.replaceChildren();
    maps.forEach((map, n) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "layer";
      input.value = map.name;
      input.checked = n === 0;
      input.addEventListener("change", () => showMap("query-viewer", map).catch(
        (error) => setStatus("query-status", error.message, true)));
      label.append(input, " " + map.label);
      group.append(label);
    });
  }

  function showMetaSummary(meta) {
    const element = $("query-meta-summary");
    element.hidden = !meta;
    if (!meta) return;
    const r = meta.correlation_with_decoder_map;
    element.textContent = `${meta.method.toUpperCase()} meta-analysis (NiMARE, uncorrected) of ` +
      `${meta.n_articles} articles, ${meta.n_peaks} peaks: Pearson r with the decoder map = ` +
      (r === null ? "n/a" : `${r.toFixed(3)} over ${meta.correlation_voxels} voxels`) + ".";
  }

  // ------------------------------------------------------------------ forms
  async function runQuery(text) {
    const k = $("query-k").value || info.top_k;
    $("query-submit").disabled = true;
    setStatus("query-status", "Searching…");
    try {
      const meta = $("query-meta").value;
      const url = `/api/query?text=${encodeURIComponent(text)}&k=${encodeURIComponent(k)}` +
        (meta ? `&meta=${encodeURIComponent(meta)}` : "");
      const result = await getJson(await fetch(url));
      history.replaceState(null, "", `?q=${encodeURIComponent(text)}`);
      $("query-results").hidden = false;
      showArticles("query-articles", result.articles);
      showDownloads("query-downloads", result.maps);
      showLayers(result.maps);
      showMetaSummary(result.meta_analysis);
      setStatus("query-status", `${result.articles.length} articles, ${result.maps.length} maps in ${result.seconds.toFixed(2)} s (model ${result.model}).`);
      if (result.maps.length) await showMap("query-viewer", result.maps[0]);
    } catch (error) {
      setStatus("query-status", error.message, true);
    } finally {
      $("query-submit").disabled = false;
    }
  }

  async function runDecode() {
    const file = $("decode-file").files[0];
    if (!file) {
      setStatus("decode-status", "Choose a NIfTI file first.", true);
      return;
    }
    if (file.size > info.max_upload_mb * 1024 * 1024) {
      setStatus("decode-status", `The file is larger than ${info.max_upload_mb} MB, the server's limit.`, true);
      return;
    }
    const form = new FormData();
    form.append("map", file, file.name);
    form.append("k", $("decode-k").value || info.top_k);
    $("decode-submit").disabled = true;
    setStatus("decode-status", "Projecting the map on the atlas and ranking the articles…");
    try {
      const result = await getJson(await fetch("/api/decode", { method: "POST", body: form }));
      $("decode-results").hidden = false;
      showArticles("decode-articles", result.articles);
      showDownloads("decode-downloads", result.maps);
      setStatus("decode-status", `${result.articles.length} articles for ${result.filename} in ${result.seconds.toFixed(2)} s (model ${result.model}).`);
      await showMap("decode-viewer", result.maps[0]);
    } catch (error) {
      setStatus("decode-status", error.message, true);
    } finally {
      $("decode-submit").disabled = false;
    }
  }

  // ------------------------------------------------------------------ start
  async function start() {
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      tab.addEventListener("click", () => showTab(tab));
    }
    $("query-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runQuery($("query-text").value);
    });
    $("decode-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runDecode();
    });
    try {
      info = await getJson(await fetch("/api/info"));
    } catch (error) {
      setStatus("query-status", "The server does not answer: " + error.message, true);
      return;
    }
    $("run-info").textContent = `Model ${info.model} (fold-all, ${info.section} section, ${info.encoder} text encoder, ${info.atlas} atlas) over ${info.n_articles} articles.`;
    for (const id of ["query-k", "decode-k"]) {
      $(id).value = info.top_k;
      $(id).max = info.max_top_k;
    }
    $("decode-hint").textContent += ` Up to ${info.max_upload_mb} MB.`;
    const examples = $("examples");
    if (info.examples.length) examples.append("Try: ");
    for (const example of info.examples) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = example;
      button.addEventListener("click", () => {
        $("query-text").value = example;
        runQuery(example);
      });
      examples.append(button);
    }
    const initial = new URLSearchParams(location.search).get("q");
    if (initial) {
      $("query-text").value = initial;
      runQuery(initial);
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
