"""Run every benchmark and print its figures: ``python -m bench`` (``make bench``).

Each speed figure is printed beside its limit, measured in this one run (OK or MISSED).
"""

from bench import bootstrap_metrics, e2e_step, inference, mil_memory, segmentation, tiling


def main() -> None:
    print("== tiling per slide, end to end, vs the decode-once-plus-encode limit ==", flush=True)
    tiling.main([])
    print("\n== segmentation view resolution: CPU time vs accuracy ==", flush=True)
    segmentation.main([])
    print("\n== ABMILX inference on a 50,000 x 1024 bag (CPU) ==", flush=True)
    mil_memory.main([])
    print("\n== E2E training step: full data path vs pure model ==", flush=True)
    e2e_step.main([])
    print("\n== feature extraction and whole-slide inference vs pure encoder ==", flush=True)
    inference.main([])
    print("\n== bootstrap of every metric, 1000 resamples of 2,000 cases ==", flush=True)
    bootstrap_metrics.main([])


if __name__ == "__main__":
    main()
