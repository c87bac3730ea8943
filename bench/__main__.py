"""Run every benchmark and print its figures: ``python -m bench`` (``make bench``)."""

from bench import mil_memory, tiling


def main() -> None:
    print("== tiling per slide, end to end, vs the decode-once-plus-encode limit ==", flush=True)
    tiling.main([])
    print("\n== ABMILX inference on a 50,000 x 1024 bag (CPU) ==", flush=True)
    mil_memory.main([])


if __name__ == "__main__":
    main()
