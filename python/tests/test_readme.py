"""The README's Python examples run as written (the endpoint swapped for the test's own
`kpl local`), so they stay true."""

import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_examples():
    assert len(EXAMPLES) >= 2


# The `kind` of every PutError: an example that prints a failure prints one of these first.
FAILURE_KINDS = (
    "invalid_record", "buffer_full", "closed", "rejected", "no_credentials", "expired",
    "throttled", "stopped", "spool",
)


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_a_readme_example_runs(code, endpoint, client, read_stream):
    assert "http://127.0.0.1:4567" in code
    if "events" not in client.list_streams()["StreamNames"]:
        client.create_stream(StreamName="events", ShardCount=4)
    before = len(read_stream("events"))
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(
            [sys.executable, "-c", code.replace("http://127.0.0.1:4567", endpoint)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
        )
    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr
    # It did put its records: an example that only reports failures passes whatever happens.
    failures = [l for l in done.stdout.splitlines() if l.startswith(FAILURE_KINDS)]
    assert not failures, done.stdout
    assert len(read_stream("events")) > before, "the example put nothing"
