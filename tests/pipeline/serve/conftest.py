"""A built dataset with hostile captions, duplicates, a drop per reason and an eval leak, and
`pipeline serve` over it on a loopback port."""

import csv
import socket
import threading
import time

import pytest

from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.site import GOOD_IMAGES, picture, start_site

SCRIPT = '<script>document.title="pwned"</script>a cat <b>bold</b>'
QUOTES = "a tiny cat \" onmouseover='document.title=1' x=\"<img src=x onerror=alert(1)>"
JS_URL = "javascript:document.title='pwned'//.png"
QUERIES = ["cat", "dog", "bird", "fish", "owl", "horse", "chat"]


def _rows(base: str) -> list[tuple[str, str]]:
    captions = [
        SCRIPT,
        "a dog and a ball",
        "a bird on a branch",
        "a gold fish",
        "an owl at night",
        "a fish in a cafe",
        "a brown horse",
        "a moved owl",
        "a fish at depth one",
        "a fish two",
        "a fish three",
        "a fish four",
    ]
    rows = [(base + p[1:], c) for p, c in zip(GOOD_IMAGES, captions, strict=True)]
    return rows + [
        (base + "img/copy-of-cat.png", "the same cat again"),  # a copy of the eval cat too
        (base + "img/owl.jpg", "An owl at  night"),  # duplicate: same bytes, same caption
        (base + "img/owl.jpg", "the owl again at night"),  # kept beside it: another caption
        (base + "img/tiny.png", QUOTES),  # too_small: the image stage decoded it
        (base + "img/html.png", "a fake cat"),  # not_an_image
        (base + "private/cat.png", "a private cat"),  # robots_disallowed
        (base + "img/chat.webp", "un chat noir dort sur le canapé du salon"),  # language
        (JS_URL, "a cat behind a script url"),  # bad_url
    ]


def _eval_set(root):
    (root / "cat").mkdir(parents=True)
    (root / "lamp").mkdir(parents=True)
    (root / "cat" / "cat.png").write_bytes(picture("/img/cat.png", "PNG"))
    (root / "lamp" / "lamp.png").write_bytes(picture("a lamp", "PNG"))
    return root


def build_hostile(tmp, site_base: str):
    (tmp / "q.txt").write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    with open(tmp / "list.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        writer.writerows(_rows(site_base))
    config = BuildConfig.of(
        out=str(tmp / "ds"),
        query_list=str(tmp / "q.txt"),
        url_list=str(tmp / "list.csv"),
        allow_network=["127.0.0.1/32"],
        timeout=3.0,
        executor="local",
        languages=["en"],
        min_size=16,
        image_size=64,
        shard_size=4,
        per_query_cap=6,
        eval_set=[str(_eval_set(tmp / "pets"))],
    )
    return run_build(config).root


@pytest.fixture(scope="package")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    site, external = start_site()
    try:
        return build_hostile(tmp, site.base)
    finally:
        site.close()
        external.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server for `app` on a loopback port, in a thread, stopped on close()."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="package")
def served(hostile):
    from pipeline.serve.app import create_app

    running = Running(create_app(hostile))
    yield running
    running.close()
