"""The download cache: hash checking, atomic writes, clear errors offline."""

import hashlib

import pytest

from analysis_utils import weights
from analysis_utils.errors import AnalysisUtilsError


def _serve_file(tmp_path, content: bytes):
    source = tmp_path / "source.bin"
    source.write_bytes(content)
    return source.as_uri(), hashlib.sha256(content).hexdigest()


def test_download_checks_hash_and_caches(tmp_path):
    url, sha = _serve_file(tmp_path, b"weights" * 100)
    spec = weights.OfficialWeights(url=url, sha256=sha[:10], file_format="torch")
    path = weights.fetch(spec, cache_dir=tmp_path / "cache")
    assert path.read_bytes() == b"weights" * 100
    assert weights.fetch(spec, cache_dir=tmp_path / "cache") == path  # cached, still checked


def test_wrong_hash_leaves_nothing_in_the_cache(tmp_path):
    url, _ = _serve_file(tmp_path, b"not the file you expect")
    spec = weights.OfficialWeights(url=url, sha256="deadbeef", file_format="torch")
    with pytest.raises(AnalysisUtilsError, match="not the expected deadbeef"):
        weights.fetch(spec, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_gives_one_sentence(tmp_path):
    spec = weights.OfficialWeights(url="http://127.0.0.1:9/none.pth", sha256="00",
                                   file_format="torch")
    with pytest.raises(AnalysisUtilsError, match="Could not download .*place it at"):
        weights.fetch(spec, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_corrupted_cached_file_is_refused(tmp_path):
    url, sha = _serve_file(tmp_path, b"good")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "source.bin").write_bytes(b"bad")
    spec = weights.OfficialWeights(url=url, sha256=sha, file_format="torch")
    with pytest.raises(AnalysisUtilsError, match="delete it and run again"):
        weights.fetch(spec, cache_dir=tmp_path / "cache")
