"""Reading a Dockerfile and a .dockerignore the way the Docker builder does, for the subset the
repository uses (no heredocs, no parser directives other than `# syntax`)."""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the logical line, continuations joined
    flags: dict[str, str] = field(default_factory=dict)  # --from=build, --chown=...

    def words(self) -> list[str]:
        """The arguments, from the JSON (exec) form or split like a shell would."""
        rest = self.args
        if rest.startswith("["):
            return json.loads(rest)
        return shlex.split(rest)


def parse_dockerfile(path: Path) -> list[Instruction]:
    lines, logical = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not logical):
            continue  # comments may sit inside a continued instruction too
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        lines.append(logical + stripped)
        logical = ""
    if logical:
        raise ValueError(f"{path}: the last instruction ends with a continuation")
    out = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        flags = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        out.append(Instruction(keyword.upper(), rest, flags))
    return out


def stages(instructions: list[Instruction]) -> dict[str, list[Instruction]]:
    """Instructions by stage name ('' for the global ARGs before the first FROM)."""
    out: dict[str, list[Instruction]] = {"": []}
    current = ""
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.words()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else words[0]
            out[current] = []
        out[current].append(ins)
    return out


def dockerignore_patterns(path: Path) -> list[tuple[bool, str]]:
    """(negated, pattern) in file order, cleaned as the builder cleans them."""
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def _matches(pattern: str, path: str) -> bool:
    """Whether `pattern` matches `path` or one of its parent directories."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(p, pattern[3:]) for p in parts[:i]):
                return True
        elif fnmatch.fnmatchcase(prefix, pattern) and prefix.count("/") == pattern.count("/"):
            return True
    return False


def in_context(patterns: list[tuple[bool, str]], path: str) -> bool:
    """Whether a repository path reaches the build context: the last matching pattern decides."""
    included = True
    for negated, pattern in patterns:
        if _matches(pattern, path):
            included = negated
    return included
