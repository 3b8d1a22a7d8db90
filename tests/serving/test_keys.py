"""The keys file: format, refusals that name the line, modes, lookups."""

import pytest

from serving.keys import (KeysFileError, KeyStore, add_key, format_keys, key_id, new_keyset, parse_keys,
                          read_keys_file, revoke_key, write_keys_file)


def _text(**replace):
    token, keyset = add_key(new_keyset(), "line", "L1", "cam-L1")
    text = format_keys(keyset)
    for old, new in replace.items():
        text = text.replace(old, new)
    return token, text


def test_a_written_file_reads_back_with_mode_0600_and_no_secret(tmp_path):
    token, keyset = add_key(new_keyset(), "line", "L1")
    admin, keyset = add_key(keyset, "admin", None, "maintenance")
    write_keys_file(tmp_path / "keys", keyset)
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o600
    assert read_keys_file(tmp_path / "keys") == keyset
    text = (tmp_path / "keys").read_text()
    assert token not in text and admin not in text and token.split("_", 2)[2] not in text
    key = keyset.keys[key_id(token)]
    assert (key.role, key.line, key.name, key.revoked) == ("line", "L1", "line-L1", False)
    assert "digest" not in key.describe()


@pytest.mark.parametrize("edit, message", [
    ({" line L1 ": " boss L1 "}, "line 4: role 'boss' is not one of line, operator, admin"),
    ({" active ": " maybe "}, "line 4: STATUS 'maybe' is not active or revoked"),
    ({" line L1 ": " line - "}, "line 4: a line key needs its line name"),
    ({" line L1 ": " admin L1 "}, "line 4: an admin key is not bound to a line"),
    ({" cam-L1": " cam L1"}, "line 4: a key line has 8 fields"),
    ({"session-secret ": "session-secret zz"}, "line 3: session-secret must be followed by 64 hex digits"),
    ({"session-secret": "sessionsecret"}, "line 3: unknown entry 'sessionsecret'"),
])
def test_a_malformed_file_is_refused_with_a_message_naming_the_line(edit, message):
    _, text = _text(**edit)
    with pytest.raises(KeysFileError, match="keys file /etc/jaffnet/keys, " + message.replace("(", r"\(")):
        parse_keys(text, "/etc/jaffnet/keys")


def test_a_file_others_can_read_or_a_missing_one_is_refused(tmp_path):
    write_keys_file(tmp_path / "keys", new_keyset())
    (tmp_path / "keys").chmod(0o644)
    with pytest.raises(KeysFileError, match="readable by others.*chmod 600"):
        read_keys_file(tmp_path / "keys")
    with pytest.raises(KeysFileError, match="does not exist.*jaffnet keys add"):
        read_keys_file(tmp_path / "absent")


def test_lookup_by_id_then_digest_and_revocation(tmp_path):
    token, keyset = add_key(new_keyset(), "operator", None)
    write_keys_file(tmp_path / "keys", keyset)
    store = KeyStore(tmp_path / "keys")
    assert store.authenticate(token)[0].role == "operator"
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")  # right id, wrong secret
    assert store.authenticate(forged) == (None, "unknown_key")
    assert store.authenticate("jk_short") == (None, "malformed_key")
    write_keys_file(tmp_path / "keys", revoke_key(keyset, key_id(token)))
    store.clock = lambda: float("inf")  # the next look at the file is due
    assert store.authenticate(token) == (None, "revoked_key")
    assert store.active(key_id(token)) is None


def test_line_keys_need_a_line_and_names_are_checked():
    with pytest.raises(ValueError, match="needs --line"):
        add_key(new_keyset(), "line", None)
    with pytest.raises(ValueError, match="only a line key takes one"):
        add_key(new_keyset(), "operator", "L1")
    with pytest.raises(ValueError, match="letters, digits"):
        add_key(new_keyset(), "line", "L 1")
