"""infra/terraform/firestore.rules, checked offline.

What these tests cannot do: execute the rules. No rules emulator runs in this test
environment, so nothing here proves that Firestore allows or denies a given request; Firebase
compiles the ruleset when Terraform creates it (syntax and types) and only a deployed project or
the Firebase emulator with @firebase/rules-unit-testing evaluates it. What is checked: the file's
shape (balanced blocks, closed strings, version 2, the cloud.firestore service), that no rule
grants a write of any kind, that every `allow` is a read under one of the few conditions this
file defines (and what those functions compare), and that the match blocks name exactly the
collections the code writes, each with the access decided for it below.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re
from functools import cache

import pytest

from shared.models.jobs import Job
from shared.models.manifests import Manifest
from shared.models.projects import Project

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "terraform" / "firestore.rules"
# Every package that talks to Firestore at run time.
CODE_DIRS = ("shared", "functions", "model_service")

OWNER = "ownedBy(resource.data)"
DENY = "false"

# Path under /databases/{database}/documents -> the one `allow read` condition it has. This is
# the decision the rules implement; a collection added to the code fails
# test_every_collection_the_code_writes_has_a_match_block until it is decided here and there.
EXPECTED: dict[str, str] = {
    "/manifests/{manifestId}": OWNER,
    "/manifests/{manifestId}/assets/{assetId}": "ownsManifest(manifestId)",
    "/manifests/{manifestId}/revisions/{revision}": DENY,
    "/manifests/{manifestId}/bills/{jobId}": DENY,
    "/jobs/{jobId}": OWNER,
    "/jobs/{jobId}/attempts/{attempt}": DENY,
    "/jobs/{jobId}/requeues/{requeue}": DENY,
    "/projects/{projectId}": OWNER,
    "/projects/{projectId}/scenes/{sceneIndex}": "ownsProject(projectId)",
    "/projects/{projectId}/checkpoints/{checkpointId}": "ownsProject(projectId)",
    "/projects/{projectId}/drafts/{checkpointId}": DENY,
    "/projects/{projectId}/artifacts/{artifactId}": DENY,
    "/projects/{projectId}/spend/{digest}": DENY,
    "/projects/{projectId}/revisions/{revision}": DENY,
    "/manifest_snapshots/{snapshotId}": DENY,
    "/manifest_snapshots/{snapshotId}/assets/{assetId}": DENY,
    # The artifact index: denied, see the comment in firestore.rules.
    "/owners/{ownerId}": DENY,
    "/owners/{ownerId}/artifacts/{digest}": DENY,
    "/bad_tasks/{taskId}": DENY,
}


# --- a small parser of the rules language's block structure --------------------------------


@dataclasses.dataclass
class Block:
    kind: str  # "match", "function", "service"
    head: str  # the path, the signature or the service name
    body: list[Block | Statement]


@dataclasses.dataclass
class Statement:
    text: str


def _strip_comments(source: str) -> str:
    """Removes // and /* */ comments, leaving string literals (either quote) intact."""
    out: list[str] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char in "'\"":
            end = i + 1
            while end < len(source) and source[end] != char:
                assert source[end] != "\n", f"unclosed string at offset {i}"
                end += 2 if source[end] == "\\" else 1
            assert end < len(source), f"unclosed string at offset {i}"
            out.append(source[i : end + 1])
            i = end + 1
        elif source.startswith("//", i):
            i = source.find("\n", i)
            i = len(source) if i < 0 else i
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            assert end >= 0, f"unclosed comment at offset {i}"
            i = end + 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _parse_body(text: str, pos: int, closing: bool) -> tuple[list[Block | Statement], int]:
    """Items up to the matching '}' (or the end of the text at top level)."""
    items: list[Block | Statement] = []
    start = pos
    depth = 0  # parentheses, brackets: a ';' or '{' inside them belongs to an expression
    while pos < len(text):
        char = text[pos]
        if char in "'\"":
            pos = text.index(char, pos + 1) + 1
            continue
        if char == "{" and text[pos - 1] == "/":
            # A path wildcard, /{name} or /{name=**}, not a block.
            pos = text.index("}", pos) + 1
            continue
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
            assert depth >= 0, f"unbalanced {char!r} at offset {pos}"
        elif depth == 0 and char == ";":
            statement = " ".join(text[start:pos].split())
            assert statement, f"empty statement at offset {pos}"
            items.append(Statement(statement))
            start = pos + 1
        elif depth == 0 and char == "{":
            head = " ".join(text[start:pos].split())
            kind, _, rest = head.partition(" ")
            assert kind in {"service", "match", "function"}, f"unexpected block {head!r}"
            body, pos = _parse_body(text, pos + 1, closing=True)
            items.append(Block(kind, rest, body))
            start = pos
            continue
        elif depth == 0 and char == "}":
            assert closing, f"unbalanced '}}' at offset {pos}"
            assert not text[start:pos].strip(), f"unterminated statement {text[start:pos]!r}"
            return items, pos + 1
        pos += 1
    assert not closing, "a block is never closed"
    assert depth == 0, "unbalanced parentheses"
    assert not text[start:].strip(), f"trailing text {text[start:]!r}"
    return items, pos


