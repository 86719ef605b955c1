"""Every x-gpu-memory value gpumem-compose accepts is read by the library as the same bytes.

A property test across the two parsers: the tool's (compose_gpumem.validate) and the library's
(libinterpose/src/limits.c, through the built library on the stand-in driver).  For each value
the tool accepts, the library, given the text the tool writes into GPUMEM_LIMIT, reports as the
device's total exactly the cap the tool means; values the tool refuses are not run.
"""

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from compose_gpumem.errors import InvalidValue
from compose_gpumem.validate import parse_value

TOTAL = 1 << 62  # large enough that sizes up to 4 EiB are not clamped; a power of two: exact
DIGITS = st.text("0123456789", min_size=1, max_size=22)
UNITS = [
    "b",
    "B",
    "k",
    "K",
    "kb",
    "KiB",
    "m",
    "MiB",
    "mb",
    "g",
    "G",
    "GiB",
    "gB",
    "t",
    "TiB",
    "p",
    "PiB",
    "P",
]

numbers = st.floats(min_value=0, max_value=1, exclude_min=True, allow_nan=False) | st.just(1)
fraction_texts = st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(["0", "00", "1"]), DIGITS)
percents = st.builds(lambda a, b: f"{a}.{b}%" if b else f"{a}%", DIGITS, st.text("0123456789", max_size=12))
sizes = st.builds(
    lambda a, b, u: f"{a}.{b}{u}" if b else f"{a}{u}",
    DIGITS,
    st.text("0123456789", max_size=12),
    st.sampled_from(UNITS),
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=numbers | fraction_texts | percents | sizes)
@example(value=1e-30)
@example(value="24051P")
@example(value="99999999999999999999PiB")
@example(value="0.1234567890123456789")
@example(value="16383.999999999999PiB")
def test_every_value_the_tool_accepts_the_library_reads_as_the_same_bytes(gpu, value):
    try:
        (limit,) = parse_value(value).values()
    except InvalidValue:
        assume(False)
    expected = int(limit.fraction * float(TOTAL)) if limit.fraction is not None else min(limit.size, TOTAL)
    r = gpu.run(
        "init", "dev=0", "totalmem", GPUMEM_LIMIT=limit.text, FAKE_CUDA_TOTAL=TOTAL, GPUMEM_CONTEXT_RESERVE=0
    )
    assert r.rc == 0 and "is not a fraction" not in r.err, (value, limit.text, r)
    assert r.line("totalmem") == f"totalmem {expected}", (value, limit.text)
