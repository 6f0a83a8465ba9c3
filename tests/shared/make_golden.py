"""Write the golden wire fixtures: ``python -m tests.shared.make_golden``.

For each example in :mod:`tests.shared.examples`: ``tests/golden/<name>.msgpack`` (the binary frame)
and ``tests/golden/<name>.json`` (the text frame, UTF-8, no trailing newline). Stale files are removed.
"""

from __future__ import annotations

from pathlib import Path

from shared.codec import encode

from .examples import EXAMPLES

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


def golden_files() -> dict[str, bytes]:
    """File name → exact bytes, for every example in both encodings."""
    files: dict[str, bytes] = {}
    for name, model in EXAMPLES.items():
        binary = encode(model, binary=True)
        text = encode(model, binary=False)
        assert isinstance(binary, bytes) and isinstance(text, str)
        files[f"{name}.msgpack"] = binary
        files[f"{name}.json"] = text.encode("utf-8")
    return files


def main() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    files = golden_files()
    for stale in GOLDEN_DIR.iterdir():
        if stale.suffix in (".msgpack", ".json") and stale.name not in files:
            stale.unlink()
    for name, data in files.items():
        (GOLDEN_DIR / name).write_bytes(data)
    print(f"wrote {len(files)} files to {GOLDEN_DIR}")


if __name__ == "__main__":
    main()