@cache
def _parsed() -> list[Block | Statement]:
    items, _ = _parse_body(_strip_comments(RULES.read_text()), 0, closing=False)
    return items


def _documents_block() -> Block:
    (version, service) = _parsed()
    assert isinstance(version, Statement) and isinstance(service, Block)
    assert version.text == "rules_version = '2'"  # recursive wildcards, collection groups
    assert (service.kind, service.head) == ("service", "cloud.firestore")
    (documents,) = service.body
    assert isinstance(documents, Block)
    assert (documents.kind, documents.head) == ("match", "/databases/{database}/documents")
    return documents


def _functions() -> dict[str, tuple[list[str], str]]:
    """name -> (parameters, the expression it returns)."""
    found: dict[str, tuple[list[str], str]] = {}
    for item in _documents_block().body:
        if isinstance(item, Block) and item.kind == "function":
            match = re.fullmatch(r"(\w+)\(([\w, ]*)\)", item.head)
            assert match, item.head
            (statement,) = item.body
            assert isinstance(statement, Statement) and statement.text.startswith("return ")
            params = [p.strip() for p in match.group(2).split(",") if p.strip()]
            found[match.group(1)] = (params, statement.text.removeprefix("return "))
    return found


def _allows(block: Block | None = None, prefix: str = "") -> dict[str, list[tuple[list[str], str]]]:
    """Full match path -> its `allow` statements as (methods, condition)."""
    block = block or _documents_block()
    found: dict[str, list[tuple[list[str], str]]] = {}
    for item in block.body:
        if isinstance(item, Block) and item.kind == "match":
            assert item.head.startswith("/"), item.head
            path = prefix + item.head
            assert path not in found, f"{path} matched twice"
            found[path] = []
            for inner in item.body:
                if isinstance(inner, Statement):
                    match = re.fullmatch(r"allow ([\w, ]+)(?:: if (.+))?", inner.text)
                    assert match, f"{path}: {inner.text!r}"
                    methods = [m.strip() for m in match.group(1).split(",")]
                    # `allow read;` with no condition would allow everyone.
                    assert match.group(2), f"{path}: {inner.text!r} has no condition"
                    found[path].append((methods, match.group(2)))
            for sub, statements in _allows(item, path).items():
                assert sub not in found, f"{sub} matched twice"
                found[sub] = statements
        elif isinstance(item, Block):
            # Functions live at the top, beside the match blocks, and nowhere else.
            assert item.kind == "function" and prefix == "", f"{prefix}: {item.head}"
        else:
            # A statement directly under a match block was read above; at the top there are none.
            assert prefix != "", f"a statement outside any match block: {item.text!r}"
    return found


