"""Fetch of signed hrefs (query strings, Planetary Computer SAS tokens) and obstore store options,
over a real loopback server: in token mode, it stands for Azure Blob Storage (reached as
``<account>.blob.core.windows.net`` through its proxy) and for the SAS token endpoint."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from catalogs.remote_files import TOKEN_MARGIN_S
from pipeline.fetch import SOURCE_HREF, fetch
from pipeline.params import FetchParams, PipelineParams, load_params
from tests.http_server import FileServer, Tokens, file_server
from tests.small_catalog import file_asset, stac_item

ACCOUNT = "sentinel2"
BLOB = f"http://{ACCOUNT}.blob.core.windows.net"  # served by the loopback server as a proxy


@pytest.fixture
def blob(tmp_path: Path) -> Iterator[FileServer]:
    with file_server(tmp_path / "remote") as server:
        server.tokens = Tokens(accounts=(ACCOUNT,))
        yield server


def _params(tmp_path: Path, server: FileServer, **fetch_params: Any) -> PipelineParams:
    """Fetch parameters that reach ``server`` as the proxy of every http request and as the
    token endpoint."""
    return PipelineParams(
        work_dir=tmp_path / "work",
        fetch=FetchParams(
            **{
                "cache_dir": tmp_path / "cache",
                "retries": 1,
                "concurrency": 4,
                "sign_endpoint": server.url("token"),
                "store_options": {"http": {"client_options": {"proxy_url": server.url()}}},
                **fetch_params,
            }
        ),
    )


def _remote(tmp_path: Path, relative: str, size: int = 3000) -> Path:
    """A file of ``size`` pseudo-random bytes at ``relative`` under the server's root."""
    path = tmp_path / "remote" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(relative).randbytes(size))
    return path


def _item(item_id: str, href: str, local: Path | None = None) -> dict[str, Any]:
    """An item of one asset at ``href``: with the file fields of ``local``, else with none."""
    asset = file_asset(local, href=href) if local else {"href": href, "msgfm:sensor": "rgb"}
    return {**stac_item(item_id, {"image": asset}), "collection": "c"}


def _signatures(server: FileServer) -> list[str]:
    return [parse_qs(r.query).get("sig", [""])[0] for r in server.requests]


def test_refusal_names_403_and_no_signature_leaks(tmp_path: Path, blob: FileServer) -> None:
    assert blob.tokens is not None
    local = _remote(tmp_path, "scenes/a.tif")
    _remote(tmp_path, "scenes/b.tif")
    forged = "se=2099-01-01T00%3A00%3A00Z&sp=rl&sig=forged-SECRET"
    token, _ = blob.tokens.issue(ACCOUNT, "scenes")
    blob.faults.errors["/scenes/b.tif"] = 5
    items = [
        _item("unsigned", f"{BLOB}/scenes/a.tif", local),
        _item("forged", f"{BLOB}/scenes/a.tif?{forged}", local),
        _item("failing", f"{BLOB}/scenes/b.tif?{token}"),
    ]
    fetched, failures = fetch(items, _params(tmp_path, blob))
    assert fetched == []
    assert [(f.item_id, f.path) for f in failures] == [
        ("unsigned", f"{BLOB}/scenes/a.tif"),
        ("forged", f"{BLOB}/scenes/a.tif"),
        ("failing", f"{BLOB}/scenes/b.tif"),
    ]
    denied, forged_denied, failing = (f.reason for f in failures)
    for reason in (denied, forged_denied):
        assert reason.startswith("access denied: ") and "403 Forbidden" in reason
        assert f"GET {BLOB}/scenes/a.tif " in reason  # the URL, without its query
    assert failing.startswith("download failed after 2 attempts: ") and "503" in failing
    assert any("forged-SECRET" in r.query for r in blob.requests)  # sent, and written nowhere:
    assert not any(
        s in repr(failures) for s in ("sig=", "forged-SECRET", parse_qs(token)["sig"][0])
    )
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_resigned_href_finds_its_cache_entry(tmp_path: Path, blob: FileServer) -> None:
    assert blob.tokens is not None
    local = _remote(tmp_path, "scenes/a.tif")
    unsigned = f"{BLOB}/scenes/a.tif"
    first, _ = blob.tokens.issue(ACCOUNT, "scenes")
    fetched, failures = fetch(
        [_item("a", f"{unsigned}?{first}&rscd=x.xml")], _params(tmp_path, blob)
    )
    assert failures == []
    entry = tmp_path / "cache" / "by-href" / f"{hashlib.sha256(unsigned.encode()).hexdigest()}.tif"
    asset = fetched[0]["assets"]["image"]
    assert asset == {"href": str(entry), SOURCE_HREF: unsigned, "msgfm:sensor": "rgb"}
    assert entry.read_bytes() == local.read_bytes()
    second, _ = blob.tokens.issue(ACCOUNT, "scenes")
    again, failures = fetch([_item("a", f"{unsigned}?{second}")], _params(tmp_path, blob))
    assert failures == [] and again == fetched
    assert len(blob.requests) == 1  # the re-signed href downloaded nothing


