"""`pipeline serve DIR`: a read-only dataset explorer in the browser.

`data` turns a page's query string into SQL over the committed manifests (DuckDB streams the
Parquet files; nothing is loaded whole), `images` reads thumbnails out of the shards and work/
files behind signed URLs, `pages` renders escaped HTML (Jinja2, autoescaped; no JavaScript), and
`app` is the FastAPI application with the token check. Every view is a GET URL whose query
string holds its filters, so a view can be shared.
"""
