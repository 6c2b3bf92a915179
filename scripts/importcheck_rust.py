"""The Rust half of `scripts/check-imports`: reads a crate's sources (comments
and strings stripped), resolves `mod`, `use` trees and inline `crate::`
paths to the files that define the items named, and gives the file graph.
Standard library only."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_TOKEN = re.compile(
    r"""
      (?P<line_comment>//[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<raw_string>b?r(?P<hashes>\#*)")
    | (?P<string>b?"(?:\\.|[^"\\])*")
    | (?P<char>b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^'\\\n])')
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_rust(text: str) -> str:
    """Blanks comments, strings and char literals, keeping line breaks so
    positions still mean something; lifetimes (`'a`) are left alone."""
    out = []
    i = 0
    while True:
        m = _TOKEN.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        if m.group("block_comment"):
            depth, j = 1, m.end()
            while depth and j < len(text):
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            end = j
        elif m.group("raw_string") is not None and m.group("raw_string"):
            close = '"' + m.group("hashes")
            k = text.find(close, m.end())
            end = len(text) if k < 0 else k + len(close)
        else:
            end = m.end()
        out.append(re.sub(r"[^\n]", " ", text[m.start() : end]))
        i = end
    return "".join(out)


class RustModule:
    def __init__(self, path: tuple[str, ...], file: Path, span: tuple[int, int]):
        self.path = path
        self.file = file
        self.span = span  # character range of this module's body in the stripped file
        self.children: dict[str, RustModule] = {}
        self.items: set[str] = set()
        self.reexports: dict[str, tuple[str, ...]] = {}  # name -> path
        self.glob_reexports: list[tuple[str, ...]] = []
        self.uses: list[tuple[str, ...]] = []  # raw paths this module names
        self.file_module: RustModule | None = None  # set for inline modules


_MOD_DECL = re.compile(
    r"(?P<attrs>(?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(?P<name>\w+)\s*(?P<kind>[;{])"
)
_ITEM = re.compile(
    r"(?:^|[\s;}{])(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+|async\s+|const\s+|extern\s+\"[^\"]*\"\s+)*"
    r"(?:fn|struct|enum|trait|type|const|static|union)\s+(?P<name>\w+)"
)
_MACRO = re.compile(r"macro_rules!\s*(?P<name>\w+)")
_USE = re.compile(r"(?P<pub>pub(?:\([^)]*\))?\s+)?\buse\s+(?P<tree>[^;]+);")
_INLINE_PATH = re.compile(r"(?<![\w:])(?P<path>(?:crate|super|self)(?:\s*::\s*\w+)+)")


def matching_brace(text: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text)