# --- the collections the code uses ------------------------------------------------------------


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "literal" assignments."""
    found: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            found[node.targets[0].id] = node.value.value
    return found


@cache
def _modules() -> dict[str, ast.Module]:
    """Dotted module name -> its syntax tree, for every module of CODE_DIRS."""
    found: dict[str, ast.Module] = {}
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def _visible_constants(module: str) -> dict[str, str]:
    """The string constants a module defines or imports by name (from x import NAME)."""
    modules = _modules()
    tree = modules[module]
    visible: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in modules and node.level == 0:
            source = _module_constants(modules[node.module])
            for alias in node.names:
                if alias.name in source:
                    visible[alias.asname or alias.name] = source[alias.name]
    visible.update(_module_constants(tree))
    return visible


@cache
def code_collections() -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """(every collection id passed to .collection() or .collection_group(), the (parent,
    child) pairs written as one chain, db.collection(A).document(x).collection(B))."""
    names: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for module, tree in _modules().items():
        constants = _visible_constants(module)

        def name_of(
            call: ast.Call, module: str = module, constants: dict[str, str] = constants
        ) -> str:
            (arg,) = call.args
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value
            assert isinstance(arg, ast.Name) and arg.id in constants, (
                f"{module}:{call.lineno}: a collection id this test cannot resolve: "
                f"{ast.unparse(arg)}"
            )
            return constants[arg.id]

        for node in ast.walk(tree):
            if not _is_collection(node):
                continue
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            names.add(name_of(node))
            # .collection(B) on .document(x) on .collection(A)
            parent = node.func.value
            if (
                isinstance(parent, ast.Call)
                and isinstance(parent.func, ast.Attribute)
                and parent.func.attr == "document"
                and _is_collection(parent.func.value)
            ):
                outer = parent.func.value
                assert isinstance(outer, ast.Call)
                pairs.add((name_of(outer), name_of(node)))
        # Paths written as strings ("projects/x/scenes") would escape this scan.
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"collection", "collection_group", "document"}
            ):
                for arg in node.args:
                    parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
                    for part in parts:
                        if isinstance(part, ast.Constant) and isinstance(part.value, str):
                            assert "/" not in part.value, (
                                f"{module}:{node.lineno}: a slash path {ast.unparse(arg)}"
                            )
    return frozenset(names), frozenset(pairs)


def _is_collection(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"collection", "collection_group"}
    )


def _collection_ids(path: str) -> list[str]:
    """'/a/{x}/b/{y}' -> ['a', 'b'] (every other segment is a document wildcard)."""
    segments = path.strip("/").split("/")
    assert len(segments) % 2 == 0, f"{path} does not end at a document"
    for collection, document in zip(segments[::2], segments[1::2], strict=True):
        assert re.fullmatch(r"[a-z_]+", collection), path
        assert re.fullmatch(r"\{\w+\}", document), path  # no {doc=**}: it would cover anything
    return segments[::2]


# --- tests ------------------------------------------------------------------------------------


def test_the_file_is_a_version_2_firestore_ruleset_of_balanced_blocks() -> None:
    documents = _documents_block()

    assert documents.body
    assert _allows()


def test_no_rule_grants_a_write_of_any_kind() -> None:
    text = _strip_comments(RULES.read_text())

    assert not re.search(r"\ballow\b[^:;]*\b(write|create|update|delete)\b", text)
    for path, statements in _allows().items():
        for methods, _ in statements:
            assert set(methods) <= {"read", "get", "list"}, (path, methods)


def test_every_match_block_has_exactly_the_access_decided_for_it() -> None:
    found = {
        path: [(methods, condition) for methods, condition in statements]
        for path, statements in _allows().items()
    }

    assert found == {path: [(["read"], condition)] for path, condition in EXPECTED.items()}


def test_every_condition_names_only_the_wildcards_of_its_own_path() -> None:
    for path, condition in EXPECTED.items():
        wildcards = set(re.findall(r"\{(\w+)\}", path))
        call = re.fullmatch(r"(\w+)\(([\w.]*)\)", condition)
        if condition == DENY:
            continue
        assert call, condition
        argument = call.group(2)
        assert argument == "resource.data" or argument in wildcards, (path, condition)


def test_the_ownership_functions_compare_owner_id_with_the_callers_uid() -> None:
    functions = _functions()

    assert set(functions) == {"signedIn", "ownedBy", "ownsManifest", "ownsProject"}
    assert functions["signedIn"] == ([], "request.auth != null")
    assert functions["ownedBy"] == (
        ["data"],
        "signedIn() && data.owner_id == request.auth.uid",
    )
    # The parent's owner, read with get() from the same database.
    assert functions["ownsManifest"] == (
        ["manifestId"],
        "ownedBy(get(/databases/$(database)/documents/manifests/$(manifestId)).data)",
    )
    assert functions["ownsProject"] == (
        ["projectId"],
        "ownedBy(get(/databases/$(database)/documents/projects/$(projectId)).data)",
    )


@pytest.mark.parametrize("model", [Manifest, Job, Project])
def test_the_documents_read_by_owner_carry_owner_id(model: type) -> None:
    assert "owner_id" in model.model_fields, model


def test_every_collection_the_code_writes_has_a_match_block() -> None:
    names, pairs = code_collections()
    covered = {name for path in EXPECTED for name in _collection_ids(path)}
    nested = {(ids[-2], ids[-1]) for path in EXPECTED if len(ids := _collection_ids(path)) >= 2}

    # The scan did find the code's collections (a broken scan would pass vacuously).
    assert {"manifests", "assets", "jobs", "projects", "scenes", "checkpoints"} <= names
    assert names == covered, (
        f"in the code, not the rules: {sorted(names - covered)}; "
        f"in the rules, not the code: {sorted(covered - names)}"
    )
    assert pairs <= nested, sorted(pairs - nested)
