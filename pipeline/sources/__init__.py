"""Offline candidate sources: WARC/WAT files (`warc`), crawl recording (`warc_recorder`) and
img2dataset-style URL lists (`urllist`). Submodules are imported on use to keep CLI start fast."""