def depth_zero_ranges(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The parts of text[start:end] at brace depth 0 (outside any block)."""
    ranges = []
    depth = 0
    seg = start
    for j in range(start, end):
        c = text[j]
        if c == "{":
            if depth == 0:
                ranges.append((seg, j))
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                seg = j + 1
    if depth == 0:
        ranges.append((seg, end))
    return ranges


def expand_use_tree(tree: str) -> list[tuple[tuple[str, ...], str | None]]:
    """`a::{b, c::{self, D as E}}` -> [((a,b), None), ((a,c), None), ((a,c,D), 'E')]."""
    tree = re.sub(r"\s+", "", tree)

    def parse(s: str, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], str | None]]:
        out: list[tuple[tuple[str, ...], str | None]] = []
        for part in split_top(s):
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0:
                head = part[:brace].rstrip(":")
                inner = part[brace + 1 : part.rindex("}")]
                segs = tuple(x for x in head.split("::") if x)
                out.extend(parse(inner, prefix + segs))
                continue
            alias = None
            segs = tuple(x for x in part.split("::") if x)
            if segs and segs[-1] == "self":
                out.append((prefix + segs[:-1], alias))
            else:
                out.append((prefix + segs, alias))
        return out

    return parse(tree, ())


def split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in s:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def expand_use_tree_spaced(tree: str) -> list[tuple[tuple[str, ...], str | None]]:
    """Like expand_use_tree, but handles `X as Y` before whitespace is lost."""
    tree = re.sub(r"\s+as\s+", " as ", tree.strip())
    aliases: dict[str, str] = {}

    def mark(m: re.Match[str]) -> str:
        key = f"__alias{len(aliases)}__"
        aliases[key] = m.group(2)
        return m.group(1) + key

    tree = re.sub(r"([\w*]+) as (\w+)", mark, tree)
    out = []
    for segs, _ in expand_use_tree(tree):
        alias = None
        if segs and "__alias" in segs[-1]:
            last, key = segs[-1].split("__alias", 1)
            key = "__alias" + key
            alias = aliases.get(key)
            segs = (*segs[:-1], last)
        out.append((segs, alias))
    return out


def file_module(mod: RustModule) -> RustModule:
    """The module a file is (an inline module belongs to its file's)."""
    return mod.file_module or mod


class RustCrate:
    def __init__(self, src: Path):
        self.src = src
        #: The repository (rust/src's grandparent): file labels are relative to it.
        self.repo = src.parent.parent
        self.files: dict[Path, str] = {}
        self.path_attrs: list[str] = []
        self.tops: dict[str, str] = {}
        self.root = self.load(("crate",), src / "lib.rs", is_mod_rs=True)

    def read(self, file: Path) -> str:
        if file not in self.files:
            self.files[file] = strip_rust(file.read_text())
        return self.files[file]

    def load(self, path: tuple[str, ...], file: Path, is_mod_rs: bool) -> RustModule:
        text = self.read(file)
        mod = RustModule(path, file, (0, len(text)))
        self.scan(mod, text, 0, len(text), file.parent if is_mod_rs else file.with_suffix(""))
        return mod

    def scan(self, mod: RustModule, text: str, start: int, end: int, child_dir: Path) -> None:
        inline_spans = []
        for rng in depth_zero_ranges(text, start, end):
            for m in _MOD_DECL.finditer(text, *rng):
                name = m.group("name")
                attr = re.search(r'#\[path\s*=\s*"([^"]*)"', self.raw(mod.file, m.start(), m.end()))
                if m.group("kind") == "{":
                    open_at = m.end() - 1
                    close = matching_brace(text, open_at)
                    child = RustModule((*mod.path, name), mod.file, (open_at + 1, close))
                    child.file_module = file_module(mod)
                    self.scan(child, text, open_at + 1, close, child_dir / name)
                    mod.children[name] = child
                    inline_spans.append((open_at, close))
                    continue
                if attr:
                    rel = mod.file.relative_to(self.repo)
                    self.path_attrs.append(f'{rel}: #[path = "{attr.group(1)}"] mod {name}')
                    file = mod.file.parent / attr.group(1)
                    mod.children[name] = self.load((*mod.path, name), file, is_mod_rs=False)
                    continue
                for cand, is_mod_rs in (
                    (child_dir / f"{name}.rs", False),
                    (child_dir / name / "mod.rs", True),
                ):
                    if cand.exists():
                        mod.children[name] = self.load((*mod.path, name), cand, is_mod_rs)
                        break
        body = list(text[start:end])
        for a, b in inline_spans:
            for k in range(a - start, b - start + 1):
                if text[start + k] != "\n":
                    body[k] = " "
        own = "".join(body)
        for rng in depth_zero_ranges(own, 0, len(own)):
            chunk = own[rng[0] : rng[1]]
            for m in _ITEM.finditer(chunk):
                mod.items.add(m.group("name"))
            for m in _MACRO.finditer(chunk):
                mod.items.add(m.group("name"))
        use_spans = [(m.start(), m.end()) for m in _USE.finditer(own)]
        code = list(own)
        for a, b in use_spans:
            for k in range(a, b):
                if code[k] != "\n":
                    code[k] = " "
        identifiers = set(re.findall(r"\b[A-Za-z_]\w*\b", "".join(code)))
        for m in _USE.finditer(own):
            is_pub = bool(m.group("pub"))
            for segs, alias in expand_use_tree_spaced(m.group("tree")):
                if not segs:
                    continue
                if segs[0] in mod.children:
                    segs = ("self", *segs)
                if segs[0] not in ("crate", "super", "self"):
                    continue  # std or another crate
                local = alias or (segs[-1] if segs[-1] != "self" else segs[-2])
                if is_pub:
                    if segs[-1] == "*":
                        mod.glob_reexports.append(segs[:-1])
                        continue
                    mod.reexports[local] = segs
                    # A facade's re-export is no edge; using the name here is.
                    if local not in identifiers:
                        continue
                mod.uses.append(segs)
        for m in _INLINE_PATH.finditer(own):
            if any(a <= m.start() < b for a, b in use_spans):
                continue
            segs = tuple(s.strip() for s in m.group("path").split("::"))
            mod.uses.append(segs)

    def raw(self, file: Path, a: int, b: int) -> str:
        return file.read_text()[a:b]

    def module(self, path: tuple[str, ...]) -> RustModule | None:
        mod = self.root
        for seg in path[1:]:
            mod = mod.children.get(seg)
            if mod is None:
                return None
        return mod

    def absolute(self, base: tuple[str, ...], segs: tuple[str, ...]) -> tuple[str, ...] | None:
        if not segs:
            return None
        if segs[0] == "crate":
            return segs
        path = list(base)
        i = 0
        while i < len(segs) and segs[i] in ("super", "self"):
            if segs[i] == "super":
                if len(path) <= 1:
                    return None
                path.pop()
            i += 1
        if i == 0:
            # A path starting at a child module of `base` (`pub use child::X`).
            mod = self.module(tuple(base))
            if mod is None or segs[0] not in mod.children:
                return None
        return tuple(path) + segs[i:]

    def resolve(
        self, path: tuple[str, ...], seen: frozenset[tuple[str, ...]] = frozenset()
    ) -> RustModule | None:
        """The module that defines what `path` (absolute) names."""
        if path in seen:
            return None
        seen = seen | {path}
        mod = self.root
        i = 1
        while i < len(path) and path[i] in mod.children:
            mod = mod.children[path[i]]
            i += 1
        if i == len(path) or path[i] == "*":
            return mod
        name = path[i]
        if name in mod.items:
            return mod
        if name in mod.reexports:
            target = self.absolute(mod.path, mod.reexports[name])
            if target:
                found = self.resolve(target + path[i + 1 :], seen)
                if found:
                    return found
        for glob in mod.glob_reexports:
            base = self.absolute(mod.path, glob)
            if base:
                found = self.resolve(base + path[i:], seen)
                if found is not None and found is not self.module(base):
                    return found
        return mod

    def modules(self) -> Iterable[RustModule]:
        todo = [self.root]
        while todo:
            m = todo.pop()
            yield m
            todo.extend(m.children.values())

    def label(self, mod: RustModule) -> str:
        label = str(mod.file.relative_to(self.repo))
        self.tops[label] = mod.path[1] if len(mod.path) > 1 else "crate"
        return label

    def file_edges(self) -> dict[str, set[str]]:
        edges: dict[str, set[str]] = {}
        for mod in self.modules():
            a = self.label(mod)
            edges.setdefault(a, set())
            for segs in mod.uses:
                if segs[0] not in ("crate", "super", "self"):
                    continue
                absolute = self.absolute(mod.path, segs)
                if absolute is None:
                    continue
                target = self.resolve(absolute)
                if target is None:
                    continue
                b = self.label(target)
                # A parent module owns its children: its uses of them are
                # composition, not a dependency that could form a layer.
                owner = file_module(mod).path
                if a != b and target.path[: len(owner)] != owner:
                    edges[a].add(b)
        return edges
