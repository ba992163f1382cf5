#!/usr/bin/env python3
"""Runs SQL steps on current ClickHouse, in process, through chdb (PyPI `chdb`).

Used by the tests that check livefunnel's SQL on current ClickHouse releases
(livefunnel-testkit's `chdb` module); also handy by hand:

    echo '[{"query": "SELECT 1 AS one"}]' | python3 scripts/chdb-run.py

Input (stdin): a JSON list of steps, run in order in one chdb session whose data
lives in a temporary directory removed at exit:

    {"sql": "..."}                     a statement answering nothing (DDL, DML)
    {"query": "..."}                   rows as JSON objects (JSONEachRow)
    {"query": "...", "format": "F"}    the answer in format F (e.g. RowBinary), hex
    {"insert_rowbinary": {"table": "db.t", "file": "/abs/path"}}
                                       loads a RowBinary file into every column of
                                       the table, in the order DESCRIBE TABLE gives

Output (stdout), one JSON object a line: first a header
{"chdb": "4.4.0", "version": "26.9.2.1"} (`SELECT version()`), then one result per
step, in order: {"ok": true} for statements, {"ok": true, "rows": [...]} for
queries, {"ok": true, "hex": "..."} for other formats,
{"ok": true, "columns": [...]} for inserts, or {"ok": false, "error": "..."}.
A failing step does not stop the run. Exit status 2 when the input is unusable.

With `--lines`, steps come one JSON object a line instead, and each result is
printed (and flushed) as soon as its step ran, so a caller can decide its next step
from the answer (livefunnel's migrations run this way); the run ends with stdin.

Only chdb and the standard library are needed: `pip install chdb==4.4.0`.
"""

import json
import os
import sys
import tempfile

# Anything chdb's engine prints must not get mixed into the answers: results go to a
# private copy of stdout, and file descriptor 1 is pointed at stderr.
_OUT = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr

import chdb  # noqa: E402  (after the redirection, on purpose)
from chdb import session  # noqa: E402


def emit(obj):
    _OUT.write(json.dumps(obj, ensure_ascii=False))
    _OUT.write("\n")
    _OUT.flush()


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(text):
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def qualified(table):
    """`db.t` or `t` as back-quoted identifiers."""
    return ".".join(quote_ident(part) for part in table.split(".", 1))


def json_rows(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def insert_rowbinary(sess, spec):
    table, path = spec["table"], spec["file"]
    if not os.path.isabs(path):
        raise ValueError(f"insert_rowbinary needs an absolute file path, got {path!r}")
    described = json_rows(sess.query(f"DESCRIBE TABLE {qualified(table)}", "JSONEachRow").bytes().decode())
    # Columns the server computes itself cannot be inserted.
    columns = [c["name"] for c in described if c.get("default_type") not in ("MATERIALIZED", "ALIAS", "EPHEMERAL")]
    names = ", ".join(quote_ident(c) for c in columns)
    sess.query(f"INSERT INTO {qualified(table)} ({names}) FROM INFILE {quote_string(path)} FORMAT RowBinary")
    return {"ok": True, "columns": columns}


def run_step(sess, step):
    if not isinstance(step, dict):
        raise ValueError(f"a step is a JSON object, got {step!r}")
    if "sql" in step:
        sess.query(step["sql"])
        return {"ok": True}
    if "query" in step:
        fmt = step.get("format", "JSONEachRow")
        answer = sess.query(step["query"], fmt).bytes()
        if fmt == "JSONEachRow":
            return {"ok": True, "rows": json_rows(answer.decode())}
        return {"ok": True, "hex": answer.hex()}
    if "insert_rowbinary" in step:
        return insert_rowbinary(sess, step["insert_rowbinary"])
    raise ValueError(f"unknown step {sorted(step)}: expected sql, query or insert_rowbinary")


def line_steps():
    """Steps read one a line, as they come; a line that is not JSON is reported as a failed step."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as e:
            yield ValueError(f"step is not JSON: {e}")


def main():
    if "--lines" in sys.argv[1:]:
        steps = line_steps()
    else:
        try:
            steps = json.load(sys.stdin)
        except ValueError as e:
            print(f"chdb-run: stdin is not JSON: {e}", file=sys.stderr)
            return 2
        if not isinstance(steps, list):
            print("chdb-run: stdin must be a JSON list of steps", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="livefunnel-chdb-") as tmp:
        sess = session.Session(os.path.join(tmp, "db"))
        try:
            version = json_rows(sess.query("SELECT version() AS v", "JSONEachRow").bytes().decode())[0]["v"]
            emit({"chdb": getattr(chdb, "__version__", "unknown"), "version": version})
            for step in steps:
                try:
                    if isinstance(step, Exception):
                        raise step
                    result = run_step(sess, step)
                except Exception as e:  # noqa: BLE001  (every failure is reported, then the next step runs)
                    result = {"ok": False, "error": str(e).strip() or type(e).__name__}
                emit(result)
        finally:
            sess.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
