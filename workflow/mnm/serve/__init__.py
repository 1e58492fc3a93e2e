"""``mnm serve``: a local web page and JSON API over a finished run.

:class:`~mnm.serve.service.QueryService` keeps one run loaded (model, atlas, corpus) and
answers with :mod:`mnm.query`; :func:`~mnm.serve.app.create_app` is the Flask application;
:func:`~mnm.serve.server.make_server` serves it with waitress (threads; loopback by default).
"""
