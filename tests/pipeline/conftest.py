import pytest

from pipeline.testing.shapesite import train_shapes_model


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory):
    """A clip-nano checkpoint trained on matched coloured-shape pairs (pipeline.testing.shapesite)."""
    return train_shapes_model(tmp_path_factory.mktemp("clipmodel"))
