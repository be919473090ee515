"""Timing of the gateway key check: does ``keys_match`` take longer when more of the key is right?

``picgate.deps.keys_match`` hashes both sides with SHA-256 and compares the digests with
``hmac.compare_digest``, so the work depends on neither where the first wrong byte is nor the
expected key's length. This prints the median time per call for guesses that are wrong at the
first byte, wrong at the last byte, right, and of other lengths, interleaved in random order, next
to a plain ``==`` as a control (whose early exit shows up with long keys). It is a printout, not a
test: timings on a shared machine are noisy, and only differences far above the noise matter.

    .venv/bin/python -m bench.key_timing [--rounds 200000] [--key-length 4096]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from picgate.deps import keys_match


def plain_equal(given: str, expected: str) -> bool:
    return given == expected


def measure(
    compare: Callable[[str, str], bool], guesses: dict[str, str], expected: str, rounds: int
) -> dict[str, float]:
    samples: dict[str, list[int]] = {name: [] for name in guesses}
    order = list(guesses) * rounds
    random.shuffle(order)
    clock = time.perf_counter_ns
    for name in order:
        given = guesses[name]
        start = clock()
        compare(given, expected)
        samples[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200_000)
    parser.add_argument("--key-length", type=int, default=4096)
    args = parser.parse_args()
    expected = "k" * args.key_length
    guesses = {
        "wrong first byte": "x" + expected[1:],
        "wrong last byte": expected[:-1] + "x",
        "right key": expected,
        "one byte": "k",
        "twice as long": expected * 2,
    }
    print(f"key length {args.key_length}, {args.rounds} calls per guess, median ns per call")
    for label, compare in (("keys_match", keys_match), ("plain ==", plain_equal)):
        medians = measure(compare, guesses, expected, args.rounds)
        base = medians["wrong first byte"]
        print(f"\n{label}")
        for name, value in medians.items():
            print(f"  {name:<18} {value:>8.0f} ns   ({value / base:5.2f}x wrong-first-byte)")


if __name__ == "__main__":
    main()
