"""docs/ARCHITECTURE.md's module table against the real module graph.

Usage: python3 tests/docs/architecture_table.py MODGRAPH (the path of
shared/tools/modgraph.py). Every file under src/ must belong to a row of the table, a
directory row must name each of its files, and every import the graph shows must be one
the row's "may import" cell allows. Prints one line per failure, then a count.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["leaf", "middle", "upper", "top"]


def rows():
    """(layer, [module paths], holds, may-import) per row of the table."""
    text = (ROOT / "docs/ARCHITECTURE.md").read_text()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] not in LAYERS:
            continue
        modules = re.findall(r"`([\w/]+(?:\.rs|/))`", cells[1])
        yield cells[0], modules, cells[2], cells[3]


def owner(path, table):
    """The row a source file belongs to: a file row, or the directory that holds it."""
    for row in table:
        for module in row[1]:
            if module.endswith("/") and path.startswith("src/" + module):
                return row, module
            if path == "src/" + module:
                return row, module
    return None, None


def module_of(name):
    """`manager` → src/manager/, `cookie_cache::chunks` → src/cookie_cache/chunks.rs."""
    parts = name.split("::")
    directory = ROOT / "src" / "/".join(parts)
    if directory.is_dir():
        return "src/" + "/".join(parts) + "/"
    return "src/" + "/".join(parts) + ".rs"


def allows(row, target_row, target_path):
    layer, _, _, may = row
    target_layer = target_row[0]
    may_plain = re.sub(r"\([^)]*\)", "", may)  # notes in brackets say what, not whom
    if "everything below" in may_plain and LAYERS.index(target_layer) < LAYERS.index(layer):
        return True
    for word in LAYERS:
        if re.search(rf"\b{word}\b", re.sub(r"`[^`]*`", "", may_plain)) and target_layer == word:
            return True
    for name in re.findall(r"`([\w:]+)`", may_plain):
        module = module_of(name)
        if target_path == module or (module.endswith("/") and target_path.startswith(module)):
            return True
    return False


def main():
    table = list(rows())
    failures = []
    checked = 0
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.rs"))
    for path in sources:
        if path == "src/lib.rs":
            continue
        checked += 1
        row, module = owner(path, table)
        if row is None:
            failures.append(f"{path}: in no row of the module table")
        elif module.endswith("/") and str(Path(path).parent) + "/" == "src/" + module:
            # A directory row names each file directly in it (subdirectories by name).
            if Path(path).name != "mod.rs" and Path(path).name not in row[2]:
                failures.append(f"{path}: the `{module}` row does not name {Path(path).name}")
    edges = subprocess.run(
        [sys.executable, sys.argv[1], str(ROOT / "src"), "--edges"],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in edges.splitlines():
        match = re.match(r"(\S+) -> (\S+):", line)
        if not match:
            continue
        source, target = (str(Path(p).resolve().relative_to(ROOT)) if Path(p).is_absolute() else p for p in match.groups())
        if source == "src/lib.rs" or target == "src/lib.rs":
            continue
        checked += 1
        row, module = owner(source, table)
        target_row, target_module = owner(target, table)
        if row is None or target_row is None:
            continue  # reported above
        if module == target_module or (module.endswith("/") and target.startswith("src/" + module)):
            continue
        if row is target_row and len(row[1]) > 1:
            continue  # one row of several files (the middleware) is one module
        if not allows(row, target_row, target):
            failures.append(f"{source} imports {target}: its row allows only \"{row[3]}\"")
    for failure in failures:
        print(failure)
    print(f"{checked - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
