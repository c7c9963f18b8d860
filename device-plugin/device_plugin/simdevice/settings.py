"""Settings of the simulated device pair: one frozen dataclass, parsed once by ``main``.

The command line is the only input (``QSS_QKD_SIM_SECRET_FILE`` stands in for
``--secret-file``, read by ``main``); a bad invocation raises ``UsageError`` with one sentence.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from device_plugin.simdevice.keymaterial import MIN_SECRET_BYTES

PROG = "qss-qkd-sim"
SECRET_FILE_ENV = "QSS_QKD_SIM_SECRET_FILE"
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


class UsageError(Exception):
    """The invocation cannot run; the message says what is wrong in one sentence."""


@dataclass(frozen=True, kw_only=True)
class SimSettings:
    # The Unix sockets of the two ends; the QKDM at each end of the link talks to one of them.
    socket_a: Path
    socket_b: Path
    # Secret key rate of the link in bits/s, shared by all streams on it (no sensible default:
    # it is what a test or demo sets out to show).
    rate_bps: int
    # The pair's shared secret; None means a random one (the bytes then match no other process).
    secret: bytes | None = None
    # Quantum bit error rate the link starts with; a real BB84 link runs at a few percent.
    qber: float = 0.01
    # Above this QBER no secret key can be distilled (about 11% for BB84): streams abort.
    qber_threshold: float = 0.11
    # Key a stream keeps that nobody fetched, in bits; older chunks are gone (a device buffer).
    buffer_bits: int = 8 * 1024 * 1024
    log_level: str = "INFO"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Simulated QKD device pair (ETSI GS QKD 004 style).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    pair = commands.add_parser("pair", help="run both ends of one device pair in this process")
    pair.add_argument("--socket-a", type=Path, required=True, help="Unix socket of end A")
    pair.add_argument("--socket-b", type=Path, required=True, help="Unix socket of end B")
    pair.add_argument("--rate-bps", type=int, required=True, help="secret key rate, bits/s")
    pair.add_argument(
        "--secret-file",
        type=Path,
        help=f"file whose bytes (at least {MIN_SECRET_BYTES}) are the pair's shared secret;"
        f" default ${SECRET_FILE_ENV}, else a random secret",
    )
    pair.add_argument("--qber", type=float, default=SimSettings.qber, help="initial QBER")
    pair.add_argument(
        "--qber-threshold",
        type=float,
        default=SimSettings.qber_threshold,
        help="QBER above which streams abort",
    )
    pair.add_argument(
        "--buffer-bits",
        type=int,
        default=SimSettings.buffer_bits,
        help="unfetched key a stream keeps, bits",
    )
    pair.add_argument(
        "--log-level",
        default=SimSettings.log_level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    return parser


def parse_args(argv: Sequence[str], *, environ: Mapping[str, str]) -> SimSettings:
    args = _parser().parse_args(list(argv))
    for name in ("socket_a", "socket_b"):
        path: Path = getattr(args, name)
        if len(str(path).encode()) > MAX_SOCKET_PATH:
            raise UsageError(f"--{name.replace('_', '-')} {path} is longer than 107 bytes")
        if not path.parent.is_dir():
            raise UsageError(f"the directory of --{name.replace('_', '-')} {path} does not exist")
    if args.socket_a.resolve() == args.socket_b.resolve():
        raise UsageError("--socket-a and --socket-b must be different paths")
    if args.rate_bps < 0:
        raise UsageError(f"--rate-bps {args.rate_bps} must not be negative")
    if not 0 <= args.qber <= 0.5 or not 0 <= args.qber_threshold <= 0.5:
        raise UsageError("--qber and --qber-threshold must be between 0 and 0.5")
    if args.buffer_bits < 8:
        raise UsageError(f"--buffer-bits {args.buffer_bits} must be at least 8")
    secret_file = args.secret_file or (
        Path(environ[SECRET_FILE_ENV]) if environ.get(SECRET_FILE_ENV) else None
    )
    secret = None
    if secret_file is not None:
        try:
            secret = secret_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the secret file {secret_file}: {exc.strerror}") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise UsageError(
                f"the secret file {secret_file} holds {len(secret)} bytes; it needs at least"
                f" {MIN_SECRET_BYTES}"
            )
    return SimSettings(
        socket_a=args.socket_a,
        socket_b=args.socket_b,
        rate_bps=args.rate_bps,
        secret=secret,
        qber=args.qber,
        qber_threshold=args.qber_threshold,
        buffer_bits=args.buffer_bits,
        log_level=args.log_level,
    )
