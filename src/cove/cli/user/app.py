"""What every ``cove`` command shares: the :class:`App` its group makes from the global options,
holding the credentials, the scoped token and the API client (each made on first use), and
printing in the output format the command line chose."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from cove.cli import clouds, output
from cove.cli import userfmt as fmt
from cove.cli.user import client, login, tokens
from cove.cli.userfmt import Body


@dataclass
class App:
    """What every command shares: the options of ``cove``, the scoped token and the API client,
    made on first use (so ``--help`` and ``cove up`` need no credentials)."""

    url: str | None
    cloud: str | None
    timeout: float
    _config: clouds.CloudConfig | None = field(default=None, repr=False)
    _scoped: login.ScopedToken | None = field(default=None, repr=False)
    _api: client.Api | None = field(default=None, repr=False)

    @property
    def config(self) -> clouds.CloudConfig:
        if self._config is None:
            try:
                self._config = clouds.load(dict(os.environ), self.cloud, Path.cwd(), Path.home())
            except clouds.CloudConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._config

    @property
    def scoped(self) -> login.ScopedToken:
        """The current scoped token: the cached one on first use when it is still good, and
        renewed (and cached) when it is about to expire."""
        scoped = self._scoped
        if scoped is None and tokens.enabled(dict(os.environ)):
            found = tokens.load(self._cache_dir, self.config, login.RENEW_BEFORE)
            if found is not None:
                scoped = self._scoped = login.from_cache(self.config, self.url, found)
        if scoped is None or (
            scoped.expires_at is not None and scoped.expires_at - time.time() < login.RENEW_BEFORE
        ):
            scoped = self._scoped = self._login()
        return scoped

    @property
    def _cache_dir(self) -> Path:
        return tokens.cache_dir(dict(os.environ), Path.home())

    def _login(self) -> login.ScopedToken:
        """A new token for the cloud, kept in the token cache."""
        scoped = login.authenticate(self.config, self.url, self.timeout)
        kept = login.to_cache(scoped)
        if kept is not None and tokens.enabled(dict(os.environ)):
            tokens.save(self._cache_dir, self.config, kept)
        return scoped

    def _refused(self) -> bool:
        """The API refused the token: one from the cache (revoked, or its user's password
        changed) is forgotten and a new one got; True when there is a new one to try."""
        if self._scoped is None or not self._scoped.cached:
            return False
        tokens.forget(self._cache_dir, self.config)
        self._scoped = self._login()
        return True

    def token(self) -> str:
        return self.scoped.token

    @property
    def api(self) -> client.Api:
        if self._api is None:
            scoped = self.scoped
            http = client.make_http_client(
                scoped.endpoint,
                self.timeout,
                client.request_headers(scoped.token),
                self.config.verify,
            )
            self._api = client.Api(
                http,
                client.server_of(scoped.endpoint),
                self.timeout,
                token=self.token,
                refused=self._refused,
            )
        return self._api

    def identity_get(self, path: str, params: Mapping[str, str] | None = None) -> Body:
        """GET ``<identity v3>/<path>`` with the token. Raises ApiError, click.ClickException."""
        scoped = self.scoped
        what = f"the identity service at {scoped.identity}"
        http = client.make_http_client(
            scoped.identity, self.timeout, client.request_headers(scoped.token), self.config.verify
        )
        try:
            resp = client.send(http, "GET", path, what=what, timeout=self.timeout, params=params)
        finally:
            http.close()
        if resp.is_error:
            raise client.api_error(resp)
        return client.json_body(resp, what)

    def project_id(self, ref: str | None) -> str:
        """The id of project ``ref``, an id or a name (None: the token's own project).

        A name other than the token's is looked up in the identity service, as the openstack
        command does. Raises click.ClickException when no such project is visible.
        """
        scoped = self.scoped
        if ref is None or ref in (scoped.project_id, scoped.project_name):
            return scoped.project_id
        if clouds.looks_like_id(ref):
            return ref
        found = self.identity_get("projects", {"name": ref}).get("projects") or []
        ids = [str(p["id"]) for p in found if isinstance(p, dict) and p.get("name") == ref]
        if not ids:
            raise click.ClickException(f"no project named '{ref}' is visible to you")
        return ids[0]

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    @property
    def json_output(self) -> bool:
        """Whether ``--json`` asked for the API's own bodies."""
        return bool(output.chosen(output.RAW_JSON_KEY, False))

    @property
    def machine_output(self) -> bool:
        """Whether the output is for a program (``--json``, or a ``-f`` other than table)."""
        return self.json_output or output.form() != "table"

    def output(
        self,
        body: Any,
        render: Callable[[], str | fmt.Table | fmt.Pairs],
        *,
        secret: bool = False,
    ) -> None:
        """Print ``body`` as JSON with ``--json``, else ``render()`` in the ``-f`` format with
        the ``-c`` columns; passwords are dropped unless ``secret`` says showing one is the
        point. An output that is text alone (not a table nor fields) gives ``body`` for
        ``-f json`` and ``yaml``.

        Raises click.UsageError for a ``-c`` that names no column, or a ``-f`` or ``-c`` the
        output cannot take.
        """
        shown_body = body if secret else fmt.redact(body)
        if self.json_output:
            click.echo(json.dumps(shown_body, indent=2))
            return
        form = output.form()
        shown = render()
        if isinstance(shown, str):
            if output.columns() or form in ("value", "csv"):
                raise click.UsageError(
                    "this command's output has no columns: use -f table, json or yaml"
                )
            if form == "json":
                shown = json.dumps(shown_body, indent=2)
            elif form == "yaml":
                # Imported here: the parser is a tenth of a short command's start.
                import yaml

                shown = yaml.safe_dump(shown_body, sort_keys=False, allow_unicode=True).rstrip()
            click.echo(shown)
            return
        output.emit(shown)

    def done(self, message: str) -> None:
        """Confirm a change whose answer has no body (nothing to print for a program)."""
        if not self.machine_output:
            click.echo(message)
