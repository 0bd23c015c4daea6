"""``orchestra`` command line: run a swarm on a local Ray (or in-process), list teams."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from orchestra import OrchestraHandle, connect
from orchestra._edges import load_edge
from orchestra._types import MODES
from orchestra.engine._config import load_config
from orchestra.engine._messages import RunCompleted, RunEvent, RunFailed, TokenEvent, TurnEnd, TurnStart
from orchestra.errors import OrchestraError
from orchestra.settings import ENV_PREFIX, settings

__all__ = ["main"]

DEFAULT_MESSAGE = "Write a Python function that merges overlapping intervals."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchestra", description="AI Orchestra: teams of LLM agents on Ray.")
    p.add_argument("--config", help="swarms YAML (default: configs/swarms.yaml or $ORCHESTRA_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one chat turn through a swarm and print the answer")
    run.add_argument("message", nargs="*", help=f"the message (default: {DEFAULT_MESSAGE!r})")
    run.add_argument("--swarm", dest="swarm_type", help="team to run (default: the router chooses)")
    run.add_argument("--mode", dest="optimization_mode", choices=MODES, default="balanced")
    run.add_argument("--session", dest="session_id", help="session id to continue")
    run.add_argument("--stream", action="store_true", help="print every agent's tokens as they come")
    run.add_argument("--local", action="store_true", help="run in this process without Ray")
    run.add_argument("--json", action="store_true", help="print the result as spec §5 JSON")
    run.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or a new local Ray)")
    sub.add_parser("teams", help="list the configured teams and their modes")
    srv = sub.add_parser("serve", help="run the HTTP/WebSocket server (Ray Serve) with embedded defaults")
    srv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    srv.add_argument(
        "--config",
        dest="serve_config",
        help="Serve config YAML with the deployment settings (configs/serve.yaml)",
    )
    srv.add_argument("--address", help="Ray address: 'local' forces a new one (default: $RAY_ADDRESS or new)")
    srv.add_argument(
        "--proxy",
        choices=("haproxy", "serve"),
        default=None,
        help="request path of a new local Ray: HAProxy + direct ingress (default; "
        "RAY_SERVE_ENABLE_HA_PROXY=0 means serve) or Serve's Python proxy",
    )
    return p


def _print_event(event: RunEvent, state: dict[str, Any]) -> None:
    if isinstance(event, TurnStart):
        state.setdefault("open", set()).add(event.agent)
        print(f"\n── {event.agent} ({event.role}, round {event.round}) ──", flush=True)
        state["current"] = event.agent
    elif isinstance(event, TokenEvent):
        if state.get("current") != event.agent:  # parallel agents interleave: say who speaks
            print(f"\n[{event.agent}] ", end="")
            state["current"] = event.agent
        print(event.token, end="", flush=True)
    elif isinstance(event, TurnEnd):
        s = event.step
        print(
            f"\n   ↳ {event.agent}: {s.completion_tokens} tokens in {s.latency_s:.2f}s ({s.model})",
            flush=True,
        )
        state["current"] = None


def _handle(args: argparse.Namespace) -> OrchestraHandle:
    """In this process (``--local``: no Ray, in-memory stores) or on the Ray actors."""
    if args.local:
        from orchestra.engine import Engine, LocalRuntime
        from orchestra.providers import make_provider

        cfg = load_config(args.config)
        engine = Engine(cfg, LocalRuntime(cfg, make_provider(cfg)), cfg.resolved_provider())
        return OrchestraHandle(engine, cfg)
    # Worker logs stay in Ray's log files: the terminal shows the agents' tokens, not actor noise.
    return connect(
        args.address, config=args.config, init_kwargs={"log_to_driver": False, "include_dashboard": False}
    )


async def _run(args: argparse.Namespace) -> int:
    handle = _handle(args)
    fields = _fields(args)
    message = fields.pop("message")
    if not args.stream:
        _print_result(await handle.achat(message, **fields), args.json)
        return 0
    state: dict[str, Any] = {}
    async for event in handle.stream(message, **fields):
        code = _handle_final(event, state, args.json)
        if code is not None:
            return code
    return 1


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "message": " ".join(args.message) or DEFAULT_MESSAGE,
        "swarm_type": args.swarm_type,
        "optimization_mode": args.optimization_mode,
        "session_id": args.session_id,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _handle_final(event: RunEvent, state: dict[str, Any], as_json: bool) -> int | None:
    if isinstance(event, RunCompleted):
        print()
        _print_result(event.result, as_json)
        return 0
    if isinstance(event, RunFailed):
        print(f"\nerror {event.error['code']}: {event.error['message']}", file=sys.stderr)
        return 2
    _print_event(event, state)
    return None


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.model_dump(), indent=2))
        return
    m = result.metadata
    print("═" * 72)
    print(result.response)
    print("═" * 72)
    print(
        f"team {m.swarm_type} ({result.execution_mode}), mode {m.optimization_mode}, model {m.model}, "
        f"quality {result.quality_score:.2f}, {m.tokens_used} tokens, {len(m.processing_steps)} turns, "
        f"{result.execution_time:.2f}s, session {result.session_id}"
    )


def _serve(args: argparse.Namespace) -> int:
    """Embedded defaults (Redis, development key), then the Serve app until Ctrl-C (``orchestra.edges``)."""
    import os
    from pathlib import Path

    from orchestra.cli._embedded import EmbeddedRedis, dev_key
    from orchestra.cli._server_file import remove_server_file, write_server_file
    from orchestra.serving._proxy import PROXY_CALLBACK

    load_config(args.config)  # a bad swarms config stops us here, before anything starts
    if args.config:
        os.environ["ORCHESTRA_CONFIG"] = str(Path(args.config).resolve())
    redis: EmbeddedRedis | None = None
    data_dir = settings().data_dir
    if not settings().redis_url:
        redis = EmbeddedRedis(data_dir / "redis")
        os.environ["ORCHESTRA_REDIS_URL"] = redis.url
    key = dev_key(data_dir)
    extra = settings().api_keys.get_secret_value()
    os.environ["ORCHESTRA_API_KEYS"] = ",".join(filter(None, [extra, f"{key}:chat+metrics+admin"]))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve's proxy then answers X-Request-ID as the spec says (orchestra/serving/_proxy.py).
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", PROXY_CALLBACK)
    url = f"http://{args.host}:{args.port}"
    # HAProxy unless turned off by flag or by Ray's own variable (the settings of a new local Ray).
    proxy = args.proxy or ("serve" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "0" else "haproxy")
    try:
        run_server = load_edge("serve")
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}

        def ready(ray_address: str) -> None:
            # How orchestra.connect() from this directory finds and joins this server.
            write_server_file(
                data_dir,
                {
                    "pid": os.getpid(),
                    "url": url,
                    "ray_address": ray_address,
                    "namespace": load_config(args.config).runtime.namespace,
                    # the embedded Redis only: an operator's URL may hold a password, and they have it
                    "redis_url": redis.url if redis is not None else "",
                    "ray_auth_mode": os.environ.get("RAY_AUTH_MODE", ""),  # set by ray.init just now
                },
            )
            print(f"\nAI Orchestra is serving at {url}  (API docs: {url}/docs)")
            print(f"development key (chat, metrics, admin; stored in {data_dir / 'dev-key'}): {key}")
            # The key rides in the fragment, which browsers never send: the page keeps it in the tab.
            print(f"playground:  {url}/playground#key={key}")
            print(f"try:  curl -s {url}/chat/v2/chat -H 'Authorization: Bearer {key}' \\")
            body = '{"message": "Write a haiku about actors"}'
            print(f"        -H 'Content-Type: application/json' -d '{body}'", flush=True)

        code: int = run_server(
            host=args.host,
            port=args.port,
            address=args.address,
            options_path=Path(args.serve_config) if args.serve_config else None,
            env=env,
            on_ready=ready,
            proxy=proxy,
        )
        return code
    finally:
        remove_server_file(data_dir, pid=os.getpid())
        if redis is not None:
            redis.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "teams":
            from orchestra.engine._engine import team_infos

            cfg = load_config(args.config)
            for info in team_infos(cfg, cfg.resolved_provider()):
                print(f"{info.swarm_type:15} {info.pattern:15} {info.description}")
                for mode, s in info.modes.items():
                    print(
                        f"    {mode:9} agents={s['agents']} rounds={s['rounds']} judge={s['judge']} "
                        f"model={s['model']} deadline={s['deadline_s']:g}s"
                    )
            return 0
        if args.command == "serve":
            return _serve(args)
        provider = load_config(args.config).resolved_provider()
        if provider == "scripted":
            print(
                "LLM provider: scripted (offline deterministic stand-in, not a real model)", file=sys.stderr
            )
        return asyncio.run(_run(args))
    except OrchestraError as e:
        print(f"error {e.code}: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
