"""[credentials]: validation, errors naming the key, the hash by content, values never dumped."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.unit import credentials
from supervisor.unit.loader import UnitFileError, UnitLoader, parse_unit
from supervisor.unit.spec import UnitSpec

HEAD = '[service]\nexec = ["/bin/true"]\n[credentials]\n'


def parse(body: str) -> UnitSpec:
    return parse_unit("/units/u.toml", "u", (HEAD + body).encode())


def errors(body: str) -> list[str]:
    with pytest.raises(UnitFileError) as info:
        parse(body)
    return [str(e) for e in info.value.errors]


def test_a_value_is_never_in_the_json_form_but_is_in_the_hash() -> None:
    one, two = parse('token = { value = "v4lue-one" }'), parse('token = { value = "v4lue-two" }')
    assert one.unit.credentials["token"].value == "v4lue-one"
    assert "v4lue-one" not in repr(one.to_json()) and "v4lue-one" not in repr(one.unit.model_dump())
    assert one.to_json()["credentials"] == {"token": {"file": None, "value": "(hidden)"}}
    assert one.hash != two.hash and one.restart_hash != two.restart_hash


def test_a_file_is_hashed_by_content(tmp_path: Path) -> None:
    secret = tmp_path / "db"
    secret.write_bytes(b"first")
    body = f'db = {{ file = "{secret}" }}'
    first = parse(body)
    assert parse(body).hash == first.hash
    secret.write_bytes(b"second")
    assert parse(body).hash != first.hash
    assert "first" not in repr(first.to_json())


def test_the_loader_reads_a_credential_unit_again_when_only_the_secret_changed(
    tmp_path: Path,
) -> None:
    secret, unit = tmp_path / "db", tmp_path / "u.toml"
    secret.write_bytes(b"first")
    unit.write_text(HEAD + f'db = {{ file = "{secret}" }}\n')
    loader = UnitLoader(host_checks=False)
    before, _, _ = loader.load_file(str(unit), "u")
    secret.write_bytes(b"second")
    after, _, _ = loader.load_file(str(unit), "u")
    assert before is not None and after is not None and before.hash != after.hash
    secret.unlink()
    gone, found, _ = loader.load_file(str(unit), "u")
    assert gone is None and any("credentials.db.file" in str(e) for e in found)


def test_a_recorded_spec_keeps_its_recorded_hashes() -> None:
    spec = parse('token = { value = "v4lue-one" }')
    back = UnitSpec("u", spec.path, spec.unit, recorded_hashes=(spec.hash, spec.restart_hash))
    assert (back.hash, back.restart_hash) == (spec.hash, spec.restart_hash)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('db = { env = "DB_PASSWORD" }', "credentials.db.env: env is refused"),
        ("db = {}", "credentials.db: needs exactly one of"),
        ('db = { file = "/a", value = "b" }', "credentials.db: needs exactly one of"),
        ('db = { file = "relative" }', "credentials.db.file: 'relative' is not an absolute"),
        ('db = { file = "/nonexistent/secret" }', "credentials.db.file: cannot read"),
        ('"../x" = { value = "a" }', "credential name '../x'"),
        ('db = "plain"', "credentials.db: a credential is a table"),
    ],
)
def test_bad_credentials_name_the_key(body: str, expected: str) -> None:
    found = errors(body)
    assert any(expected in e for e in found), found
    assert all("DB_PASSWORD" not in e or "env" in e for e in found)


def test_the_digest_is_keyed_so_a_hash_cannot_test_guesses(tmp_path: Path) -> None:
    """Without the daemon's key, the hash of a unit with a short secret cannot be recomputed
    from a guess: the same secret under two keys hashes differently, and under one key alike."""
    contents = (("token", b"1234"),)
    saved = credentials._key
    try:
        credentials.use_key(b"k" * credentials.KEY_SIZE)
        one, again = credentials.digest(contents), parse('token = { value = "1234" }').hash
        assert credentials.digest(contents) == one
        credentials.use_key(b"j" * credentials.KEY_SIZE)
        assert credentials.digest(contents) != one
        assert parse('token = { value = "1234" }').hash != again
    finally:
        credentials.use_key(saved)


def test_the_daemon_key_is_made_once_root_only_and_kept(tmp_path: Path) -> None:
    key = credentials.daemon_key(tmp_path)
    path = tmp_path / credentials.KEY_FILE
    assert len(key) == credentials.KEY_SIZE and path.read_bytes() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert credentials.daemon_key(tmp_path) == key  # kept: hashes survive a daemon restart
    path.write_bytes(b"torn")
    assert credentials.daemon_key(tmp_path) not in (key, b"torn")
