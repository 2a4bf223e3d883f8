#!/usr/bin/env python3
"""Static checks of the Terraform under a directory (default: terraform/), without providers or a cloud.

Every directory holding .tf files is a module. Each file must parse (python-hcl2), and inside each
module every reference must resolve:

  var.X                      a declared variable "X"
  local.X                    a local X in some locals block
  module.X(.Y)               a module block X (and, for a local module, an output Y of it)
  data.T.N                   a data "T" "N" block
  T.N (T a resource type)    a resource "T" "N" block
  templatefile(path, {...})  the template exists; every name it interpolates is passed, every key passed is used
  file(path)                 the file exists

Modules under modules/ document every variable and output in a table row of their README.md.

For module blocks with a local source, every argument must be a variable of the called module and
every variable of that module without a default must be given.

Exit status 0 when everything resolves, 1 with one line per problem otherwise (2 on usage errors).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import hcl2
except ImportError:  # pragma: no cover - the script installs it
    print("check_terraform: python-hcl2 is not installed (pip install python-hcl2)", file=sys.stderr)
    sys.exit(2)

META_MODULE_ARGS = {"source", "version", "providers", "depends_on", "count", "for_each"}
IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
# References are never preceded by a word character, a dot (attribute access) or a hyphen.
NOT_AFTER = r"(?<![\w.\-])"
RE_VAR = re.compile(NOT_AFTER + r"var\.(" + IDENT + ")")
RE_LOCAL = re.compile(NOT_AFTER + r"local\.(" + IDENT + ")")
RE_MODULE = re.compile(NOT_AFTER + r"module\.(" + IDENT + r")(?:\[[^\]]*\])?(?:\.(" + IDENT + "))?")
RE_DATA = re.compile(NOT_AFTER + r"data\.([a-z][a-z0-9_]*)\.(" + IDENT + ")")
RE_FOR_VARS = re.compile(r"\bfor\s+(" + IDENT + r")(?:\s*,\s*(" + IDENT + r"))?\s+in\b")


@dataclass
class Module:
    path: Path
    variables: dict[str, dict] = field(default_factory=dict)  # name -> block body
    locals: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)
    resources: set[str] = field(default_factory=set)  # "type.name"
    data: set[str] = field(default_factory=set)  # "type.name"
    modules: dict[str, dict] = field(default_factory=dict)  # name -> block body
    providers: set[str] = field(default_factory=set)
    iterators: set[str] = field(default_factory=set)  # dynamic block labels / iterator names
    # (file, context, expression string) for every expression in the module
    expressions: list[tuple[Path, str, str]] = field(default_factory=list)
    raw: dict[Path, str] = field(default_factory=dict)


class Checker:
    def __init__(self, root: Path):
        self.root = root
        self.problems: list[str] = []
        self.modules: dict[Path, Module] = {}

    def rel(self, p: Path) -> str:
        try:
            return str(p.resolve().relative_to(self.root.resolve().parent))
        except ValueError:
            return str(p)

    def problem(self, where: Path, message: str) -> None:
        self.problems.append(f"{self.rel(where)}: {message}")

    # --- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        dirs = sorted({p.parent for p in self.root.rglob("*.tf") if ".terraform" not in p.parts})
        if not dirs:
            self.problem(self.root, "no .tf files found")
        for d in dirs:
            self.modules[d.resolve()] = self.load_module(d)

    def load_module(self, d: Path) -> Module:
        m = Module(path=d)
        for f in sorted(d.glob("*.tf")):
            text = f.read_text()
            m.raw[f] = text
            try:
                doc = hcl2.loads(text)
            except Exception as e:  # python-hcl2 raises lark errors of several kinds
                self.problem(f, f"does not parse: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            self.index_file(m, f, doc)
        return m

    def index_file(self, m: Module, f: Path, doc: dict) -> None:
        for block in doc.get("variable", []):
            for name, body in block.items():
                if name in m.variables:
                    self.problem(f, f'variable "{name}" is declared twice')
                m.variables[name] = body
                self.collect(m, f, f'variable "{name}"', body)
        for block in doc.get("locals", []):
            for name, value in block.items():
                if name.startswith("__"):
                    continue
                if name in m.locals:
                    self.problem(f, f"local {name} is declared twice")
                m.locals.add(name)
                self.collect(m, f, f"local {name}", value)
        for block in doc.get("output", []):
            for name, body in block.items():
                m.outputs.add(name)
                self.collect(m, f, f'output "{name}"', body)
        for kind, target in (("resource", m.resources), ("data", m.data)):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        key = f"{rtype}.{rname}"
                        if key in target:
                            self.problem(f, f"{kind} {key} is declared twice")
                        target.add(key)
                        prefix = "data." if kind == "data" else ""
                        self.collect(m, f, f"{kind} {prefix}{key}", body)
        for block in doc.get("module", []):
            for name, body in block.items():
                m.modules[name] = body
                self.collect(m, f, f'module "{name}"', body)
        for block in doc.get("terraform", []):
            for rp in block.get("required_providers", []):
                for pname in rp:
                    if not pname.startswith("__"):
                        m.providers.add(pname)
        for block in doc.get("provider", []):
            self.collect(m, f, "provider", block)

    def collect(self, m: Module, f: Path, context: str, node) -> None:
        """Record every expression string under node, and the names of dynamic-block iterators."""
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "dynamic" and isinstance(v, list):
                    for dyn in v:
                        for label, body in dyn.items():
                            m.iterators.add(label)
                            for content in body if isinstance(body, list) else [body]:
                                if isinstance(content, dict) and "iterator" in content:
                                    m.iterators.add(str(first(content["iterator"])).strip("${}"))
                self.collect(m, f, context, v)
        elif isinstance(node, list):
            for v in node:
                self.collect(m, f, context, v)
        elif isinstance(node, str) and "${" in node:
            m.expressions.append((f, context, node))

    # --- checks ------------------------------------------------------------------------------

    def all_providers(self) -> set[str]:
        names = {"aws"}
        for m in self.modules.values():
            names |= m.providers
        return names

    def check(self) -> None:
        providers = self.all_providers()
        re_resource = re.compile(
            NOT_AFTER + r"((?:" + "|".join(sorted(map(re.escape, providers))) + r")_[a-z0-9_]+)\.(" + IDENT + ")"
        )
        for m in self.modules.values():
            for f, context, expr in m.expressions:
                self.check_expression(m, f, context, expr, re_resource)
            self.check_module_calls(m)
            self.check_files(m)
            self.check_readme(m)

    def check_expression(self, m: Module, f: Path, context: str, expr: str, re_resource) -> None:
        where = f"{context} references"
        for name in RE_VAR.findall(expr):
            if name not in m.variables:
                self.problem(f, f"{where} var.{name}, which is not a declared variable of {self.rel(m.path)}")
        for name in RE_LOCAL.findall(expr):
            if name not in m.locals:
                self.problem(f, f"{where} local.{name}, which no locals block of {self.rel(m.path)} defines")
        for name, attr in RE_MODULE.findall(expr):
            if name not in m.modules:
                self.problem(f, f"{where} module.{name}, which is not a module block of {self.rel(m.path)}")
                continue
            called = self.called_module(m, name)
            if called is not None and attr and attr not in called.outputs:
                self.problem(f, f"{where} module.{name}.{attr}, but {self.rel(called.path)} has no output \"{attr}\"")
        for rtype, rname in RE_DATA.findall(expr):
            if f"{rtype}.{rname}" not in m.data:
                self.problem(f, f"{where} data.{rtype}.{rname}, which is not a data block of {self.rel(m.path)}")
        bound = set(m.iterators)
        for a, b in RE_FOR_VARS.findall(expr):
            bound.update(x for x in (a, b) if x)
        for rtype, rname in re_resource.findall(expr):
            if rtype in bound:
                continue
            # `data.aws_x.y` is matched by RE_DATA; skip the resource-looking tail.
            if re.search(r"data\." + re.escape(rtype) + r"\." + re.escape(rname), expr):
                continue
            if f"{rtype}.{rname}" not in m.resources:
                self.problem(f, f"{where} {rtype}.{rname}, which is not a resource of {self.rel(m.path)}")

    def called_module(self, m: Module, name: str) -> Module | None:
        source = first(m.modules[name].get("source"))
        if not isinstance(source, str) or not source.startswith(("./", "../")):
            return None
        return self.modules.get((m.path / source).resolve())

    def check_module_calls(self, m: Module) -> None:
        for name, body in m.modules.items():
            source = first(body.get("source"))
            where = next((f for f, t in m.raw.items() if re.search(r'module\s+"' + re.escape(name) + '"', t)), m.path)
            if not isinstance(source, str):
                self.problem(where, f'module "{name}" has no source')
                continue
            if not source.startswith(("./", "../")):
                continue
            called = self.modules.get((m.path / source).resolve())
            if called is None:
                self.problem(where, f'module "{name}" calls {source}, which holds no .tf files')
                continue
            given = {k for k in body if not k.startswith("__") and k not in META_MODULE_ARGS}
            for arg in sorted(given - set(called.variables)):
                self.problem(where, f'module "{name}" passes {arg}, which is not a variable of {self.rel(called.path)}')
            required = {v for v, b in called.variables.items() if "default" not in b}
            for arg in sorted(required - given):
                self.problem(where, f'module "{name}" does not pass {arg}, a variable of {self.rel(called.path)} without a default')

    def check_files(self, m: Module) -> None:
        for f, text in m.raw.items():
            for call in re.finditer(r'\b(templatefile|file)\(\s*"([^"]+)"', text):
                fn, raw_path = call.group(1), call.group(2)
                path = Path(raw_path.replace("${path.module}", str(m.path)))
                if not path.is_file():
                    self.problem(f, f'{fn}("{raw_path}") names a file that does not exist')
                    continue
                if fn == "templatefile":
                    keys = template_keys(text, call.end())
                    if keys is None:
                        self.problem(f, f'templatefile("{raw_path}") is not called with an object literal')
                        continue
                    used = template_names(path.read_text())
                    for name in sorted(used - keys):
                        self.problem(f, f"template {self.rel(path)} interpolates {name}, which the templatefile call does not pass")
                    for name in sorted(keys - used):
                        self.problem(f, f"templatefile call passes {name}, which template {self.rel(path)} never uses")


    def check_readme(self, m: Module) -> None:
        """A module under modules/ documents every variable and output in a table row of README.md."""
        if "modules" not in m.path.parts:
            return
        readme = m.path / "README.md"
        if not readme.is_file():
            self.problem(m.path, "has no README.md")
            return
        rows = {r.group(1) for r in re.finditer(r"^\|\s*`([A-Za-z0-9_]+)`\s*\|", readme.read_text(), flags=re.M)}
        for kind, names in (("variable", m.variables), ("output", m.outputs)):
            for name in sorted(set(names) - rows):
                self.problem(readme, f'{kind} "{name}" is not documented (no table row starting with `{name}`)')


def first(v):
    return v[0] if isinstance(v, list) and v else v


def template_keys(text: str, start: int) -> set[str] | None:
    """Top-level keys of the object literal that follows position `start` (after the path)."""
    i = text.find("{", start)
    if i < 0 or text[start:i].strip() != ",":
        return None
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
            if depth == 0:
                break
        j += 1
    body = text[i + 1 : j]
    keys, depth = set(), 0
    for line in body.splitlines():
        if depth == 0:
            match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)", line)
            if match:
                keys.add(match.group(1))
        depth += sum(line.count(c) for c in "{[(") - sum(line.count(c) for c in "}])")
    return keys


def template_names(text: str) -> set[str]:
    """Names a Terraform template reads: identifiers inside ${...} and %{...} that are not function
    calls, attributes or the template's own for-loop variables. $${ is an escaped literal."""
    names: set[str] = set()
    loop_vars: set[str] = set()
    for match in re.finditer(r"(?<!\$)[$%]\{(.*?)\}", text, flags=re.S):
        expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', match.group(1))
        for a, b in RE_FOR_VARS.findall(expr):
            loop_vars.update(x for x in (a, b) if x)
        for ident in re.finditer(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()", expr):
            word = ident.group(1)
            if word in {"for", "in", "if", "else", "endif", "endfor", "true", "false", "null"}:
                continue
            names.add(word)
    return names - loop_vars


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="terraform", help="directory to check (default: terraform)")
    args = parser.parse_args()
    root = Path(args.root)
    if not root.is_dir():
        print(f"check_terraform: {root} is not a directory", file=sys.stderr)
        return 2
    checker = Checker(root)
    checker.load()
    checker.check()
    n_files = sum(len(m.raw) for m in checker.modules.values())
    n_refs = sum(len(m.expressions) for m in checker.modules.values())
    if checker.problems:
        for p in checker.problems:
            print(f"check_terraform: {p}", file=sys.stderr)
        print(f"check_terraform: {len(checker.problems)} problem(s) in {n_files} files", file=sys.stderr)
        return 1
    print(f"check_terraform: {len(checker.modules)} modules, {n_files} files, {n_refs} expressions: every reference resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
