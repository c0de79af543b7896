"""The API token, the same-origin rule and the token generated when binding off loopback."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys

import httpx
import pytest

from apiary.core.config import Settings
from apiary.server.runner import with_required_token
from apiary.server.security import ensure_token, is_loopback


async def test_token_is_required_everywhere_under_api(make_client):
    client = await make_client(server={"api_token": "s3cret"})
    for method, path in [("GET", "/api/health"), ("GET", "/api/sessions"), ("POST", "/api/nope")]:
        resp = await client.request(method, path)
        assert resp.status == 401
        assert await resp.json() == {"error": "unauthorized"}
    assert (await client.get("/api/health", headers={"X-Hive-Token": "wrong"})).status == 401
    assert (await client.get("/api/health", headers={"X-Hive-Token": "s3cret"})).status == 200
    assert (await client.get("/api/health", headers={"Authorization": "Bearer s3cret"})).status == 200
    page = await client.get("/")
    assert page.status == 200, "the UI page itself loads; it asks for the token"


async def test_cross_origin_requests_are_refused(api):
    foreign = await api.post("/api/sessions", json={}, headers={"Origin": "http://evil.example"})
    assert foreign.status == 403
    assert (await foreign.json())["error"] == "cross-origin request refused"
    listed = await (await api.get("/api/sessions")).json()
    assert listed["sessions"] == [], "the refused request created nothing"
    site = await api.get("/api/health", headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status == 403
    host = f"http://{api.server.host}:{api.server.port}"
    same = await api.post("/api/sessions", json={}, headers={"Origin": host})
    assert same.status == 201


def test_loopback_detection():
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("")
    assert not is_loopback("192.0.2.10")


def test_generated_token_is_private_and_reused(tmp_path):
    token, created = ensure_token(tmp_path)
    assert created
    assert len(token) >= 32
    mode = stat.S_IMODE(os.stat(tmp_path / "api_token").st_mode)
    assert mode == 0o600
    again, created_again = ensure_token(tmp_path)
    assert (again, created_again) == (token, False)


def test_binding_off_loopback_requires_a_token(tmp_path, capsys):
    settings = with_required_token(Settings(home=tmp_path, server={"host": "0.0.0.0"}))
    assert settings.server.api_token is not None
    assert settings.server.api_token.get_secret_value() in capsys.readouterr().out
    local = with_required_token(Settings(home=tmp_path / "other"))
    assert local.server.api_token is None


@pytest.mark.e2e
def test_served_off_loopback_answers_401_without_the_token(tmp_path):
    env = {**os.environ, "APIARY_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "apiary", "serve", "--host", "0.0.0.0", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        token = lines[1].strip()
        port = re.search(r":(\d+) ", lines[2]).group(1)
        base = f"http://127.0.0.1:{port}/api/health"
        assert httpx.get(base).status_code == 401
        assert httpx.get(base, headers={"X-Hive-Token": token}).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
