import pytest

import trainer.models
from pipeline.testing.toydata import shapes, write_dataset


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """24 classes x 8 jittered images, JPEG, 3 shards with 16-row row groups, 5 dropped rows."""
    return write_dataset(tmp_path_factory.mktemp("shapes"), shapes(per_class=8), shard_rows=80)


@pytest.fixture
def captions_seen(monkeypatch):
    """Every caption the trainer tokenizes for a batch, in order (loader in the main process)."""
    seen: list[str] = []
    real = trainer.models.tokenizer

    def recording(name):
        tokenize = real(name)

        def call(captions):
            seen.extend(captions)
            return tokenize(captions)

        return call

    monkeypatch.setattr(trainer.models, "tokenizer", recording)
    return seen