@pytest.mark.parametrize("lifetime_s", [3600.0, TOKEN_MARGIN_S / 2])
def test_signing_reuses_a_token_per_container_until_it_expires(
    tmp_path: Path, blob: FileServer, monkeypatch: pytest.MonkeyPatch, lifetime_s: float
) -> None:
    assert blob.tokens is not None
    blob.tokens.lifetime_s = lifetime_s
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "key-1")
    files = {
        name: _remote(tmp_path, name) for name in ("scenes/a.tif", "scenes/b.tif", "masks/c.tif")
    }
    items = [_item(Path(name).stem, f"{BLOB}/{name}", local) for name, local in files.items()]
    items[1]["assets"]["image"]["href"] += "?sig=stale"  # replaced by a token
    params = _params(tmp_path, blob, sign="planetary_computer")
    fetched, failures = fetch(items, params)
    assert failures == [] and len(fetched) == 3
    for item, (name, local) in zip(fetched, files.items(), strict=True):
        assert item["assets"]["image"][SOURCE_HREF] == f"{BLOB}/{name}"
        assert Path(item["assets"]["image"]["href"]).read_bytes() == local.read_bytes()
    assert "sig=" not in json.dumps(fetched)
    assert all(blob.tokens.issued.get(sig) for sig in _signatures(blob))  # every file signed
    per_container = 2 if lifetime_s < TOKEN_MARGIN_S else 1  # renewed near expiry, else reused
    assert sorted(blob.tokens.requests) == sorted(
        [("/token/sentinel2/scenes", "key-1")] * per_container
        + [("/token/sentinel2/masks", "key-1")]
    )
    answered = len(blob.requests), len(blob.tokens.requests)
    again, failures = fetch(items, params)
    assert failures == [] and again == fetched
    assert (len(blob.requests), len(blob.tokens.requests)) == answered  # cached: no request


def test_token_endpoint_refusal_is_reported(tmp_path: Path, blob: FileServer) -> None:
    href = "http://elsewhere.blob.core.windows.net/scenes/a.tif"
    fetched, failures = fetch(
        [_item("a", href, _remote(tmp_path, "scenes/a.tif"))],
        _params(tmp_path, blob, sign="planetary_computer"),
    )
    assert fetched == [] and blob.requests == []
    assert [(f.path, f.reason) for f in failures] == [
        (href, f"token endpoint {blob.url('token')}/elsewhere/scenes answered 404 Not Found")
    ]


def test_sign_names_the_allowed_signers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown signer 'aws' .*null, planetary_computer"):
        FetchParams(sign="aws")
    path = tmp_path / "params.yaml"
    path.write_text(
        "pipeline:\n  fetch:\n    sign: planetary_computer\n"
        "    sign_endpoint: http://127.0.0.1:1/token\n    store_options: null\n"
    )
    fetch_params = load_params(path).fetch
    assert (fetch_params.sign, fetch_params.sign_endpoint, fetch_params.store_options) == (
        "planetary_computer",
        "http://127.0.0.1:1/token",
        {},
    )


def test_store_options_reach_the_s3_store(tmp_path: Path) -> None:
    local = _remote(tmp_path, "bucket/scenes/a.tif")
    with file_server(tmp_path / "remote") as server:  # as an S3 endpoint
        options = {
            "endpoint": server.url(),
            "region": "us-east-1",
            "access_key_id": "test",
            "secret_access_key": "test",
            "request_payer": True,
            "client_options": {"allow_http": True},
        }
        params = PipelineParams(
            fetch=FetchParams(cache_dir=tmp_path / "cache", store_options={"s3": options})
        )
        fetched, failures = fetch([_item("a", "s3://bucket/scenes/a.tif", local)], params)
    assert failures == []
    assert Path(fetched[0]["assets"]["image"]["href"]).read_bytes() == local.read_bytes()
    (request,) = server.requests
    assert request.path == "/bucket/scenes/a.tif"
    assert request.headers["x-amz-request-payer"] == "requester"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"s3": {"request_payr": True}},
            "pipeline.fetch.store_options.s3: Configuration key: 'request_payr' is not valid",
        ),
        (
            {"http": {"request_payer": True}},
            "pipeline.fetch.store_options.http: .*unexpected keyword argument 'request_payer'",
        ),
        ({"ftp": {}}, r"pipeline.fetch.store_options: unknown scheme\(s\) \['ftp'\]"),
        (
            {"http": {"retry_config": {"max_retries": 3}}},
            "pipeline.fetch.store_options.http: retry_config is not an option here",
        ),
    ],
)
def test_bad_store_options_stop_the_run_before_any_request(
    tmp_path: Path, blob: FileServer, options: dict[str, Any], message: str
) -> None:
    items = [
        _item("a", f"{BLOB}/scenes/a.tif", _remote(tmp_path, "scenes/a.tif")),
        _item("b", "s3://bucket/b.tif"),
    ]
    with pytest.raises(ValueError, match=message):
        fetch(items, _params(tmp_path, blob, store_options=options))
    assert blob.requests == []
