"""Measure sub-calls through the coding-agent CLIs (claude-code, codex) against the API backend.

Why: for people with a subscription and no API key the CLI backends are the recursion, and each call is a
process, so what matters is the cost per call on top of the model's latency and how close a batch comes to
its ideal at the CLI concurrency. All three backends answer from the same fake provider (real wire formats:
Anthropic Messages with SSE for Claude Code, the Responses API for Codex), in a process of its own, with
fake logins; the backends are driven through the router as a session drives them. The CLIs are the pinned
npm packages .ci/run installs.

Run: python bench/bench_cli_backends.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.provider_process import ProviderProcess
from bench.report import print_report
from rlm_mcp.config import load_settings
from rlm_mcp.llm import logins
from rlm_mcp.llm.router import Router, SessionLLM
from rlm_mcp.sandbox import exposure
from testkit.clis import find_claude, find_npm_cli

BATCH, BATCH_LATENCY = 32, 0.5
CLAUDE = find_claude() or "claude"  # found before HOME is moved to the benchmark's own directory
CODEX = find_npm_cli("codex", "RLM_MCP_TEST_CODEX") or "codex"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def codex_config(home: Path, base_url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model_provider = "fake"\n[model_providers.fake]\nname = "fake"\nbase_url = "{base_url}/v1"\n'
        'wire_api = "responses"\nrequires_openai_auth = true\nsupports_websockets = false\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
    )
    (home / "auth.json").write_text(json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-bench"}))


async def per_call(llm: SessionLLM, calls: int, tag: str) -> float:
    """Seconds per call, one after another (as a loop of llm_query does)."""
    await llm.batch([{"prompt": f"{tag} warm"}], None)
    started = time.perf_counter()
    for index in range(calls):
        await llm.batch([{"prompt": f"{tag} {index}"}], None)
    return (time.perf_counter() - started) / calls


async def batch(llm: SessionLLM, tag: str) -> float:
    started = time.perf_counter()
    results = await llm.batch([{"prompt": f"{tag} {index}"} for index in range(BATCH)], None)
    if not all(item.get("ok") for item in results):
        raise RuntimeError(f"{tag}: a call failed: {[item for item in results if not item.get('ok')][:1]}")
    return time.perf_counter() - started


def session(mode: str, workdir: Path, **overrides: object) -> SessionLLM:
    values = {"roots": [workdir], "workspace": workdir / "ws", "backend": mode, "max_sub_calls": 100_000}
    values.update(confirm_batch_usd=None, claude_command=CLAUDE, codex_command=CODEX, **overrides)
    return SessionLLM(Router(load_settings(values, environ={})))


async def main(quick: bool) -> None:
    calls = 3 if quick else 8
    rows: list[tuple[str, str, str, str, str]] = []
    with ProviderProcess() as provider, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ.update(
            HOME=str(workdir),
            ANTHROPIC_BASE_URL=provider.base_url,
            CLAUDE_CODE_OAUTH_TOKEN="fake-oauth-token",
            CLAUDE_CODE_MAX_RETRIES="0",
            CODEX_HOME=str(workdir / "codex"),
        )
        codex_config(workdir / "codex", provider.base_url)
        provider.set_latency(0.0)
        os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench"
        api = session("anthropic", workdir)
        api_call = await per_call(api, calls * 5, "api")
        await api.router.aclose()
        del os.environ["ANTHROPIC_API_KEY"]  # the CLIs below run on their logins alone
        logins.forget()
        rows.append(("anthropic API (SDK), per call, zero latency", f"{api_call * 1000:.1f} ms", "", "", ""))
        # No REPL worker here: say what a locked-down one reports, so spares are kept (as they are on a machine
        # whose sandbox closes other processes to the worker; see rlm_mcp/llm/cli_process.py).
        exposure.workers_report([{"name": "environment", "active": True, "detail": "the benchmark's stand-in"}])
        for mode, spares_label in (("claude-code", "with spares"), ("codex", "with spares")):
            llm = session(mode, workdir)
            try:
                seconds = await per_call(llm, calls, mode)
                log(f"{mode}: {seconds:.3f} s per call")
                rows.append(
                    (
                        f"{mode}, per call, zero latency ({spares_label})",
                        f"{seconds * 1000:.0f} ms",
                        "",
                        f"{api_call * 1000:.1f} ms API",
                        f"+{(seconds - api_call) * 1000:.0f} ms",
                    )
                )
                if mode == "claude-code":
                    backend = await llm.router.backend_for(None)
                    backend._pool.spares = 0  # type: ignore[attr-defined]  # the same calls, each process cold
                    cold = await per_call(llm, calls, "cold")
                    rows.append(
                        (
                            "claude-code, per call, zero latency (no spares: each process started on demand)",
                            f"{cold * 1000:.0f} ms",
                            "",
                            f"{seconds * 1000:.0f} ms with spares",
                            f"{cold / seconds:.2f}x",
                        )
                    )
                    backend._pool.spares = llm.settings.cli_concurrency  # type: ignore[attr-defined]
                provider.set_latency(BATCH_LATENCY)
                walls = [await batch(llm, f"{mode} batch {repeat}") for repeat in range(1 if quick else 2)]
                provider.set_latency(0.0)
                wall = statistics.median(walls)
                concurrency = llm.settings.cli_concurrency
                ideal = BATCH / concurrency * BATCH_LATENCY
                rows.append(
                    (
                        f"{mode}, batch of {BATCH} at concurrency {concurrency}, {BATCH_LATENCY * 1000:.0f} ms latency",
                        f"{wall:.2f} s",
                        "",
                        f"{ideal:.2f} s ideal ({BATCH // concurrency} waves)",
                        f"{wall / ideal:.2f}",
                    )
                )
            finally:
                await llm.router.aclose()
    print_report("CLI backend benchmark", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, one batch each")
    anyio.run(main, parser.parse_args().quick)
