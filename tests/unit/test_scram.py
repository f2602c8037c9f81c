import base64
import hashlib
import hmac

from cove.guestagent.datastores.postgresql.scram import verifier


def test_verifier_format_and_keys():
    salt = b"0123456789abcdef"
    text = verifier("secret", salt=salt, iterations=4096)
    mech, rest = text.split("$", 1)
    assert mech == "SCRAM-SHA-256"
    iter_salt, keys = rest.split("$")
    iterations, salt_b64 = iter_salt.split(":")
    assert int(iterations) == 4096
    assert base64.b64decode(salt_b64) == salt
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", b"secret", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert stored == hashlib.sha256(client_key).digest()
    assert server == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert "secret" not in text


def test_random_salt_each_time():
    assert verifier("pw") != verifier("pw")


def test_saslprep_matches_what_clients_send():
    from cove.guestagent.datastores.postgresql.scram import saslprep

    assert saslprep("plain-ASCII pw") == "plain-ASCII pw"
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space becomes a space
    assert saslprep("\ufb01x") == "fix"  # compatibility ligature is decomposed
    assert saslprep("a\u00adb") == "ab"  # soft hyphen maps to nothing
    assert saslprep("a\u0007b") == "a\u0007b"  # prohibited: the raw text is used
