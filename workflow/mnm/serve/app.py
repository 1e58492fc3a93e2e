"""The Flask application of ``mnm serve``: the page, its assets and the JSON API.

Routes
------
``GET /``                      the page (three tabs: text -> brain, map -> articles, report)
``GET /static/<asset>``        its script and style, from the package (no CDN: works offline)
``GET /api/health``            ``{"status": "ok", ...}``
``GET /api/info``              what the page needs (examples, limits, model)
``GET /api/query?text=&k=&meta=``  text -> ``articles`` + ``maps`` (URLs); ``meta=ale|mkda``
                               adds NiMARE's meta-analysis of the articles (``meta_analysis``)
``POST /api/decode``           multipart field ``map`` (a NIfTI file) -> ``articles`` + ``maps``
``GET /maps/<id>.nii.gz``      a map made for an earlier request (generated id)
``GET /api/background.nii.gz`` the MNI152 template on the analysis grid (viewer underlay)
``GET /api/report``            the run's report as an HTML fragment
``GET /report/figures/<n>.png`` a report figure, by number

Every error is a JSON object ``{"error": "<one line>"}`` with a 4xx status (5xx only for a
bug, logged with its traceback); the server keeps serving.
"""

from __future__ import annotations

import logging
from importlib import resources

from flask import Flask, Response, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mnm.query import QueryError
from mnm.serve.service import QueryService, UploadTooLarge

_LOG = logging.getLogger(__name__)

#: The page's assets (file in mnm/serve/static -> MIME type), read once into memory.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Everything the page loads comes from this server (maps are fetched, figures are images).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
#: Multipart framing allowed on top of the map itself in one upload request.
MULTIPART_SLACK_BYTES = 64 * 1024


def load_assets() -> dict[str, bytes]:
    folder = resources.files("mnm.serve") / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def _error(message: str, status: int):
    response = jsonify({"error": " ".join(str(message).split())})
    response.status_code = status
    return response


def create_app(service: QueryService) -> Flask:
    """The WSGI application answering for ``service`` (one loaded run)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = service.settings.max_upload_bytes + MULTIPART_SLACK_BYTES
    app.json.sort_keys = False
    assets = load_assets()

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.errorhandler(QueryError)
    def _query_error(error: QueryError):
        if isinstance(error, UploadTooLarge):
            return _error(error, 413)
        return _error(error, 503 if error.missing_run else 400)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_error_):
        return _error(UploadTooLarge(service.settings.max_upload_mb), 413)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        return _error(f"{error.name}: {error.description}", error.code or 500)

    @app.errorhandler(Exception)
    def _bug(error: Exception):
        _LOG.exception("unexpected error on %s %s", request.method, request.path)
        return _error(f"internal error ({type(error).__name__}); see the server log", 500)

    def asset(name: str) -> Response:
        response = Response(assets[name], mimetype=ASSETS[name].split(";")[0])
        response.headers["Content-Type"] = ASSETS[name]
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/")
    def index():
        return asset("index.html")

    @app.get("/static/<name>")
    def static_asset(name: str):
        if name not in ASSETS or name == "index.html":
            return _error(f"no asset {name[:60]!r}", 404)
        return asset(name)

    @app.get("/api/health")
    def health():
        return jsonify(service.health())

    @app.get("/api/info")
    def info():
        return jsonify(service.info())

    @app.get("/api/query")
    def api_query():
        return jsonify(service.query(request.args.get("text", ""), request.args.get("k"),
                                     request.args.get("meta")))

    @app.post("/api/decode")
    def api_decode():
        upload = request.files.get("map")
        if upload is None:
            raise QueryError("send the map as a multipart/form-data file field named 'map'")
        data = upload.read(service.settings.max_upload_bytes + 1)
        k = request.form.get("k", request.args.get("k"))
        return jsonify(service.decode(data, upload.filename or "", k))

    @app.get("/maps/<map_id>.nii.gz")
    def download_map(map_id: str):
        found = service.maps.get(map_id)
        if found is None:
            return _error(f"no map {map_id[:40]!r}: unknown id, or dropped from memory (the "
                          f"server keeps the latest {service.settings.stored_maps_mb:g} MB of "
                          "maps, serve.stored_maps_mb)", 404)
        name, data = found
        response = Response(data, mimetype="application/gzip")
        response.headers["Content-Disposition"] = f'attachment; filename="mnm_{name}.nii.gz"'
        return response

    @app.get("/api/background.nii.gz")
    def background():
        response = Response(service.background_bytes(), mimetype="application/gzip")
        response.headers["Cache-Control"] = "max-age=3600"
        return response

    @app.get("/api/report")
    def report():
        return jsonify({"available": service.report.available, "html": service.report.html()})

    @app.get("/report/figures/<int:number>.png")
    def report_figure(number: int):
        path = service.report.figure_path(number)
        if path is None:
            return _error(f"no report figure {number}", 404)
        return send_file(path, mimetype="image/png", max_age=3600)

    return app
