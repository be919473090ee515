"""Every Chinese log template in PicGate's code has an English twin, and composed lines come
out whole in English with their values kept."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from picgate.admin.log_lines import PHRASES, in_language

PACKAGE = Path(__file__).resolve().parents[2] / "picgate"
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
# a template has Chinese words; a literal of full-width punctuation alone is a joiner (which
# in_language turns into ASCII) or a character set for strip(), not a line to translate
WORDS = re.compile(r"[\u4e00-\u9fff]")


def chinese_templates() -> list[tuple[str, str]]:
    """(where, template) for every string literal with Chinese text in the package's code
    (f-string values as ``{}``), docstrings left out."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        inside_fstrings = {
            id(part)
            for node in ast.walk(tree)
            if isinstance(node, ast.JoinedStr)
            for part in node.values
        }
        for node in ast.walk(tree):
            if id(node) in docstrings or id(node) in inside_fstrings:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr):
                text = "".join(
                    str(p.value) if isinstance(p, ast.Constant) else "{}" for p in node.values
                )
            else:
                continue
            if WORDS.search(text) and path.name != "log_lines.py":
                found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", text))
    return found


TEMPLATES = chinese_templates()


def test_chinese_templates_found_in_the_code() -> None:
    assert len(TEMPLATES) > 40


@pytest.mark.parametrize("where,template", TEMPLATES, ids=[w for w, _ in TEMPLATES])
def test_log_template_english_has_no_chinese_and_keeps_values(where: str, template: str) -> None:
    values = iter(f"V{n}x" for n in range(10))
    line = re.sub(r"\{\}", lambda _: next(values), template)
    english = in_language(line, "en")
    assert not CJK.search(english), f"{where}: no English for {template!r} (add it to PHRASES)"
    for n in range(template.count("{}")):
        assert f"V{n}x" in english


def test_log_line_chinese_console_unchanged() -> None:
    line = "🧹 定时清理完成: 上传 3 张（失败 1），释放 1.2 MB，删除记录 4 条"
    assert in_language(line, "zh") == line


def test_log_line_composed_cleanup_summary_in_order() -> None:
    line = (
        "🧹 定时清理完成: 上传 3 张（失败 1），过期删除 2 张，释放 1.2 MB，删除记录 4 条，修复 2 处"
    )
    assert in_language(line, "en") == (
        "🧹 Scheduled cleanup done: 3 uploaded (1 failed), 2 expired, 1.2 MB freed, "
        "4 rows deleted, 2 repaired"
    )


def test_log_line_upstream_text_kept_as_is() -> None:
    line = "❌ 上游返回错误: HTTP 429: Rate limit reached, retry in 20s (tier 1)"
    assert in_language(line, "en") == (
        "❌ Upstream error: HTTP 429: Rate limit reached, retry in 20s (tier 1)"
    )


def test_log_line_unknown_text_unchanged() -> None:
    assert in_language("written by an older version", "en") == "written by an older version"


def test_phrases_unique() -> None:
    assert len({zh for zh, _ in PHRASES}) == len(PHRASES)
