import pytest

from tests.pipeline.stages.conftest import sample_rows

pytestmark = pytest.mark.timeout(60)


def test_text_labels_every_row_and_drops_only_pending_ones(bench):
    b = bench(languages=["en"], min_words=2)
    b.put(
        "balance",
        "p0",
        sample_rows(
            [
                {"url": "http://a.test/1.jpg", "caption": "a red fox jumps over the lazy dog"},
                {
                    "url": "http://a.test/2.jpg",
                    "caption": "un renard roux saute par-dessus le chien",
                },
                {"url": "http://a.test/3.jpg", "caption": "fox"},
                {
                    "url": "http://a.test/4.jpg",
                    "caption": "le chat noir dort sur le canapé",
                    "status": "over_query_cap",
                },
            ]
        ),
    )
    record = b.run("text")
    rows = {r["url"][-5:]: r for r in b.rows("text", "p0")}
    assert rows["1.jpg"]["status"] == "pending" and rows["1.jpg"]["lang"] == "en"
    assert rows["2.jpg"]["status"] == "language" and rows["2.jpg"]["lang"] == "fr"
    assert rows["3.jpg"]["status"] == "caption_length"
    # a row balancing dropped keeps its reason, and still gets its language
    assert rows["4.jpg"]["status"] == "over_query_cap" and rows["4.jpg"]["lang"] == "fr"
    assert (record["rows_in"], record["rows_out"]) == (3, 1)
    assert record["drops"] == {"caption_length": 1, "language": 1}
