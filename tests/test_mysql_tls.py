"""TLS to MariaDB is what the store URL asks for: asked, it is required; not asked,
no TLS context is built (PyMySQL 1.2 would build one per connection, loading the
system CA bundle — 0.1 s, more than a whole command — to then verify nothing)."""

from __future__ import annotations

import ssl

from click.testing import CliRunner

from melange_cli.main import cli


def _run(url: str, *args: str):
    return CliRunner().invoke(cli, ["--db", url, *args], catch_exceptions=False)


def test_no_tls_context_is_built_unless_the_url_asks(backends, tmp_path, monkeypatch):
    url = backends.url("mysql", tmp_path)
    built = []
    real = ssl.create_default_context

    def counted(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    result = _run(url, "block", "create", "10.9.0.0/24", "--name", "lan")
    assert result.exit_code == 0, result.output
    assert _run(url, "block", "list").exit_code == 0
    assert built == []


def test_tls_asked_of_a_server_without_it_fails_loudly(backends, tmp_path):
    """The test server has TLS off: a URL that asks for TLS is refused, exit 6, never
    quietly served in clear."""
    url = backends.url("mysql", tmp_path)
    for query in ("ssl_ca=/etc/ssl/certs/ca-certificates.crt", "ssl_verify_cert=true"):
        result = _run(f"{url}?{query}", "block", "list")
        assert result.exit_code == 6, result.output
        assert "SSL" in result.output
        assert result.output.count("\n") == 1


def test_a_tls_file_the_url_names_that_cannot_be_read_is_exit_6(backends, tmp_path):
    """A missing CA file, or a directory in its place: one line naming the store, exit 6
    (was an internal error, exit 1: the driver raises a bare OSError)."""
    url = backends.url("mysql", tmp_path)
    for path in (tmp_path / "no-such-ca.pem", tmp_path):
        result = _run(f"{url}?ssl_ca={path}", "block", "list")
        assert result.exit_code == 6, result.output
        assert result.output.startswith("Error: cannot open the store ")
        assert result.output.count("\n") == 1
