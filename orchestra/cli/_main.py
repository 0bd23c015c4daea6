"""``orchestra`` command line: run a swarm on a local Ray (or in-process), list teams, serve, manage keys."""

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
from orchestra.errors import ConfigError, OrchestraError
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
    _keys_parser(sub)
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number >= 1")
    return value


def _keys_parser(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="issue, list, revoke and rotate API keys",
        description=(
            "Manage the API keys of the server's store: $ORCHESTRA_REDIS_URL, else the embedded store of "
            "the `orchestra serve` running in this data directory. Changes reach every replica within "
            "2 seconds."
        ),
    )
    ops = keys.add_subparsers(dest="keys_command", required=True)
    create = ops.add_parser("create", help="issue a key (printed once: it cannot be shown again)")
    create.add_argument("--name", required=True, help="a name unique among active keys")
    create.add_argument(
        "--scopes", default="chat", help="comma-separated: chat, metrics, admin (default chat)"
    )
    create.add_argument("--expires", help="lifetime, e.g. 30d, 12h, 2w (default: never)")
    create.add_argument("--daily-tokens", type=_positive, help="daily token budget (UTC day; default none)")
    create.add_argument("--rpm", type=_positive, help="requests per minute (default: the server's, 1000)")
    create.add_argument("--tenant", help="owner of its sessions and memory (default: the key's own id)")
    create.add_argument("--json", action="store_true", help="print the key and its record as JSON")
    listing = ops.add_parser("list", help="every key with its usage today (never the keys themselves)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = ops.add_parser("revoke", help="revoke a key by id or name")
    revoke.add_argument("key", metavar="ID|NAME")
    rotate = ops.add_parser("rotate", help="a new secret for a key; the old one works for a grace period")
    rotate.add_argument("key", metavar="ID|NAME")
    rotate.add_argument(
        "--grace", default="1h", help="how long the old secret keeps working (default 1h; 0s: none)"
    )
    rotate.add_argument("--json", action="store_true", help="print the new key and its record as JSON")


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
    from orchestra.serving._auth import ensure_hash_secret
    from orchestra.serving._proxy import PROXY_CALLBACK

    load_config(args.config)  # a bad swarms config stops us here, before anything starts
    if args.config:
        os.environ["ORCHESTRA_CONFIG"] = str(Path(args.config).resolve())
    redis: EmbeddedRedis | None = None
    data_dir = settings().data_dir
    if not settings().redis_url:
        redis = EmbeddedRedis(data_dir / "redis")
        os.environ["ORCHESTRA_REDIS_URL"] = redis.url
    # Every replica and the `orchestra keys` CLI hash keys with the same secret.
    os.environ["ORCHESTRA_KEY_HASH_SECRET"] = ensure_hash_secret(data_dir).decode()
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


def _key_store_url() -> str:
    """The store the running server uses: ``ORCHESTRA_REDIS_URL``, else the embedded one of the
    ``orchestra serve`` of this data directory."""
    from orchestra.cli._server_file import read_server_file

    env = settings()
    if env.redis_url:
        return env.redis_url
    info = read_server_file(env.data_dir)
    if info is not None and info["redis_url"]:
        return info["redis_url"]
    raise ConfigError(
        f"no key store: start `orchestra serve` with this data directory ({env.data_dir}) or set "
        "ORCHESTRA_REDIS_URL to the server's Redis",
        details={"field": "ORCHESTRA_REDIS_URL", "reason": "no store"},
    )


def _print_keys(views: list[dict[str, Any]]) -> None:
    def short(value: str | None) -> str:
        return "-" if value is None else value[:16].replace("T", " ")

    rows = [("ID", "NAME", "SCOPES", "STATUS", "CREATED", "LAST USED", "EXPIRES", "RPM", "TOKENS TODAY")]
    for v in views:
        budget = f"{v['tokens_today']}/{v['daily_tokens']}" if v["daily_tokens"] else str(v["tokens_today"])
        rows.append(
            (
                v["id"],
                v["name"] or "-",
                ",".join(v["scopes"]),
                v["status"],
                short(v["created_at"]),
                short(v["last_used_at"]),
                short(v["expires_at"]),
                str(v["rpm"] or "default"),
                budget,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


async def _keys(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from orchestra.serving._auth import ApiKeys, describe_key, hash_secret, parse_duration
    from orchestra.serving._budgets import Budgets
    from orchestra.serving._keys_api import parse_rotate
    from orchestra.stores.redis import RedisKeyStore, RedisUsageStore, redis_client

    secret = hash_secret()  # before touching the store: a missing secret is the first thing to fix
    redis = redis_client(_key_store_url())
    try:
        keys = ApiKeys(RedisKeyStore(redis), secret=secret)
        budgets = Budgets(RedisUsageStore(redis))
        now = datetime.now(UTC)

        async def views(records: list[Any]) -> list[dict[str, Any]]:
            used = await budgets.used_today([r.key_id for r in records])
            last = await keys.last_used()
            return [
                describe_key(r, now=now, last_used=last.get(r.key_id), tokens_today=u)
                for r, u in zip(records, used, strict=True)
            ]

        async def view(record: Any) -> dict[str, Any]:
            return (await views([record]))[0]

        if args.keys_command == "create":
            expires = parse_duration(args.expires, "--expires") if args.expires else None
            key, record = await keys.create(
                args.tenant,
                [s.strip() for s in args.scopes.split(",") if s.strip()],
                args.name,
                expires_at=None if expires is None else now + expires,
                rpm=args.rpm,
                daily_tokens=args.daily_tokens,
            )
            shown = await view(record)
            if args.json:
                print(json.dumps({**shown, "key": key}, indent=2))
                return 0
            print(f"created {record.key_id} ({record.name}), scopes {','.join(shown['scopes'])}")
            limits = f"rpm {record.rpm or 'default'}; daily tokens {record.daily_tokens or 'unlimited'}"
            print(f"expires {shown['expires_at'] or 'never'}; {limits}")
            print("the key (shown this once; it is stored only as a keyed hash):")
            print(key)
            return 0
        if args.keys_command == "list":
            listed = await views(await keys.list())
            if args.json:
                print(json.dumps(listed, indent=2))
            else:
                _print_keys(listed)
            return 0
        record = await keys.find(args.key)
        if args.keys_command == "revoke":
            await keys.revoke(record.key_id)
            print(f"revoked {record.key_id} ({record.name or '-'}): refused by every replica within 2 s")
            return 0
        grace = parse_rotate(json.dumps({"grace": args.grace}).encode())
        key, rotated = await keys.rotate(record.key_id, grace)
        shown = await view(rotated)
        if args.json:
            print(json.dumps({**shown, "key": key}, indent=2))
            return 0
        until = shown["previous_key_valid_until"]
        old = f"keeps working until {until} ({args.grace})" if until else "stops working within 2 s"
        print(f"rotated {rotated.key_id} ({rotated.name or '-'}); the previous key {old}")
        print("the new key (shown this once):")
        print(key)
        return 0
    finally:
        await redis.aclose()


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
        if args.command == "keys":
            return asyncio.run(_keys(args))
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
