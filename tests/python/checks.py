"""What the SDK interop scripts share: counted checks and a result's text."""

passed = 0


def check(name, ok, detail=""):
    """Record one check; raise AssertionError naming it when it fails."""
    global passed
    if not ok:
        raise AssertionError(f"{name}: {detail}")
    passed += 1


def text_of(result):
    return "\n".join(getattr(block, "text", "") for block in result.content)
