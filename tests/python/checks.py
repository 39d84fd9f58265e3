"""What the SDK interop scripts share: counted checks, a result's text, and main."""

import asyncio
import sys
import traceback

passed = 0


def check(name, ok, detail=""):
    """Record one check; raise AssertionError naming it when it fails."""
    global passed
    if not ok:
        raise AssertionError(f"{name}: {detail}")
    passed += 1


def text_of(result):
    return "\n".join(getattr(block, "text", "") for block in result.content)


def run_main(label, coroutine):
    """Run the script's checks; print `label: N passed, F failed`; return the exit code."""
    try:
        asyncio.run(coroutine)
    except BaseException as e:
        # anyio task groups may wrap the failure in an ExceptionGroup: report the leaf.
        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        if isinstance(e, AssertionError):
            print(f"FAILED check {e}")
        else:
            print(f"FAILED after {passed} passed checks: unexpected error {e!r} (traceback on stderr)")
            traceback.print_exception(e, file=sys.stderr)
        print(f"{label}: {passed} passed, 1 failed")
        return 1
    print(f"{label}: {passed} passed, 0 failed")
    return 0
