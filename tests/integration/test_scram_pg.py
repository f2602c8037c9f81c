"""Verifiers Cove computes let users log in exactly as PostgreSQL's own would."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from cove.guestagent.datastores.postgresql.scram import verifier

pytestmark = pytest.mark.integration

PASSWORDS = [
    "plain-Pass:1",
    "a\u00a0b",  # non-ASCII space
    "\ufb01x",  # compatibility character
    "a\u00adb",  # mapped to nothing
    "pw\u2150",  # unassigned in the profile's Unicode version: used raw
    "e\u0341x",  # prohibited before normalising: used raw
    "x\u05d0y",  # mixed directions: used raw
    "\u05d0\u05d1",  # right to left only
    "caf\u00e9",
]


def test_cove_verifiers_match_the_server_s(pg_server) -> None:  # type: ignore[no-untyped-def]
    dsn = dict(part.split("=", 1) for part in pg_server.dsn.split())
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        for i, password in enumerate(PASSWORDS):
            for role, secret in ((f"srv_{i}", password), (f"cove_{i}", verifier(password))):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(secret)
                    )
                )
    for i, password in enumerate(PASSWORDS):
        for role in (f"srv_{i}", f"cove_{i}"):
            psycopg.connect(
                host=dsn["host"], port=dsn["port"], user=role, password=password, dbname="postgres"
            ).close()
