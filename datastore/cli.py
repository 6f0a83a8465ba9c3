"""``datastore`` command line: inspect and maintain a store.

    datastore stats            --store URL [--json]
    datastore get NS SET KEY   --store URL [--json] [--str-key]
    datastore scan NS SET      --store URL [--json] [--limit N]
    datastore verify           --store URL [--json]      exit 1 if a problem is found
    datastore compact          --store URL [--json]
    datastore backup FILE      --store URL [--json]      msgpack stream of every live record
    datastore restore FILE     --store URL [--json]      writes them back (same generation and expiry)
    datastore repair           --store URL [--json]      rewrite damaged segments keeping every good frame

``--store`` defaults to ``$DATASTORE_URL``. A file store is locked by the process that has it open, so run
these against a store the server is not using (or a copy). Keys given on the command line are ints when
they parse as one, unless ``--str-key``; ``--bytes-key`` takes hex.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from typing import Any

import msgpack

from . import open_store
from .errors import DatastoreError
from .keys import Key
from .record import Record
from .url import file_directory

EXIT_OK, EXIT_PROBLEM, EXIT_ERROR = 0, 1, 2


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _record_dict(rec: Record) -> dict[str, Any]:
    return {
        "namespace": rec.key.namespace, "set": rec.key.set, "key": _jsonable(rec.key.user_key),
        "generation": rec.generation, "expires_at": rec.expires_at, "bins": _jsonable(rec.bins),
    }


def _user_key(args: argparse.Namespace) -> str | int | bytes:
    if args.bytes_key:
        return bytes.fromhex(args.key)
    if not args.str_key:
        try:
            return int(args.key)
        except ValueError:
            pass
    return args.key


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DatastoreError(f"cannot read {path}: {exc}") from exc


async def _run(args: argparse.Namespace) -> tuple[int, Any, str]:
    """Execute a command; returns (exit code, JSON result, human-readable text)."""
    if args.command == "repair":
        from .recovery import repair

        if not args.store.startswith("file:"):
            raise DatastoreError("repair needs a file:// store")
        report = repair(file_directory(args.store))
        fixed = report["repaired"]
        text = (f"repair: {report['segments']} segments checked, {report['frames_kept']} frames kept, "
                f"{len(fixed)} segments rewritten, {report['bytes_dropped']} bad bytes dropped")
        for item in fixed:
            text += f"\n  {item['file']}: dropped {item['bytes_dropped']} bytes at {item['bad_ranges'][:5]}"
        return EXIT_OK, report, text
    store = await open_store(args.store)
    try:
        if args.command == "stats":
            st = store.stats()
            return EXIT_OK, st, "\n".join(f"{k:>18}: {v}" for k, v in st.items())
        if args.command == "get":
            rec = await store.get(Key(args.namespace, args.set, _user_key(args)))
            if rec is None:
                return EXIT_PROBLEM, None, "not found"
            lines_ = [f"{rec.key.namespace}/{rec.key.set}/{rec.key.user_key!r} generation={rec.generation}"]
            if rec.expires_at is not None:
                lines_.append(f"expires_at: {rec.expires_at:.3f}")
            lines_ += [f"  {n} = {v!r}" for n, v in sorted(rec.bins.items())]
            return EXIT_OK, _record_dict(rec), "\n".join(lines_)
        if args.command == "scan":
            recs = []
            async for rec in store.scan(args.namespace, args.set):
                recs.append(rec)
                if args.limit and len(recs) >= args.limit:
                    break
            lines = [f"{r.key.user_key!r} gen={r.generation} {r.bins!r}" for r in recs]
            lines.append(f"({len(recs)} records)")
            return EXIT_OK, [_record_dict(r) for r in recs], "\n".join(lines)
        if args.command == "verify":
            report = await store.verify()  # type: ignore[attr-defined]
            text = f"verify: {'OK' if report['ok'] else 'PROBLEMS'}, {report['records']} records, " \
                   f"{report['segments']} segments"
            text += "".join(f"\n  {p}" for p in report["problems"])
            return (EXIT_OK if report["ok"] else EXIT_PROBLEM), report, text
        if args.command == "compact":
            report = await store.compact(force=True)  # type: ignore[attr-defined]
            text = (f"compacted {len(report['inputs'])} segments: {report['bytes_before']} -> "
                    f"{report['bytes_after']} bytes" if report["inputs"] else "nothing to compact")
            return EXIT_OK, report, text
        if args.command == "backup":
            packer = msgpack.Packer(use_bin_type=True)
            chunks = []
            async for rec in store.scan_all():  # type: ignore[attr-defined]
                k = rec.key
                chunks.append(packer.pack([k.namespace, k.set, k.user_key, rec.generation, rec.expires_at,
                                           rec.bins]))
            _write_file(args.file, b"".join(chunks))
            n = len(chunks)
            return EXIT_OK, {"records": n, "file": args.file}, f"backed up {n} records to {args.file}"
        if args.command == "restore":
            n = 0
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(_read_file(args.file))
            for ns, set_name, ukey, gen, exp, bins in unpacker:
                key = Key(ns, set_name, ukey)
                if hasattr(store, "restore_record"):
                    await store.restore_record(key, bins, gen, exp)
                else:  # a backend without exact restore: same bins, generations restart
                    await store.put(key, bins, exists="replace" if await store.get(key) else "upsert")
                n += 1
            return EXIT_OK, {"records": n, "file": args.file}, f"restored {n} records from {args.file}"
        raise DatastoreError(f"unknown command {args.command}")
    finally:
        await store.close()


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser (exposed for tests and docs)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=os.environ.get("DATASTORE_URL"),
                        help="store URL, e.g. file:///var/lib/game/db (default $DATASTORE_URL)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser = argparse.ArgumentParser(prog="datastore", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stats", parents=[common], help="record and storage counters")
    for name, helptext in (("get", "one record"), ("scan", "every record of a set")):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("namespace")
        p.add_argument("set")
        if name == "get":
            p.add_argument("key")
            p.add_argument("--str-key", action="store_true", help="never parse KEY as an int")
            p.add_argument("--bytes-key", action="store_true", help="KEY is hex for a bytes key")
        else:
            p.add_argument("--limit", type=int, default=0, help="stop after N records")
    sub.add_parser("verify", parents=[common], help="check the index against the log")
    sub.add_parser("compact", parents=[common], help="rewrite sealed segments with dead bytes now")
    for name in ("backup", "restore"):
        p = sub.add_parser(name, parents=[common], help=f"{name} every record (msgpack file)")
        p.add_argument("file")
    sub.add_parser("repair", parents=[common], help="drop damaged frames, keep every good record")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 1 problem found / not found, 2 error)."""
    args = build_parser().parse_args(argv)
    if not args.store:
        print("datastore: --store URL is required (or set DATASTORE_URL)", file=sys.stderr)
        return EXIT_ERROR
    try:
        code, result, text = asyncio.run(_run(args))
    except DatastoreError as exc:
        if args.json:
            print(json.dumps({"error": exc.code, "message": str(exc)}))
        else:
            print(f"datastore: error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(_jsonable(result), indent=2, default=str) if args.json else text)
    return code


if __name__ == "__main__":
    sys.exit(main())
