import pytest

from rmt_lab.assets import load_tokenizer
from rmt_lab.tasks import TaskConfig, TaskGenerator, load_noise


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def pydoc_bank(tokenizer):
    return load_noise("pydoc", tokenizer)


@pytest.fixture(scope="session")
def make_generator(tokenizer, pydoc_bank):
    """Build a TaskGenerator over the shared tokenizer and pydoc noise from TaskConfig keywords."""

    def make(**kwargs) -> TaskGenerator:
        return TaskGenerator(TaskConfig(**kwargs), tokenizer=tokenizer, noise=pydoc_bank)

    return make
