"""Command line of one K-ERP app replica: `python -m harness.lab.kerp --port P --region R --replica N --dsn DSN ...`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness.errors import ConfigError, HarnessError

ENV_PREFIX = "DRILL_APP_"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.lab.kerp",
        description="Reference K-ERP app replica of the drill lab. Every option also reads DRILL_APP_<NAME> "
                    "(e.g. DRILL_APP_DSN, DRILL_APP_JWT_SECRET); the command line wins.")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=_env("PORT"))
    p.add_argument("--region", default=_env("REGION"))
    p.add_argument("--replica", type=int, default=_env("REPLICA", "0"))
    p.add_argument("--dsn", default=_env("DSN"), help="PostgreSQL DSN of the K-ERP database")
    p.add_argument("--redis-url", default=_env("REDIS_URL"), help="redis://127.0.0.1:PORT/0")
    p.add_argument("--popbill-url", default=_env("POPBILL_URL"), help="http://127.0.0.1:PORT")
    p.add_argument("--jwt-secret", default=_env("JWT_SECRET"),
                   help="secret that wraps the ES256 signing keys stored in the database (prefer --jwt-secret-file)")
    p.add_argument("--jwt-secret-file", default=_env("JWT_SECRET_FILE"), help="file holding that secret")
    p.add_argument("--ops-token-file", default=_env("OPS_TOKEN_FILE"),
                   help="file holding the bearer token of the ops API (/ops/...); without it the ops API is off")
    p.add_argument("--key-refresh", type=float, default=float(_env("KEY_REFRESH", "0.5")),
                   help="seconds between reloads of the signing key ring")
    p.add_argument("--pool-size", type=int, default=int(_env("POOL_SIZE", "8")))
    p.add_argument("--session-ttl", type=int, default=int(_env("SESSION_TTL", "3600")), help="seconds")
    p.add_argument("--db-timeout", type=float, default=float(_env("DB_TIMEOUT", "2.0")), help="seconds")
    p.add_argument("--popbill-timeout", type=float, default=float(_env("POPBILL_TIMEOUT", "2.0")), help="seconds")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "warning"))
    return p


def config_from_args(args: argparse.Namespace):
    from harness.lab.kerp.app import AppConfig

    missing = [name for name in ("port", "region", "dsn", "redis_url", "popbill_url") if getattr(args, name) in (None, "")]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise ConfigError(f"missing required option(s): {flags} (or DRILL_APP_{missing[0].upper()})")
    secret = args.jwt_secret
    if args.jwt_secret_file:
        try:
            secret = Path(args.jwt_secret_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read --jwt-secret-file {args.jwt_secret_file}: {e.strerror}") from e
    if not secret:
        raise ConfigError("no JWT secret: pass --jwt-secret-file PATH, --jwt-secret or DRILL_APP_JWT_SECRET")
    ops_token = None
    if args.ops_token_file:
        try:
            ops_token = Path(args.ops_token_file).read_text(encoding="utf-8").strip() or None
        except OSError as e:
            raise ConfigError(f"cannot read --ops-token-file {args.ops_token_file}: {e.strerror}") from e
        if ops_token is None:
            raise ConfigError(f"--ops-token-file {args.ops_token_file} is empty")
    if not 0.05 <= args.key_refresh <= 60:
        raise ConfigError(f"--key-refresh must be within 0.05..60 seconds, got {args.key_refresh}")
    if args.pool_size < 1:
        raise ConfigError(f"--pool-size must be >= 1, got {args.pool_size}")
    return AppConfig(region=args.region, replica=args.replica, dsn=args.dsn, redis_url=args.redis_url,
                     popbill_url=args.popbill_url, jwt_secret=secret, ops_token=ops_token,
                     key_refresh_s=args.key_refresh, pool_size=args.pool_size,
                     session_ttl_s=args.session_ttl, db_timeout_s=args.db_timeout,
                     statement_timeout_ms=max(100, int(args.db_timeout * 1000) - 250), popbill_timeout_s=args.popbill_timeout)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except HarnessError as e:
        print(f"kerp: {e}", file=sys.stderr)
        return e.exit_code

    import uvicorn

    from harness.lab.kerp.app import create_app

    logging.getLogger("harness.lab.kerp").info("K-ERP app region=%s replica=%s on %s:%s", config.region,
                                               config.replica, args.host, args.port)
    uvicorn.run(create_app(config), host=args.host, port=args.port, http="auto", loop="auto", lifespan="on",
                log_level=args.log_level, access_log=False, server_header=False, date_header=False,
                timeout_graceful_shutdown=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
