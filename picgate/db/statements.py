"""What a SQL statement does, read from its text: the words the Hrana driver
(``picgate.db.hrana``) decides by whether a statement opens a transaction, ends one, or only
reads.

Space, comments and quoted text are looked past, so ``/* note */ INSERT`` is an insert and
``SELECT 'DELETE'`` is not a delete; a ``WITH`` clause is looked past to the statement it
prefixes. Pure functions over strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(\w+)", re.S)
# one SQL token per match: space, comments and quoted text/names are skipped whole (a keyword
# inside them is no keyword); group 1 is a bare word, group 2 a quoted name, group 3 any other
# character (parentheses set the depth); an unterminated quote or comment runs to the end
_TOKEN = re.compile(
    r"""\s+|--[^\n]*|/\*.*?(?:\*/|\Z)|'(?:[^']|'')*'?|(\w+)"""
    r"""|("(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)|(.)""",
    re.S,
)
OPENS_TRANSACTION = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
READS = frozenset({"SELECT", "VALUES", "EXPLAIN", "PRAGMA"})
_MAIN_VERBS = OPENS_TRANSACTION | {"SELECT", "VALUES"}


def first_word(sql: str) -> str:
    """The statement's first keyword, upper case, past space and comments ("" when none)."""
    match = _FIRST_WORD.match(sql)
    return match.group(1).upper() if match else ""


def words(sql: str) -> Iterator[tuple[str, int]]:
    """Each bare word (upper case) or quoted name (as written) of ``sql`` with its depth in
    parentheses; comments and string literals are skipped."""
    depth = 0
    for match in _TOKEN.finditer(sql):
        word, quoted, other = match.groups()
        if word is not None or quoted is not None:
            yield (word.upper() if word is not None else quoted), depth
        elif other == "(":
            depth += 1
        elif other == ")":
            depth = max(0, depth - 1)


def verb(sql: str) -> str:
    """What the statement does: its first word, except that a ``WITH`` clause is looked past
    to the statement it prefixes (``WITH t AS (SELECT ...) INSERT ...`` is an ``INSERT``)."""
    word = first_word(sql)
    if word != "WITH":
        return word
    for name, depth in words(sql):
        if depth == 0 and name in _MAIN_VERBS:
            return name
    return word


def savepoint_name(sql: str) -> str:
    """The savepoint a ``SAVEPOINT``, ``RELEASE`` or ``ROLLBACK ... TO`` statement names
    (upper case unless quoted), or "" for a plain ``ROLLBACK``."""
    names = [name for name, _ in words(sql)]
    keywords = {"SAVEPOINT", "RELEASE", "ROLLBACK", "TRANSACTION", "TO"}
    if names[:1] == ["ROLLBACK"] and "TO" not in names[1:3]:
        return ""
    rest = [name for name in names if name not in keywords]
    if not rest:
        return ""
    name = rest[0]
    return name[1:-1].upper() if name[:1] in '"`[' else name
