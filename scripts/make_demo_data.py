"""Copy a small subset of the emoji corpus into pipeline/demo/data (run once by maintainers).

usage: python scripts/make_demo_data.py /path/to/shared/data/emoji
"""

import json
import shutil
import sys
from pathlib import Path

CATEGORIES = {
    "Smileys & Emotion",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
}
LANGS = ("en", "fr", "de", "es", "ja")
COUNT = 300

LICENCE = """# Demo data: emoji artwork and names
- `google/`: Noto Color Emoji artwork (Google), Apache License 2.0.
- `twitter/`: Twemoji artwork (Twitter, now jdecked/twemoji), CC-BY 4.0.
- Names and keywords in `emoji.jsonl` come from the emojibase-data package (MIT; CLDR data under
  the Unicode licence).
Images came from the npm packages emoji-datasource-google and emoji-datasource-twitter 16.0.0.
"""


def main(src: str) -> None:
    src_dir = Path(src)
    dst = Path(__file__).resolve().parents[1] / "pipeline" / "demo" / "data"
    with open(src_dir / "emoji.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = [r for r in rows if r["category"] in CATEGORIES and "en" in r["annotations"]]
    rows.sort(key=lambda r: r["image"])
    step = len(rows) / COUNT
    chosen = [rows[int(i * step)] for i in range(COUNT)]
    for style in ("google", "twitter"):
        (dst / style).mkdir(parents=True, exist_ok=True)
    with open(dst / "emoji.jsonl", "w", encoding="utf-8") as out:
        for row in chosen:
            for style in ("google", "twitter"):
                shutil.copy(src_dir / style / row["image"], dst / style / row["image"])
            slim = {k: row[k] for k in ("image", "name", "category", "subcategory")}
            slim["labels"] = {
                lang: row["annotations"][lang]["label"]
                for lang in LANGS
                if lang in row["annotations"]
            }
            out.write(json.dumps(slim, ensure_ascii=False) + "\n")
    (dst / "LICENSES.md").write_text(LICENCE)
    print(f"wrote {len(chosen)} emoji to {dst}")


if __name__ == "__main__":
    main(sys.argv[1])
